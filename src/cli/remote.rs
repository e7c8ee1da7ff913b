//! Talking to a coordinator: submit, status, watch, cancel, results.

use super::{load_spec, Format};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use crossfold_proto::client::{AuthChannel, ClientSecurity};
use crossfold_proto::v1::{self, experiments_client::ExperimentsClient};
use crossfold_shared::experiment::prepare;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_stream::StreamExt;

#[derive(Args)]
pub struct Target {
    /// Coordinator URL: https://host:port with TLS, http://host:port without.
    #[arg(long, env = "CROSSFOLD_COORDINATOR")]
    pub coordinator: String,
    /// CA certificate that signed the coordinator's (PEM); needed for https://.
    #[arg(long, env = "CROSSFOLD_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM; with --key).
    #[arg(long, env = "CROSSFOLD_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, env = "CROSSFOLD_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding the bearer token (else the CROSSFOLD_TOKEN environment
    /// variable; never on the command line, where other users can read it).
    #[arg(long, env = "CROSSFOLD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for the coordinator's answer before giving up
    /// (default 60; `health`: 5), and for a connection's handshakes (of
    /// which the TCP connect is given at most 5 s and TLS at most 10 s).
    /// `submit` (the coordinator checks the data set first), `results`
    /// (which may carry much data) and `watch`'s stream wait as long as
    /// they need; a dead connection is still found within about 30 s.
    #[arg(long, env = "CROSSFOLD_TIMEOUT", value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

impl Target {
    /// `--timeout`, or `default` seconds.
    pub fn limit(&self, default: f64) -> Result<Duration> {
        let secs = self.timeout.unwrap_or(default);
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
            .ok_or_else(|| {
                anyhow!("--timeout (or CROSSFOLD_TIMEOUT) {secs}: must be 0 < seconds <= 3600")
            })
    }

    /// The TLS files and token this target names.
    pub fn security(&self) -> Result<ClientSecurity> {
        Ok(ClientSecurity::from_files_or_env(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
            self.token_file.as_deref(),
        )?)
    }
}

#[derive(Args)]
pub struct SubmitArgs {
    pub spec: PathBuf,
    #[arg(long = "set")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct IdArgs {
    pub id: String,
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Experiment id; all experiments when left out.
    pub id: Option<String>,
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub type Client = ExperimentsClient<AuthChannel>;

/// Connect to the coordinator `target` names, with its TLS files and token.
pub async fn client(target: &Target) -> Result<Client> {
    let limit = target.limit(DEFAULT_LIMIT)?;
    client_with(&target.coordinator, &target.security()?, limit).await
}

/// Seconds a call but `submit` and `watch`'s stream may wait for an answer.
pub const DEFAULT_LIMIT: f64 = 60.0;

pub async fn client_with(url: &str, security: &ClientSecurity, limit: Duration) -> Result<Client> {
    let channel = connect(url, security, limit).await?;
    Ok(ExperimentsClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// A failed call as an error, with its causes (a TLS alert, a reset
/// connection) rather than tonic's bare "transport error".
pub fn rpc(e: tonic::Status) -> anyhow::Error {
    anyhow!("{}", rpc_text(&e))
}

/// A failed call for people: a TLS problem in plain words, else the code,
/// the message and its causes, with a hint where the connection was dropped
/// in a way a TLS mismatch causes.
pub fn rpc_text(e: &tonic::Status) -> String {
    if crossfold_proto::client::tls_problem(e).is_some() {
        return crossfold_proto::client::describe(e);
    }
    let causes = std::error::Error::source(e)
        .map(|c| format!(": {}", crossfold_proto::client::chain(c)))
        .unwrap_or_default();
    let said = |s: &str| causes.contains(s) || e.message().contains(s);
    // A TLS server's alert read as HTTP/2 is a frame of about 1.3 MB: a
    // plaintext client at a TLS port.
    let hint = if said("FRAME_SIZE_ERROR") || said("frame with invalid size") {
        " (the coordinator speaks TLS: use an https:// URL and --ca)"
    } else if matches!(
        e.code(),
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
    ) && (said("broken pipe")
        || said("connection closed")
        || said("connection was not ready"))
    {
        closed_hint(CALLS.get().map(|c| c.sent))
    } else if said("keep-alive timed out") {
        // Calls that may carry much data (results, report, compare) have no
        // --timeout; a coordinator that stops answering is found this way.
        " (the coordinator accepted the connection but stopped answering: no reply to \
         HTTP/2 keep-alive pings within about 30 s; is it overloaded, stopped (SIGSTOP), or \
         is something between here and there holding the connection?)"
    } else {
        ""
    };
    format!("{:?}: {}{causes}{hint}", e.code(), e.message())
}

/// What this process offered the coordinator when it connected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sent {
    Plaintext,
    /// TLS without a client certificate.
    Tls,
    MutualTls,
}

/// How this process talks to its coordinator (one per process).
#[derive(Clone, Copy, Debug)]
struct Calls {
    sent: Sent,
    limit: Duration,
}

static CALLS: std::sync::OnceLock<Calls> = std::sync::OnceLock::new();

/// Note what the CLI offers the coordinator, so that a dropped connection
/// can be explained, and how long a call may wait for its answer.
pub fn remember(security: &ClientSecurity, limit: Duration) {
    let sent = match &security.tls {
        None => Sent::Plaintext,
        Some(t) if t.identity.is_some() => Sent::MutualTls,
        Some(_) => Sent::Tls,
    };
    let _ = CALLS.set(Calls { sent, limit });
}

/// How long a call may wait for its answer (`--timeout`).
fn limit() -> Duration {
    CALLS
        .get()
        .map_or(Duration::from_secs_f64(DEFAULT_LIMIT), |c| c.limit)
}

/// The answer to a short call (not one that may carry much data: the time
/// limit would include its transfer), or an error once `--timeout` passes
/// without one.
pub async fn answer<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    answer_within(limit(), call).await
}

async fn answer_within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(reply) => Ok(reply.map_err(rpc)?.into_inner()),
        Err(_) => Err(anyhow!(
            "no answer from the coordinator within {} s (--timeout, CROSSFOLD_TIMEOUT): is it \
             overloaded, or is something between here and there holding the connection?",
            limit.as_secs_f64(),
        )),
    }
}

/// Connect to the coordinator at `url`, giving up after `limit`.
pub async fn connect(url: &str, security: &ClientSecurity, limit: Duration) -> Result<AuthChannel> {
    remember(security, limit);
    Ok(security.connect_within(url, limit).await?)
}

/// Why a coordinator may have closed the connection: a restart, or a TLS
/// refusal whose alert the client never read (TLS 1.3 finishes the
/// client's side of the handshake before the server checks it).
fn closed_hint(sent: Option<Sent>) -> &'static str {
    match sent {
        Some(Sent::Tls) => {
            " (the coordinator closed the connection: it probably requires a client certificate \
             (mutual TLS): give --cert and --key; or it is restarting)"
        }
        Some(Sent::MutualTls) => {
            " (the coordinator closed the connection: is it restarting? Or it refused this \
             client certificate: is it signed by the CA the coordinator's --client-ca names?)"
        }
        Some(Sent::Plaintext) => {
            " (the coordinator closed the connection: is it restarting? Or it uses TLS, which \
             needs an https:// URL and --ca)"
        }
        None => {
            " (the coordinator closed the connection: is it restarting? Or it uses TLS, which \
             needs an https:// URL and --ca, and with mutual TLS --cert and --key too)"
        }
    }
}

/// Resolve the spec here (overrides, manifest path made absolute, the
/// synthetic cohort generated when asked for and missing) and submit it.
pub async fn submit_spec(
    client: &mut Client,
    spec: &std::path::Path,
    sets: &[String],
) -> Result<String> {
    let mut spec = load_spec(spec, sets)?;
    let path = spec.manifest_path();
    if !path.exists() && spec.dataset.synthetic.is_some() {
        let s = spec.clone();
        tokio::task::spawn_blocking(move || prepare(&s)).await??;
    }
    absolute_paths(&mut spec)?;
    let resp = client
        .submit(v1::SubmitRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            spec_toml: spec.to_toml(),
            overrides: Vec::new(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if resp.resumed > 0 {
        eprintln!(
            "experiment {} (same spec and data) had been cancelled or had failed rounds: {} round(s) queued again; succeeded rounds are kept",
            resp.experiment_id, resp.resumed
        );
    } else if !resp.created {
        eprintln!(
            "experiment {} has the same spec and data: not submitted again",
            resp.experiment_id
        );
    }
    Ok(resp.experiment_id)
}

pub async fn submit(a: SubmitArgs) -> Result<ExitCode> {
    let mut c = client(&a.target).await?;
    let id = submit_spec(&mut c, &a.spec, &a.sets).await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn state_name(s: i32) -> &'static str {
    match v1::JobState::try_from(s) {
        Ok(v1::JobState::Pending) => "pending",
        Ok(v1::JobState::Leased) => "leased",
        Ok(v1::JobState::Succeeded) => "succeeded",
        Ok(v1::JobState::Failed) => "failed",
        Ok(v1::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn status_json(e: &v1::Experiment) -> serde_json::Value {
    let j = e.jobs.unwrap_or_default();
    serde_json::json!({
        "id": e.experiment_id, "name": e.name, "state": e.state,
        "jobs": {"pending": j.pending, "leased": j.leased, "succeeded": j.succeeded, "failed": j.failed, "cancelled": j.cancelled},
        "plan_sha256": e.plan_sha256, "dataset_sha256": e.dataset_sha256,
        "note": (!e.note.is_empty()).then_some(&e.note),
        "job_status": e.job_status.iter().map(|s| serde_json::json!({
            "key": s.job_key, "state": state_name(s.state), "attempt": s.attempt,
            "worker": (!s.worker_id.is_empty()).then_some(&s.worker_id),
            "last_error": (!s.last_error.is_empty()).then_some(&s.last_error),
        })).collect::<Vec<_>>(),
    })
}

pub async fn status(a: StatusArgs) -> Result<ExitCode> {
    let mut c = client(&a.target).await?;
    let experiments = match &a.id {
        Some(id) => vec![
            answer(c.get(v1::GetExperimentRequest {
                experiment_id: id.clone(),
            }))
            .await?,
        ],
        None => {
            answer(c.list(v1::ListExperimentsRequest {}))
                .await?
                .experiments
        }
    };
    match (a.format, &a.id) {
        (Format::Json, Some(_)) => println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&experiments[0]))?
        ),
        (Format::Json, None) => println!(
            "{}",
            serde_json::to_string_pretty(&experiments.iter().map(status_json).collect::<Vec<_>>())?
        ),
        (Format::Text, _) => {
            if experiments.is_empty() {
                eprintln!("no experiments (submit one with `crossfold submit SPEC`)");
            }
            for e in &experiments {
                let j = e.jobs.unwrap_or_default();
                println!(
                    "{}  {}  {}: {} succeeded, {} leased, {} pending, {} failed, {} cancelled",
                    e.experiment_id,
                    e.name,
                    e.state,
                    j.succeeded,
                    j.leased,
                    j.pending,
                    j.failed,
                    j.cancelled
                );
                if !e.note.is_empty() {
                    println!("  note: {}", e.note);
                }
                if a.id.is_some() {
                    for s in &e.job_status {
                        let err = if s.last_error.is_empty() {
                            String::new()
                        } else {
                            format!("  ({})", s.last_error)
                        };
                        println!(
                            "  {:<16} {:<10} attempt {} {}{}",
                            s.job_key,
                            state_name(s.state),
                            s.attempt,
                            s.worker_id,
                            err
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follow an experiment until it ends: progress bars on a terminal, one line
/// per event otherwise. Returns the final state.
/// How events are shown while following an experiment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Progress bars on a terminal, one line per event otherwise (stderr).
    Text,
    /// One JSON object per event on stdout.
    Json,
    Nothing,
}

/// How long `follow` keeps trying to reach a coordinator that went away.
const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// How often `follow` asks why jobs wait (the coordinator's note: no
/// worker heard from, none with a GPU), which the event stream does not
/// carry.
const NOTE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Follow an experiment until it ends; returns its final state. A lost
/// connection (the coordinator restarting) is said and retried for
/// [`RECONNECT_FOR`]; a stream that ends while the experiment has not is
/// opened again. Why jobs wait, when the coordinator says, is shown once
/// each time it changes.
pub async fn follow(c: &mut Client, id: &str, show: Show) -> Result<String> {
    let mut view = super::progress::View::new(show, std::io::stderr().is_terminal());
    let mut lost: Option<std::time::Instant> = None;
    let mut note = String::new();
    // Kept across reopened streams: a proxy that cuts a quiet stream sooner
    // than this must not keep the note from ever being asked for.
    let mut ask = tokio::time::interval_at(tokio::time::Instant::now() + NOTE_EVERY, NOTE_EVERY);
    loop {
        // The coordinator answers the opening at once; a silent one is
        // treated as one that went away.
        let call = c.watch(v1::WatchRequest {
            experiment_id: id.to_string(),
        });
        let opened = tokio::time::timeout(limit(), call)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::unavailable(format!(
                    "no answer to opening the watch within {} s",
                    limit().as_secs_f64()
                )))
            });
        let mut stream = match opened {
            Ok(s) => {
                if lost.take().is_some() {
                    view.say("reconnected to the coordinator");
                }
                s.into_inner()
            }
            Err(e) if connection_lost(&e) => {
                wait_to_reconnect(&mut lost, &e, &view).await?;
                continue;
            }
            Err(e) => return Err(rpc(e)),
        };
        let mut ended = true;
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = ask.tick() => {
                    show_note(c, id, &mut note, &view).await;
                    continue;
                }
            };
            let Some(ev) = ev else { break };
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) if connection_lost(&e) => {
                    wait_to_reconnect(&mut lost, &e, &view).await?;
                    ended = false;
                    break;
                }
                Err(e) => return Err(rpc(e)),
            };
            view.event(&ev);
        }
        if !ended {
            continue;
        }
        let got = tokio::time::timeout(
            limit(),
            c.get(v1::GetExperimentRequest {
                experiment_id: id.to_string(),
            }),
        )
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::unavailable(format!(
                "no answer within {} s",
                limit().as_secs_f64()
            )))
        });
        let e = match got {
            Ok(e) => e.into_inner(),
            Err(e) if connection_lost(&e) => {
                wait_to_reconnect(&mut lost, &e, &view).await?;
                continue;
            }
            Err(e) => return Err(rpc(e)),
        };
        if !matches!(e.state.as_str(), "pending" | "running") {
            return Ok(e.state);
        }
        // The stream ended early (a proxy's idle timeout): opened again.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Show the coordinator's note on the experiment (why its jobs wait) when
/// it differs from the last one shown; a failed call is let pass (the
/// stream says when the coordinator is gone).
async fn show_note(c: &mut Client, id: &str, last: &mut String, view: &super::progress::View) {
    let got = tokio::time::timeout(
        limit(),
        c.get(v1::GetExperimentRequest {
            experiment_id: id.to_string(),
        }),
    )
    .await;
    if let Ok(Ok(e)) = got {
        let e = e.into_inner();
        if e.note != *last {
            if !e.note.is_empty() {
                view.say(&format!("note: {}", e.note));
            }
            *last = e.note;
        }
    }
}

/// The call failed because the coordinator could not be reached (restarting,
/// shutting down, network), not because it refused the request. A TLS
/// problem (a certificate the CA does not sign, an expired one) will not
/// heal by waiting: not lost, an error at once.
fn connection_lost(e: &tonic::Status) -> bool {
    // A stream reset by a proxy (an idle timeout) comes as INTERNAL with
    // the HTTP/2 error: the connection went, the coordinator did not refuse.
    let reset = e.code() == tonic::Code::Internal && e.message().contains("h2 protocol error");
    (reset
        || matches!(
            e.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ))
        && crossfold_proto::client::tls_problem(e).is_none()
}

/// Say the connection was lost (once) and wait before the next try; an
/// error once [`RECONNECT_FOR`] has passed.
async fn wait_to_reconnect(
    lost: &mut Option<std::time::Instant>,
    e: &tonic::Status,
    view: &super::progress::View,
) -> Result<()> {
    let since = match lost {
        Some(t) => *t,
        None => {
            view.say(&format!(
                "lost the connection to the coordinator ({}); reconnecting for up to {} s",
                rpc_text(e),
                RECONNECT_FOR.as_secs()
            ));
            *lost.insert(std::time::Instant::now())
        }
    };
    if since.elapsed() >= RECONNECT_FOR {
        bail!(
            "cannot reach the coordinator again after {} s: {}",
            RECONNECT_FOR.as_secs(),
            rpc_text(e)
        );
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    Ok(())
}

pub async fn watch(a: IdArgs) -> Result<ExitCode> {
    let mut c = client(&a.target).await?;
    let show = match a.format {
        Format::Json => Show::Json,
        Format::Text => Show::Text,
    };
    let state = follow(&mut c, &a.id, show).await?;
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"experiment_id": a.id, "state": state})
        ),
        Format::Text => println!("{state}"),
    }
    Ok(state_code(&state))
}

pub async fn cancel(a: IdArgs) -> Result<ExitCode> {
    let mut c = client(&a.target).await?;
    let e = answer(c.cancel(v1::CancelRequest {
        experiment_id: a.id.clone(),
    }))
    .await?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status_json(&e))?),
        Format::Text => println!("{} {}", e.experiment_id, e.state),
    }
    Ok(ExitCode::SUCCESS)
}

/// An experiment's results document, streamed in pieces (any size); from a
/// coordinator older than the stream, in one message (up to 64 MiB). No
/// time limit, which would count the transfer: a dead connection is found
/// by HTTP/2 keep-alive pings within about 30 s.
pub async fn fetch_results(c: &mut Client, id: &str) -> Result<serde_json::Value> {
    let request = v1::ResultsRequest {
        experiment_id: id.to_string(),
    };
    let text = match c.results_stream(request.clone()).await {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let mut text = Vec::new();
            while let Some(chunk) = stream.message().await.map_err(rpc)? {
                text.extend_from_slice(&chunk.json);
            }
            text
        }
        Err(e) if e.code() == tonic::Code::Unimplemented => c
            .results(request)
            .await
            .map_err(rpc)?
            .into_inner()
            .results_json
            .into_bytes(),
        Err(e) => return Err(rpc(e)),
    };
    serde_json::from_slice(&text).map_err(|e| anyhow!("coordinator sent unreadable results: {e}"))
}

pub async fn results(a: IdArgs) -> Result<ExitCode> {
    let mut c = client(&a.target).await?;
    let doc = fetch_results(&mut c, &a.id).await?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        Format::Text => print!("{}", super::summary::tables(&doc)),
    }
    if doc.get("tasks").is_none() {
        bail!("no results yet");
    }
    Ok(if super::summary::partial_note(&doc).is_some() {
        incomplete()
    } else {
        ExitCode::SUCCESS
    })
}

/// Exit status of `report` and `results` whose document has rounds
/// without a result (written or printed all the same).
pub fn incomplete() -> ExitCode {
    ExitCode::from(2)
}

/// Exit status for an experiment's final state, for `watch` and `run`:
/// 0 succeeded, 2 failed, 3 cancelled (1 is left for the command's own
/// errors: a bad id, a coordinator that cannot be reached).
pub fn state_code(state: &str) -> ExitCode {
    match state {
        "succeeded" => ExitCode::SUCCESS,
        "failed" => ExitCode::from(2),
        "cancelled" => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

/// Make the spec's file paths absolute, resolved against the spec's folder
/// here: the coordinator and the workers read the spec elsewhere, from
/// other working folders. The manifest must exist here (the coordinator
/// reads it); pretrained weights given by a relative path must too, while
/// an absolute one is passed on as written (it may exist on the workers
/// only).
pub(super) fn absolute_paths(spec: &mut crossfold_shared::spec::Spec) -> Result<()> {
    let path = spec.manifest_path();
    let real = path.canonicalize().with_context(|| {
        format!(
            "dataset.manifest = {:?}: {}",
            spec.dataset.manifest,
            path.display()
        )
    })?;
    spec.dataset.manifest = real.display().to_string();
    // The same check as plan's: a relative path must be a file here.
    super::check_pretrained(spec, false)?;
    if let (Some(given), Some(path)) = (spec.train.pretrained.clone(), spec.pretrained_path()) {
        if !std::path::Path::new(&given).is_absolute() {
            let full = std::path::absolute(&path)
                .with_context(|| format!("train.pretrained = {given:?}: {}", path.display()))?;
            spec.train.pretrained = Some(full.display().to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use tokio_stream::Stream;

    #[test]
    fn a_stream_reset_on_the_way_is_a_lost_connection_not_a_refusal() {
        let reset = Status::internal("h2 protocol error: stream no longer needed");
        assert!(connection_lost(&reset));
        assert!(connection_lost(&Status::unavailable("connection refused")));
        assert!(!connection_lost(&Status::internal(
            "stored summary: bad JSON"
        )));
        assert!(!connection_lost(&Status::not_found("no experiment")));
    }
    use tonic::{Request, Response, Status};

    /// A coordinator from before `ResultsStream`: it has the one-message
    /// `Results` only (and answers nothing else here).
    struct OldCoordinator;

    type Events = Pin<Box<dyn Stream<Item = Result<v1::ExperimentEvent, Status>> + Send>>;
    type Chunks = Pin<Box<dyn Stream<Item = Result<v1::ResultsChunk, Status>> + Send>>;

    fn absent<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    #[tonic::async_trait]
    impl v1::experiments_server::Experiments for OldCoordinator {
        async fn submit(
            &self,
            _: Request<v1::SubmitRequest>,
        ) -> Result<Response<v1::SubmitResponse>, Status> {
            absent()
        }
        async fn get(
            &self,
            _: Request<v1::GetExperimentRequest>,
        ) -> Result<Response<v1::Experiment>, Status> {
            absent()
        }
        async fn list(
            &self,
            _: Request<v1::ListExperimentsRequest>,
        ) -> Result<Response<v1::ListExperimentsResponse>, Status> {
            absent()
        }
        type WatchStream = Events;
        async fn watch(&self, _: Request<v1::WatchRequest>) -> Result<Response<Events>, Status> {
            absent()
        }
        async fn cancel(
            &self,
            _: Request<v1::CancelRequest>,
        ) -> Result<Response<v1::Experiment>, Status> {
            absent()
        }
        async fn results(
            &self,
            r: Request<v1::ResultsRequest>,
        ) -> Result<Response<v1::ResultsResponse>, Status> {
            Ok(Response::new(v1::ResultsResponse {
                experiment_id: r.get_ref().experiment_id.clone(),
                results_json: format!(
                    "{{\"experiment_id\":\"{}\",\"complete\":true}}",
                    r.get_ref().experiment_id
                ),
            }))
        }
        type ResultsStreamStream = Chunks;
        // What tonic answers for a method the server does not have.
        async fn results_stream(
            &self,
            _: Request<v1::ResultsRequest>,
        ) -> Result<Response<Chunks>, Status> {
            absent()
        }
    }

    #[tokio::test]
    async fn results_come_in_one_message_from_a_coordinator_without_the_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(v1::experiments_server::ExperimentsServer::new(
                    OldCoordinator,
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let plain = ClientSecurity::plaintext();
        let mut c = client_with(&url, &plain, Duration::from_secs(10))
            .await
            .unwrap();
        let doc = fetch_results(&mut c, "e-1").await.unwrap();
        assert_eq!(doc["experiment_id"], "e-1");
        assert_eq!(doc["complete"], true);
    }

    #[test]
    fn the_manifest_and_pretrained_weights_are_sent_as_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let exp = dir.path().join("exp");
        std::fs::create_dir_all(exp.join("data")).unwrap();
        std::fs::create_dir_all(exp.join("weights")).unwrap();
        std::fs::write(exp.join("data/manifest.csv"), "").unwrap();
        std::fs::write(exp.join("weights/r18.safetensors"), "").unwrap();
        let text = "name = \"t\"\n[dataset]\nmanifest = \"data/manifest.csv\"\n\
                    [train]\narch = \"resnet18\"\npretrained = \"weights/r18.safetensors\"\n";
        std::fs::write(exp.join("spec.toml"), text).unwrap();
        let mut spec = load_spec(&exp.join("spec.toml"), &[]).unwrap();
        absolute_paths(&mut spec).unwrap();
        let real = exp.canonicalize().unwrap();
        assert_eq!(
            spec.dataset.manifest,
            real.join("data/manifest.csv").display().to_string()
        );
        let weights = std::path::absolute(exp.join("weights/r18.safetensors")).unwrap();
        assert_eq!(
            spec.train.pretrained.as_deref(),
            Some(weights.display().to_string().as_str())
        );
        // As a worker reads the submitted spec, from any working folder.
        let stored = crossfold_shared::spec::Spec::parse_stored(&spec.to_toml(), "s").unwrap();
        assert_eq!(stored.pretrained_path(), Some(weights));
        // Weights that are not there are named before anything is submitted.
        let mut spec = load_spec(
            &exp.join("spec.toml"),
            &["train.pretrained=\"gone.ot\"".into()],
        )
        .unwrap();
        let err = format!("{:#}", absolute_paths(&mut spec).unwrap_err());
        assert!(
            err.starts_with("train.pretrained = \"gone.ot\": ") && err.contains("exp/gone.ot"),
            "{err}"
        );
        // An absolute path is passed on as written: the weights may be on
        // the workers only.
        let mut spec = load_spec(
            &exp.join("spec.toml"),
            &["train.pretrained=\"/models/r18.safetensors\"".into()],
        )
        .unwrap();
        absolute_paths(&mut spec).unwrap();
        assert_eq!(
            spec.train.pretrained.as_deref(),
            Some("/models/r18.safetensors")
        );
    }

    #[tokio::test]
    async fn a_call_without_an_answer_ends_at_the_limit_naming_it() {
        let never = std::future::pending::<Result<tonic::Response<()>, tonic::Status>>();
        let err = answer_within(Duration::from_millis(50), never)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("within 0.05 s (--timeout, CROSSFOLD_TIMEOUT)"),
            "{err}"
        );
        let refused = async { Err::<tonic::Response<()>, _>(tonic::Status::not_found("x")) };
        let err = answer_within(Duration::from_secs(5), refused)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "NotFound: x");
        let ok = async { Ok(tonic::Response::new(7)) };
        assert_eq!(answer_within(Duration::from_secs(5), ok).await.unwrap(), 7);
    }

    #[test]
    fn dropped_connections_get_a_hint_and_other_errors_none() {
        let plaintext = tonic::Status::internal(
            "h2 protocol error: http2 error: connection error detected: frame with invalid size",
        );
        assert!(rpc_text(&plaintext).contains("the coordinator speaks TLS"));
        let closed = tonic::Status::cancelled("operation was canceled: connection closed");
        let text = rpc_text(&closed);
        assert!(
            text.contains("is it restarting?") && text.contains("--cert and --key"),
            "{text}"
        );
        // hyper's words when the connection closed before the call was sent.
        let not_ready = tonic::Status::cancelled(
            "operation was canceled: transport error: operation was canceled: connection was \
             not ready",
        );
        assert!(rpc_text(&not_ready).contains("--cert and --key"));
        let silent = tonic::Status::unavailable(
            "http2 error: transport error: http2 error: keep-alive timed out: operation timed out",
        );
        assert!(rpc_text(&silent).contains("stopped answering"));
        let missing = tonic::Status::not_found("experiment x not found");
        assert_eq!(rpc_text(&missing), "NotFound: experiment x not found");
        // What the CLI offered decides which explanation comes first.
        assert!(closed_hint(Some(Sent::Tls)).contains("requires a client certificate"));
        assert!(closed_hint(Some(Sent::MutualTls)).contains("refused this client certificate"));
        let plain = closed_hint(Some(Sent::Plaintext));
        assert!(plain.contains("https:// URL and --ca") && !plain.contains("--cert"));
        // The server's own words are not taken for a TLS problem.
        let said = tonic::Status::failed_precondition("invalid peer certificate: UnknownIssuer");
        assert!(!rpc_text(&said).contains("not signed by --ca"));
    }
}
