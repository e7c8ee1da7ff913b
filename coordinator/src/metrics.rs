//! The coordinator's Prometheus metrics: jobs by state, leases granted and
//! expired, attempts by outcome, job durations, workers connected, each
//! worker's training throughput, and gRPC calls by method and code with
//! their latency (a tower layer on the server).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every gRPC method the coordinator serves. Calls to any other path are
/// counted as `other`, so clients (before authentication) cannot grow the
/// label set.
pub const KNOWN_METHODS: &[&str] = &[
    "/crossfold.v1.Experiments/Submit",
    "/crossfold.v1.Experiments/Get",
    "/crossfold.v1.Experiments/List",
    "/crossfold.v1.Experiments/Watch",
    "/crossfold.v1.Experiments/Cancel",
    "/crossfold.v1.Experiments/Results",
    "/crossfold.v1.Experiments/ResultsStream",
    "/crossfold.v1.Workers/Register",
    "/crossfold.v1.Workers/Lease",
    "/crossfold.v1.Workers/Heartbeat",
    "/crossfold.v1.Workers/Complete",
    "/crossfold.v1.Workers/Fail",
    "/crossfold.v1.Workers/Release",
    "/crossfold.v1.Data/FetchFile",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

/// The `method` label of a request path.
pub fn method_label(path: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("other")
}

fn duration_buckets() -> Histogram {
    // 1 s .. about 36 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 18))
}

fn latency_buckets() -> Histogram {
    // 0.5 ms .. about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub jobs: Family<StateLabel, Gauge>,
    pub leases_granted: Counter,
    pub leases_expired: Counter,
    pub attempts: Family<OutcomeLabel, Counter>,
    pub job_duration: HistogramFamily<TaskLabel>,
    pub workers_connected: Gauge,
    pub worker_images_per_second: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
    pub grpc_calls: Family<CallLabels, Counter>,
    pub grpc_latency: HistogramFamily<MethodLabel>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("crossfold");
        let m = Metrics {
            jobs: Family::default(),
            leases_granted: Counter::default(),
            leases_expired: Counter::default(),
            attempts: Family::default(),
            job_duration: Family::new_with_constructor(duration_buckets),
            workers_connected: Gauge::default(),
            worker_images_per_second: Family::default(),
            grpc_calls: Family::default(),
            grpc_latency: Family::new_with_constructor(latency_buckets),
            registry: Registry::default(),
        };
        registry.register("jobs", "Jobs by state (all experiments)", m.jobs.clone());
        registry.register(
            "leases_granted",
            "Leases granted to workers",
            m.leases_granted.clone(),
        );
        registry.register(
            "leases_expired",
            "Leases that ended without a result: expired, stalled or over the time limit",
            m.leases_expired.clone(),
        );
        registry.register(
            "attempts",
            "Job attempts by outcome (succeeded, failed, released, reaped, cancelled)",
            m.attempts.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Time from lease to committed result, by task",
            m.job_duration.clone(),
        );
        registry.register(
            "workers_connected",
            "Workers heard from within one lease time-to-live",
            m.workers_connected.clone(),
        );
        registry.register(
            "worker_images_per_second",
            "Training throughput each worker last reported",
            m.worker_images_per_second.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            m.grpc_calls.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency until the response headers, by method",
            m.grpc_latency.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn attempt(&self, outcome: &str) {
        self.attempts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Set the job-state gauges to `counts` (every state named, zeros too).
    pub fn set_jobs(&self, counts: &[(&str, i64)]) {
        for (state, n) in counts {
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(*n);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Tower layer counting gRPC calls by method and code, and timing them.
/// The code is read from the response headers: errors returned by a
/// handler arrive there (trailers-only responses); a stream that fails
/// after it started is counted by its headers, as OK.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The gRPC status code name of a response (`OK` when the headers carry none).
pub fn code_of(headers: &http::HeaderMap) -> String {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok);
    format!("{code:?}")
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path()).to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => code_of(r.headers()),
                Err(_) => "Transport".to_string(),
            };
            metrics
                .grpc_latency
                .get_or_create(&MethodLabel {
                    method: method.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            metrics
                .grpc_calls
                .get_or_create(&CallLabels { method, code })
                .inc();
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_the_prefix() {
        let m = Metrics::new();
        m.leases_granted.inc();
        m.attempt("succeeded");
        m.set_jobs(&[("pending", 3), ("leased", 1)]);
        m.job_duration
            .get_or_create(&TaskLabel {
                task: "screening".into(),
            })
            .observe(4.5);
        let text = m.encode();
        for needle in [
            "crossfold_leases_granted_total 1",
            "crossfold_attempts_total{outcome=\"succeeded\"} 1",
            "crossfold_jobs{state=\"pending\"} 3",
            "crossfold_job_duration_seconds_count{task=\"screening\"} 1",
            "crossfold_workers_connected 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[test]
    fn every_rpc_of_the_protocol_is_a_known_method() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/crossfold/v1");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            let mut service = "";
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().unwrap();
                }
                if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap().trim();
                    let path = format!("/crossfold.v1.{service}/{method}");
                    assert_eq!(method_label(&path), path, "{path} is not in KNOWN_METHODS");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 14);
        assert_eq!(method_label("/x.Y/Z"), "other");
        assert_eq!(method_label("/crossfold.v1.Workers/lease"), "other");
    }

    #[test]
    fn grpc_codes_come_from_the_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_of(&h), "Ok");
        h.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(code_of(&h), "Unauthenticated");
    }
}
