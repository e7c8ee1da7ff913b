//! A plain-HTTP `/metrics` endpoint (Prometheus / OpenMetrics text), served
//! beside the gRPC port by the coordinator and by workers.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// OpenMetrics text, as `prometheus-client` encodes it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; more are closed at once (a scraper needs one).
pub const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this time...
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// ...and a connection lives at most this long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Serve `GET /metrics` on `listener` until `shutdown`, answering with what
/// `render` returns at that moment. Any other path is 404. Slow or idle
/// clients are cut off ([`HEADER_TIMEOUT`], [`CONNECTION_TIMEOUT`]) and at
/// most [`MAX_CONNECTIONS`] are served at once.
pub async fn serve<F, Fut>(listener: TcpListener, render: F, shutdown: impl Future<Output = ()>)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("metrics: too many connections; closing one");
            drop(stream);
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(respond(req, render).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics: connection ended"),
                Err(_) => tracing::debug!("metrics: connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn respond<F, Fut, B>(req: Request<B>, render: F) -> Response<Full<Bytes>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let mut builder = Response::builder();
    let method = req.method();
    let body = if req.uri().path() == "/metrics" && method == hyper::Method::HEAD {
        // What GET would answer, without the body (curl -I, probes).
        builder = builder.header(hyper::header::CONTENT_TYPE, CONTENT_TYPE);
        String::new()
    } else if req.uri().path() == "/metrics" && method == hyper::Method::GET {
        builder = builder.header(hyper::header::CONTENT_TYPE, CONTENT_TYPE);
        render().await
    } else {
        builder = builder.status(StatusCode::NOT_FOUND);
        "not found: metrics are at GET /metrics\n".to_string()
    };
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        request(addr, "GET", path).await
    }

    async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_404_elsewhere() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            || async { "# TYPE up gauge\nup 1\n# EOF\n".to_string() },
            async {
                let _ = rx.await;
            },
        ));
        let ok = get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("openmetrics-text") && ok.contains("up 1"),
            "{ok}"
        );
        let missing = get(addr, "/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let head = request(addr, "HEAD", "/metrics").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.contains("openmetrics-text") && !head.contains("up 1"),
            "{head}"
        );
        tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
