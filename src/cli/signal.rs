//! Shutdown signals for the long-running commands (`coordinator`, `run`).

/// Resolves with the signal's name on the first SIGTERM, SIGINT (Ctrl-C) or
/// SIGHUP (a closed terminal). Where a handler cannot be installed, that
/// signal keeps its default action (the process ends).
pub async fn shutdown() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind| signal(kind).ok();
    let (mut term, mut int, mut hup) = (
        listen(SignalKind::terminate()),
        listen(SignalKind::interrupt()),
        listen(SignalKind::hangup()),
    );
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = recv(&mut term) => "SIGTERM",
        _ = recv(&mut int) => "SIGINT",
        _ = recv(&mut hup) => "SIGHUP",
    }
}
