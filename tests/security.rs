//! TLS, mutual TLS, bearer tokens with scopes, metrics, reflection, JSON
//! logs and graceful shutdown, against a real coordinator process (and a
//! real worker) on loopback. Certificates are made here with rcgen.

mod common;
use common::cluster::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WORKER: &str = "worker-token-0123456789abcdef";
const SUBMIT: &str = "submit-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A certificate for `name` signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    if server {
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
    }
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Certificates and token files of one test.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    foreign_ca: String,
    foreign_cert: String,
    foreign_key: String,
    tokens: String,
    worker_token: String,
}

fn pki(dir: &Path) -> Pki {
    let ca1 = ca("crossfold test CA");
    let (sc, sk) = leaf(&ca1, "localhost", true);
    let (cc, ck) = leaf(&ca1, "worker-1", false);
    let other = ca("someone else's CA");
    let (fc, fk) = leaf(&other, "intruder", false);
    Pki {
        ca: write(dir, "ca.pem", &ca1.pem),
        server_cert: write(dir, "server.pem", &sc),
        server_key: write(dir, "server.key", &sk),
        client_cert: write(dir, "client.pem", &cc),
        client_key: write(dir, "client.key", &ck),
        foreign_ca: write(dir, "foreign-ca.pem", &other.pem),
        foreign_cert: write(dir, "foreign.pem", &fc),
        foreign_key: write(dir, "foreign.key", &fk),
        tokens: write(
            dir,
            "tokens",
            &format!("# test tokens\nworker {WORKER}\nsubmit {SUBMIT}\nread {READ}\n"),
        ),
        worker_token: write(dir, "worker.token", &format!("{WORKER}\n")),
    }
}

/// Run the CLI with extra environment variables, killed after 60 s (a
/// regression that makes a command wait must fail the test, not hang it).
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("60")
        .arg(crossfold_bin())
        .args(args)
        .env_remove("CROSSFOLD_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run crossfold");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = std::net::TcpStream::connect(host).expect("connect to metrics");
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn start_secure(dir: &Path, p: &Pki, extra: &[&str]) -> (Proc, String) {
    let spec = tiny_spec(dir, "");
    make_data(&spec);
    let mut args = vec![
        "--tls-cert",
        &p.server_cert,
        "--tls-key",
        &p.server_key,
        "--client-ca",
        &p.ca,
        "--tokens-file",
        &p.tokens,
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let (c, url) = start_coordinator(dir, "127.0.0.1:0", &dir.join("data"), &args);
    // The certificate names localhost; the URL printed is the bound IP.
    let url = url.replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://localhost:"), "{url}");
    (c, url)
}

#[test]
fn mutual_tls_and_scoped_tokens_guard_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let (coord, url) = start_secure(dir.path(), &p, &["--log-format", "json"]);
    let tls = [
        "--coordinator",
        url.as_str(),
        "--ca",
        &p.ca,
        "--cert",
        &p.client_cert,
        "--key",
        &p.client_key,
    ];
    let status = |token: Option<&str>| {
        let mut args = vec!["status"];
        args.extend_from_slice(&tls);
        let env: Vec<(&str, &str)> = token.map(|t| ("CROSSFOLD_TOKEN", t)).into_iter().collect();
        cli_env(&args, &env)
    };

    // The right certificate and a read token: allowed.
    let (code, out, err) = status(Some(READ));
    assert_eq!(code, 0, "{out}{err}");
    // No token, an unknown token: UNAUTHENTICATED.
    let (code, _, err) = status(None);
    assert!(code != 0 && err.contains("Unauthenticated"), "{err}");
    let (code, _, err) = status(Some("not-a-known-token-at-all"));
    assert!(code != 0 && err.contains("Unauthenticated"), "{err}");
    // A worker token cannot read experiments; a read token cannot submit.
    let (code, _, err) = status(Some(WORKER));
    assert!(code != 0 && err.contains("PermissionDenied"), "{err}");
    let spec = dir.path().join("spec.toml");
    let mut submit = vec!["submit", spec.to_str().unwrap()];
    submit.extend_from_slice(&tls);
    let (code, _, err) = cli_env(&submit, &[("CROSSFOLD_TOKEN", READ)]);
    assert!(code != 0 && err.contains("PermissionDenied"), "{err}");

    // Refused at the handshake: a client certificate from a foreign CA, no
    // client certificate, a plaintext client, and a client that does not
    // trust the server's CA.
    let foreign = [
        "status",
        "--coordinator",
        url.as_str(),
        "--ca",
        &p.ca,
        "--cert",
        &p.foreign_cert,
        "--key",
        &p.foreign_key,
    ];
    let no_cert = ["status", "--coordinator", url.as_str(), "--ca", &p.ca];
    let plain_url = url.replace("https://", "http://");
    let plaintext = ["status", "--coordinator", plain_url.as_str()];
    let wrong_ca = [
        "status",
        "--coordinator",
        url.as_str(),
        "--ca",
        &p.foreign_ca,
        "--cert",
        &p.client_cert,
        "--key",
        &p.client_key,
    ];
    for (what, args) in [
        ("foreign client certificate", &foreign[..]),
        ("no client certificate", &no_cert[..]),
        ("plaintext client", &plaintext[..]),
        ("untrusted server CA", &wrong_ca[..]),
    ] {
        let (code, out, err) = cli_env(args, &[("CROSSFOLD_TOKEN", READ)]);
        assert_ne!(code, 0, "{what} got in: {out}");
        assert!(
            (err.contains("cannot reach the coordinator")
                || err.contains("transport error")
                || err.contains("certificate"))
                && !err.contains("Unauthenticated")
                && !err.contains("PermissionDenied"),
            "{what}: not refused at the connection: {err}"
        );
        // In plain words (or, when TLS 1.3 closed the connection before
        // the alert was read, what it may need).
        let expected = match what {
            "plaintext client" => "https:// URL and --ca",
            "untrusted server CA" => "not signed by --ca",
            "no client certificate" if !err.contains("requires a client certificate") => {
                "--cert and --key"
            }
            _ => "",
        };
        assert!(err.contains(expected), "{what}: {err}");
    }
    // The coordinator logs the handshakes it refused, naming why.
    wait_for(
        "the refused handshakes logged",
        Duration::from_secs(10),
        || {
            let log = coord.log_text();
            log.contains("tls accept error") && log.contains("no certificates")
        },
    );

    // Health needs no token (probes), but still the TLS handshake.
    let mut health = vec!["health"];
    health.extend_from_slice(&tls);
    let (code, out, err) = cli_env(&health, &[]);
    assert_eq!((code, out.trim()), (0, "SERVING"), "{err}");
    let (code, _, _) = cli_env(
        &[
            "health",
            "--coordinator",
            plain_url.as_str(),
            "--timeout",
            "3",
        ],
        &[],
    );
    assert_eq!(code, 1);

    // A worker with a token of the wrong scope stops with the reason
    // instead of retrying for ever.
    let read_token = write(dir.path(), "read.token", READ);
    let mut wrong = start_worker_with(
        dir.path(),
        &url,
        "wrong-scope",
        &[],
        &[
            "--ca",
            &p.ca,
            "--cert",
            &p.client_cert,
            "--key",
            &p.client_key,
            "--token-file",
            &read_token,
        ],
    );
    let mut exit = None;
    wait_for(
        "the wrong-scope worker to stop",
        Duration::from_secs(30),
        || {
            exit = wrong.child.try_wait().ok().flatten();
            exit.is_some()
        },
    );
    assert!(!exit.unwrap().success());
    assert!(
        wrong.log_text().contains("PermissionDenied"),
        "{}",
        wrong.log_text()
    );

    // A real worker over mutual TLS with its token file trains the tiny
    // experiment submitted with the submit token; it also serves metrics.
    let w = start_worker_with(
        dir.path(),
        &url,
        "tls-worker",
        &[],
        &[
            "--ca",
            &p.ca,
            "--cert",
            &p.client_cert,
            "--key",
            &p.client_key,
            "--token-file",
            &p.worker_token,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let (code, out, err) = cli_env(&submit, &[("CROSSFOLD_TOKEN", SUBMIT)]);
    assert_eq!(code, 0, "{out}{err}");
    let id = out.lines().last().unwrap().trim().to_string();
    let mut get = vec!["status", id.as_str(), "--format", "json"];
    get.extend_from_slice(&tls);
    wait_for(
        "the experiment to finish over TLS",
        Duration::from_secs(300),
        || {
            let (_, out, _) = cli_env(&get, &[("CROSSFOLD_TOKEN", READ)]);
            serde_json::from_str::<serde_json::Value>(&out)
                .map(|s| terminal(&s))
                .unwrap_or(false)
        },
    );
    let (_, out, _) = cli_env(&get, &[("CROSSFOLD_TOKEN", READ)]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["state"], "succeeded", "{s}");

    // The worker's metrics (address from its log).
    let wlog = w.log_text();
    let addr = wlog
        .split("metrics=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the worker log:\n{wlog}"));
    let wm = http_get(&format!("http://{addr}/metrics"));
    assert!(
        wm.contains("crossfold_worker_jobs_total{outcome=\"completed\"}"),
        "{wm}"
    );
    w.signal(libc::SIGTERM);

    // The coordinator's metrics count what happened, refusals included.
    let m = http_get(coord.metrics.as_deref().expect("metrics URL"));
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    let value = |needle: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{needle} missing in\n{m}"))
    };
    assert_eq!(value("crossfold_jobs{state=\"succeeded\"}"), 15.0);
    // A lease may expire and be granted again on a loaded machine.
    assert!(value("crossfold_leases_granted_total") >= 15.0);
    assert_eq!(
        value("crossfold_attempts_total{outcome=\"succeeded\"}"),
        15.0
    );
    assert!(value("crossfold_job_duration_seconds_count{task=\"screening\"}") >= 5.0);
    assert!(value("crossfold_workers_connected") >= 1.0);
    assert!(
        value("crossfold_grpc_requests_total{method=\"/crossfold.v1.Experiments/List\",code=\"Unauthenticated\"}")
            >= 2.0
    );
    assert!(
        value("crossfold_grpc_requests_total{method=\"/crossfold.v1.Experiments/Submit\",code=\"PermissionDenied\"}")
            >= 1.0
    );
    assert!(
        value(
            "crossfold_grpc_requests_total{method=\"/crossfold.v1.Workers/Complete\",code=\"Ok\"}"
        ) >= 15.0
    );
    assert!(
        m.contains("crossfold_grpc_request_duration_seconds_bucket"),
        "{m}"
    );

    // JSON logs with the ids as fields.
    let log = coord.log_text();
    let leased: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "job leased")
        .collect();
    assert!(leased.len() >= 15, "{log}");
    // No token ever reaches a log.
    for l in [&log, &w.log_text()] {
        for t in [WORKER, SUBMIT, READ] {
            assert!(!l.contains(t), "a token is in a log");
        }
    }
    for v in &leased {
        assert_eq!(v["experiment"], id.as_str(), "{v}");
        assert!(
            v["job"].is_string() && v["attempt"].is_u64() && v["level"] == "INFO",
            "{v}"
        );
    }

    // A worker without a client certificate, or with one from a foreign
    // CA, stops and says why instead of retrying for ever.
    for (name, extra) in [
        ("no-cert", vec!["--ca", p.ca.as_str()]),
        (
            "foreign-cert",
            vec![
                "--ca",
                p.ca.as_str(),
                "--cert",
                p.foreign_cert.as_str(),
                "--key",
                p.foreign_key.as_str(),
            ],
        ),
    ] {
        let mut args = extra.clone();
        args.extend(["--token-file", p.worker_token.as_str()]);
        let mut refused = start_worker_with(dir.path(), &url, name, &[], &args);
        let mut exit = None;
        // Under TLS 1.3 an attempt may see the connection closed before the
        // alert arrives (retried); one soon sees the alert.
        wait_for(
            &format!("the {name} worker to stop"),
            Duration::from_secs(90),
            || {
                exit = refused.child.try_wait().ok().flatten();
                exit.is_some()
            },
        );
        assert!(!exit.unwrap().success(), "{name}");
        let log = refused.log_text();
        assert!(
            log.contains("the coordinator requires a client certificate")
                || log.contains("the coordinator refused the client certificate"),
            "{name}: {log}"
        );
    }
}

#[test]
fn reflection_lists_the_services_for_grpcurl() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    make_data(&spec);
    let (_c, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let names = rt.block_on(async {
        let channel = crossfold_proto::client::ClientSecurity::plaintext()
            .connect(&url)
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let reply = stream.message().await.unwrap().unwrap();
        match reply.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("unexpected reply {other:?}"),
        }
    });
    for s in [
        "crossfold.v1.Experiments",
        "crossfold.v1.Workers",
        "crossfold.v1.Data",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} not in {names:?}");
    }
}

#[test]
fn the_coordinator_refuses_unsafe_or_broken_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db = db.to_str().unwrap();
    let root = dir.path().to_str().unwrap();
    let base = [
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db,
        "--data-root",
        root,
    ];
    // Neither TLS nor --insecure.
    let (code, _, err) = cli_env(&base, &[]);
    assert!(
        code != 0 && err.contains("--insecure") && err.contains("--tls-cert"),
        "{err}"
    );
    // A tokens file with an unknown scope: named with its line.
    let tokens = write(
        dir.path(),
        "tokens",
        "worker 0123456789abcdef0\nadmin 0123456789abcdef1\n",
    );
    let mut args = base.to_vec();
    args.extend(["--insecure", "--tokens-file", tokens.as_str()]);
    let (code, _, err) = cli_env(&args, &[]);
    assert!(
        code != 0 && err.contains(&format!("{tokens}:2")) && err.contains("admin"),
        "{err}"
    );
    // A missing certificate file is named.
    let missing = PathBuf::from(root).join("nope.pem");
    let missing = missing.to_str().unwrap();
    let mut args = base.to_vec();
    args.extend(["--tls-cert", missing, "--tls-key", missing]);
    let (code, _, err) = cli_env(&args, &[]);
    assert!(code != 0 && err.contains("nope.pem"), "{err}");
    // A client with https:// but no CA is told what to add.
    let (code, _, err) = cli_env(&["status", "--coordinator", "https://localhost:1"], &[]);
    assert!(code != 0 && err.contains("--ca"), "{err}");
}

#[test]
fn sigterm_stops_the_coordinator_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "");
    make_data(&spec);
    let (mut c, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let id = submit(&url, &spec, &[]);
    c.signal(libc::SIGTERM);
    let mut code = None;
    wait_for("the coordinator to exit", Duration::from_secs(20), || {
        code = c.child.try_wait().ok().flatten().map(|s| s.code());
        code.is_some()
    });
    assert_eq!(code, Some(Some(0)));
    // Restarted on the same database, it still has the experiment.
    let (_c2, url2) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    assert_eq!(
        status(&url2, &id)["jobs"]["pending"],
        15,
        "{}",
        status(&url2, &id)
    );
}

#[test]
fn a_coordinator_that_never_answers_is_given_up_on_at_the_timeout() {
    // Accepts connections and says nothing: a stuck coordinator, or a
    // middlebox holding the connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tls_url = url.replace("http://", "https://");
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = write(dir.path(), "ca.pem", &ca("silent CA").pem);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    for (args, want) in [
        (
            vec!["status", "--coordinator", &url, "--timeout", "2"],
            "no answer from the coordinator within 2 s (--timeout, CROSSFOLD_TIMEOUT)",
        ),
        (
            vec!["cancel", "x", "--coordinator", &url, "--timeout", "1.5"],
            "no answer from the coordinator within 1.5 s",
        ),
        (
            vec!["health", "--coordinator", &url, "--timeout", "1"],
            "unhealthy: no answer within 1 s",
        ),
        // With TLS the handshake itself waits: tonic's connect time-out
        // covers the TCP connect alone (this used to wait for ever).
        (
            vec![
                "status",
                "--coordinator",
                &tls_url,
                "--ca",
                &ca_pem,
                "--timeout",
                "2",
            ],
            "no answer to the connection's handshakes within 2 s",
        ),
        (
            vec![
                "health",
                "--coordinator",
                &tls_url,
                "--ca",
                &ca_pem,
                "--timeout",
                "1",
            ],
            "no answer to the connection's handshakes within 1 s",
        ),
    ] {
        let started = std::time::Instant::now();
        let (code, _, err) = cli(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        // Not waiting for a keep-alive or connect time-out instead.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = cli(&["status", "--coordinator", &url, "--timeout", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--timeout (or CROSSFOLD_TIMEOUT) 0: must be 0 < seconds <= 3600"),
        "{err}"
    );
}
