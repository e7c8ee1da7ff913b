//! The client side of a connection to the coordinator, shared by the CLI
//! and the workers: TLS (the CA that signed the coordinator's certificate,
//! and optionally a client certificate for mutual TLS) and the bearer token
//! sent with every call.
//!
//! `https://` URLs need a CA (`--ca`); `http://` URLs are plaintext and are
//! refused when TLS files are given, so a typo cannot silently downgrade.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("coordinator URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// `failure` is not a `source`: its text already holds every cause
    /// (see [`describe`]), which would otherwise be printed again.
    #[error("cannot reach the coordinator at {url}: {failure}")]
    Connect {
        url: String,
        failure: ConnectFailure,
    },
}

/// An error and its causes on one line (tonic's transport errors say only
/// "transport error" at the top; the TLS alert is further down). A cause
/// whose text the line already ends with is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

/// A TLS problem found in an error's causes, in plain words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsProblem {
    /// What it means and what to do.
    pub meaning: &'static str,
    /// The coordinator refused this client's certificate: only the client's
    /// own files (restarted with others) can fix it. Otherwise the problem
    /// is the coordinator's certificate as this client sees it, which a fix
    /// on the coordinator's side (or a clock that syncs) may heal.
    pub client_side: bool,
}

/// TLS problems by the text rustls gives them somewhere in an error's
/// causes (the alert names are rustls's `AlertDescription` in Debug form).
const TLS_PROBLEMS: &[(&str, TlsProblem)] = &[
    (
        "CertificateRequired",
        TlsProblem {
            meaning: "the coordinator requires a client certificate (mutual TLS): give --cert and --key",
            client_side: true,
        },
    ),
    (
        "alert: CertificateExpired",
        TlsProblem {
            meaning: "the coordinator refused the client certificate (--cert): it has expired",
            client_side: true,
        },
    ),
    (
        "alert: CertificateRevoked",
        TlsProblem {
            meaning: "the coordinator refused the client certificate (--cert): it was revoked",
            client_side: true,
        },
    ),
    (
        "alert: UnknownCA",
        TlsProblem {
            meaning: "the coordinator refused the client certificate (--cert): it is not signed by the CA the coordinator trusts (its --client-ca)",
            client_side: true,
        },
    ),
    (
        "alert: BadCertificate",
        TlsProblem {
            meaning: "the coordinator refused the client certificate (--cert): it is not signed by the CA the coordinator trusts (its --client-ca), or it is not a client certificate",
            client_side: true,
        },
    ),
    (
        "alert: DecryptError",
        TlsProblem {
            meaning: "the coordinator refused the TLS handshake: does --key belong to --cert?",
            client_side: true,
        },
    ),
    (
        "UnknownIssuer",
        TlsProblem {
            meaning: "the coordinator's certificate is not signed by --ca: give the CA that signed it",
            client_side: false,
        },
    ),
    (
        "certificate expired",
        TlsProblem {
            meaning: "the coordinator's certificate has expired (or this machine's clock is wrong): renew its --tls-cert",
            client_side: false,
        },
    ),
    (
        "not valid for name",
        TlsProblem {
            meaning: "the coordinator's certificate is not for the host name in the URL: use a name it lists",
            client_side: false,
        },
    ),
];

/// The TLS problem an error's causes show, if any. Only the causes are
/// searched, not a failed call's own message, which the server wrote.
pub fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<TlsProblem> {
    let text = if e.is::<tonic::Status>() {
        e.source().map(chain).unwrap_or_default()
    } else {
        chain(e)
    };
    TLS_PROBLEMS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, problem)| *problem)
}

/// An error for people: its TLS problem in plain words with the innermost
/// cause in brackets, or else the error and its causes ([`chain`]).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let Some(problem) = tls_problem(e) else {
        return chain(e);
    };
    let mut innermost = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        innermost = c.to_string();
        cause = c.source();
    }
    format!("{} ({innermost})", problem.meaning)
}

/// TLS settings of a client.
#[derive(Clone)]
pub struct ClientTls {
    /// PEM of the CA that signed the coordinator's certificate.
    pub ca_pem: Vec<u8>,
    /// PEM certificate and key presented to the coordinator (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to check the coordinator's certificate against (default: the
    /// URL's host).
    pub domain: Option<String>,
}

/// The environment variable a client's token may come from.
pub const TOKEN_ENV: &str = "CROSSFOLD_TOKEN";

/// How a client authenticates: TLS and a bearer token, each optional.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<ClientTls>,
    pub token: Option<String>,
}

/// Never prints the token or key material.
impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("tls", &self.tls.is_some())
            .field(
                "mutual_tls",
                &self.tls.as_ref().is_some_and(|t| t.identity.is_some()),
            )
            .field("token", &self.token.is_some())
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether `url` (http:// or https://) names this machine.
fn loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Said once per process: a token sent over plaintext to another machine
/// can be read by anyone on the path.
fn warn_plaintext_token(url: &str) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            url,
            "the token is sent in plaintext to another machine: anyone on the network path can read it; use https:// with --ca"
        );
    }
}

/// Read a PEM file given as `flag` that must hold a block of `kind`
/// (`CERTIFICATE`, or `PRIVATE KEY` for any key type): a DER file, a key
/// given as the certificate or an empty file is named here, not found out
/// later as a failed handshake that blames the coordinator.
fn read_pem(flag: &str, path: &Path, kind: &str) -> Result<Vec<u8>, ClientError> {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let has = text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ") && l.ends_with(&format!("{kind}-----"))
    });
    if !has {
        return Err(ClientError::Invalid {
            what: format!("{flag} {}", path.display()),
            reason: format!(
                "holds no PEM {} (a \"-----BEGIN ...{kind}-----\" block); give it in PEM form",
                kind.to_lowercase()
            ),
        });
    }
    Ok(bytes)
}

/// Read a token file: one token, surrounding whitespace ignored.
pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
    let text = String::from_utf8(read(path)?).map_err(|_| ClientError::Invalid {
        what: path.display().to_string(),
        reason: "not UTF-8 text".into(),
    })?;
    check_token(&path.display().to_string(), text.trim())
}

/// A token must be non-empty visible ASCII (it travels in an HTTP header).
pub fn check_token(what: &str, token: &str) -> Result<String, ClientError> {
    if token.is_empty() {
        return Err(ClientError::Invalid {
            what: what.into(),
            reason: "the token is empty".into(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::Invalid {
            what: what.into(),
            reason: "the token must be visible ASCII without spaces".into(),
        });
    }
    Ok(token.to_string())
}

impl ClientSecurity {
    /// Plaintext, no token (loopback-only local runs and tests).
    pub fn plaintext() -> Self {
        ClientSecurity::default()
    }

    /// From files: `ca` (turns TLS on), `cert` + `key` (mutual TLS), and the
    /// token from `token_file` or else `token_env` (the value of an
    /// environment variable, never a command-line argument).
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token_file: Option<&Path>,
        token_env: Option<(&str, String)>,
    ) -> Result<Self, ClientError> {
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((
                read_pem("--cert", c, "CERTIFICATE")?,
                read_pem("--key", k, "PRIVATE KEY")?,
            )),
            (None, None) => None,
            _ => {
                return Err(ClientError::Invalid {
                    what: "--cert/--key".into(),
                    reason: "give both the client certificate and its key".into(),
                })
            }
        };
        let tls = match ca {
            Some(ca) => Some(ClientTls {
                ca_pem: read_pem("--ca", ca, "CERTIFICATE")?,
                identity,
                domain: None,
            }),
            None if identity.is_some() => {
                return Err(ClientError::Invalid {
                    what: "--cert".into(),
                    reason: "a client certificate needs --ca (the coordinator's CA) too".into(),
                })
            }
            None => None,
        };
        let token = match (token_file, token_env) {
            (Some(f), _) => Some(read_token_file(f)?),
            (None, Some((name, v))) if !v.trim().is_empty() => Some(check_token(name, v.trim())?),
            _ => None,
        };
        Ok(ClientSecurity { tls, token })
    }

    /// [`ClientSecurity::from_files`] with the token, when no file names it,
    /// from the `CROSSFOLD_TOKEN` environment variable.
    pub fn from_files_or_env(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let env = std::env::var(TOKEN_ENV).ok().map(|v| (TOKEN_ENV, v));
        ClientSecurity::from_files(ca, cert, key, token_file, env)
    }

    /// The interceptor that adds this client's token to every call.
    pub fn bearer(&self) -> Result<Bearer, ClientError> {
        let value = match &self.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ClientError::Invalid {
                        what: "token".into(),
                        reason: "not a valid header value".into(),
                    })?,
            ),
            None => None,
        };
        Ok(Bearer(value))
    }

    /// An endpoint for `url` with this client's TLS settings and the
    /// keep-alive and time-out settings every crossfold client uses.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ClientError> {
        let bad = |reason: String| ClientError::Url {
            url: url.to_string(),
            reason,
        };
        let https = url.starts_with("https://");
        if !https && !url.starts_with("http://") {
            return Err(bad("must start with http:// or https://".into()));
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        match (&self.tls, https) {
            (Some(tls), true) => {
                // The handshake's own limit holds for reconnections too,
                // which tonic's channel makes by itself.
                let mut cfg = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                    .timeout(CONNECT_LIMIT);
                if let Some((cert, key)) = &tls.identity {
                    cfg = cfg.identity(Identity::from_pem(cert, key));
                }
                if let Some(d) = &tls.domain {
                    cfg = cfg.domain_name(d.clone());
                }
                endpoint = endpoint
                    .tls_config(cfg)
                    .map_err(|e| bad(format!("TLS: {}", chain(&e))))?;
            }
            (None, true) => {
                return Err(bad(
                    "https:// needs --ca, the CA certificate that signed the coordinator's".into(),
                ))
            }
            (Some(_), false) => {
                return Err(bad(
                    "TLS files were given but the URL is http:// (plaintext); use https://".into(),
                ))
            }
            (None, false) => {
                if self.token.is_some() && !loopback(url) {
                    warn_plaintext_token(url);
                }
            }
        }
        Ok(endpoint)
    }

    /// Connect once, giving up after [`CONNECT_LIMIT`].
    pub async fn connect(&self, url: &str) -> Result<AuthChannel, ClientError> {
        self.connect_within(url, CONNECT_LIMIT).await
    }

    /// Connect once, giving up after `limit`.
    pub async fn connect_within(
        &self,
        url: &str,
        limit: Duration,
    ) -> Result<AuthChannel, ClientError> {
        let channel = connect_within(&self.endpoint(url)?, limit)
            .await
            .map_err(|failure| ClientError::Connect {
                url: url.to_string(),
                failure,
            })?;
        self.wrap(channel)
    }

    /// Put this client's token on a connected channel.
    pub fn wrap(&self, channel: Channel) -> Result<AuthChannel, ClientError> {
        Ok(InterceptedService::new(channel, self.bearer()?))
    }
}

/// How long a connection may take where the caller names no limit: the
/// TCP, TLS and HTTP/2 handshakes together. tonic's connect time-out covers
/// the TCP connect alone, so a server that accepts and then says nothing
/// would hold the caller for ever.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Why a connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("{}", describe(.0))]
    /// Not a `source`, for the same reason as [`ClientError::Connect`].
    Transport(tonic::transport::Error),
    #[error(
        "no answer to the connection's handshakes within {} s: is the coordinator stuck, or is \
         something in between holding the connection?",
        .0.as_secs_f64()
    )]
    Silent(Duration),
}

/// Connect to `endpoint`, giving up after `limit`.
pub async fn connect_within(
    endpoint: &Endpoint,
    limit: Duration,
) -> Result<Channel, ConnectFailure> {
    match tokio::time::timeout(limit, endpoint.connect()).await {
        Ok(connected) => connected.map_err(ConnectFailure::Transport),
        Err(_) => Err(ConnectFailure::Silent(limit)),
    }
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry the client's token.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a chain of causes, as tonic's transport errors have.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    fn transport(inner: &'static str) -> Layer {
        Layer(
            "transport error",
            Some(Box::new(Layer(
                "connection error",
                Some(Box::new(Layer(inner, None))),
            ))),
        )
    }

    #[test]
    fn tls_problems_deep_in_the_causes_are_named_in_plain_words() {
        for (inner, expected) in [
            ("received fatal alert: CertificateRequired", "requires a client certificate"),
            ("received fatal alert: CertificateExpired", "client certificate (--cert): it has expired"),
            ("received fatal alert: UnknownCA", "not signed by the CA the coordinator trusts"),
            ("invalid peer certificate: UnknownIssuer", "not signed by --ca"),
            (
                "certificate expired: verification time 1764000000 (UNIX), but certificate is not valid after 1577923200 (UNIX)",
                "coordinator's certificate has expired",
            ),
        ] {
            let e = transport(inner);
            assert!(
                tls_problem(&e).is_some_and(|p| p.meaning.contains(expected)),
                "{inner}"
            );
            let text = describe(&e);
            assert!(text.contains(expected) && text.ends_with(&format!("({inner})")), "{text}");
        }
        // Refused client certificates only the client can fix; a server
        // certificate problem may heal on the coordinator's side.
        let side = |inner| tls_problem(&transport(inner)).map(|p| p.client_side);
        assert_eq!(
            side("received fatal alert: CertificateRequired"),
            Some(true)
        );
        assert_eq!(side("invalid peer certificate: UnknownIssuer"), Some(false));
        // A failed call's own message is the server's words, not a cause.
        let status = tonic::Status::unavailable("invalid peer certificate: UnknownIssuer");
        assert_eq!(tls_problem(&status), None);
        // Anything else is not a TLS problem and keeps its whole chain.
        let refused = transport("tcp connect error: Connection refused (os error 111)");
        assert_eq!(tls_problem(&refused), None);
        assert_eq!(
            describe(&refused),
            "transport error: connection error: tcp connect error: Connection refused (os error 111)"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_its_cause_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let connected = ClientSecurity::plaintext()
            .connect_within(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5))
            .await;
        let Err(err) = connected else {
            panic!("nothing listens there")
        };
        let text = err.to_string();
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
        // Its text holds the causes: none are chained for a printer to repeat.
        assert!(std::error::Error::source(&err).is_none(), "{text}");
    }

    #[test]
    fn url_and_tls_must_agree() {
        let plain = ClientSecurity::plaintext();
        assert!(plain.endpoint("http://127.0.0.1:1").is_ok());
        let e = plain
            .endpoint("https://127.0.0.1:1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--ca"), "{e}");
        let e = plain.endpoint("127.0.0.1:1").err().unwrap().to_string();
        assert!(e.contains("http://"), "{e}");
        let tls = ClientSecurity {
            tls: Some(ClientTls {
                ca_pem: b"not checked until the handshake".to_vec(),
                identity: None,
                domain: None,
            }),
            token: None,
        };
        let e = tls
            .endpoint("http://127.0.0.1:1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn loopback_urls_are_told_from_other_hosts() {
        for url in [
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:50051/",
            "http://127.0.0.2",
        ] {
            assert!(loopback(url), "{url}");
        }
        for url in [
            "http://coordinator:50051",
            "http://10.0.0.5:50051",
            "http://[2001:db8::1]:50051",
            "http://localhost.example.org:1",
        ] {
            assert!(!loopback(url), "{url}");
        }
    }

    #[test]
    fn tls_files_that_are_not_pem_are_named_by_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30u8, 0x82, 0x01, 0x0a]).unwrap();
        let ok = ClientSecurity::from_files(Some(&cert), Some(&cert), Some(&key), None, None);
        assert!(ok.is_ok(), "{:?}", ok.err());
        let e = ClientSecurity::from_files(Some(&der), None, None, None, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--ca") && e.contains("ca.der") && e.contains("no PEM certificate"),
            "{e}"
        );
        // The key given as the certificate, and the other way round.
        let e = ClientSecurity::from_files(Some(&cert), Some(&key), Some(&key), None, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--cert") && e.contains("k.pem"), "{e}");
        let e = ClientSecurity::from_files(Some(&cert), Some(&cert), Some(&cert), None, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--key") && e.contains("no PEM private key"),
            "{e}"
        );
    }

    #[test]
    fn tokens_are_checked_and_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  s3cret-token\n").unwrap();
        assert_eq!(read_token_file(&f).unwrap(), "s3cret-token");
        std::fs::write(&f, "two words").unwrap();
        assert!(read_token_file(&f)
            .unwrap_err()
            .to_string()
            .contains("token"));
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token_file(&f)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing = dir.path().join("nope");
        let e = read_token_file(&missing).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let env = ClientSecurity::from_files(
            None,
            None,
            None,
            None,
            Some(("CROSSFOLD_TOKEN", "abc".into())),
        )
        .unwrap();
        assert_eq!(env.token.as_deref(), Some("abc"));
        let e = ClientSecurity::from_files(None, Some(&f), None, None, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--cert/--key"), "{e}");
    }

    #[test]
    fn bearer_adds_the_header_only_with_a_token() {
        let mut with = ClientSecurity {
            tls: None,
            token: Some("abc".into()),
        }
        .bearer()
        .unwrap();
        let r = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer abc");
        let mut without = ClientSecurity::plaintext().bearer().unwrap();
        let r = without.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
    }
}
