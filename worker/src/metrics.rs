//! The worker's Prometheus metrics, served at `--metrics-listen`: job
//! attempts by outcome, jobs running, the current training throughput, and
//! job durations.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct WorkerMetrics {
    registry: Registry,
    pub jobs: Family<OutcomeLabel, Counter>,
    pub running: Gauge,
    pub images_per_second: Gauge<f64, AtomicU64>,
    pub job_duration: Histogram,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerMetrics")
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> WorkerMetrics {
        let mut registry = Registry::with_prefix("crossfold_worker");
        let jobs = Family::<OutcomeLabel, Counter>::default();
        let running = Gauge::default();
        let images_per_second = Gauge::<f64, AtomicU64>::default();
        let job_duration = Histogram::new(exponential_buckets(1.0, 2.0, 18));
        registry.register(
            "jobs",
            "Job attempts by outcome (completed: trained and result sent; failed, dropped, released)",
            jobs.clone(),
        );
        registry.register("running", "Jobs training now", running.clone());
        registry.register(
            "images_per_second",
            "Training throughput of the latest progress report",
            images_per_second.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Time from lease to outcome",
            job_duration.clone(),
        );
        WorkerMetrics {
            registry,
            jobs,
            running,
            images_per_second,
            job_duration,
        }
    }

    pub fn outcome(&self, outcome: &str, seconds: f64) {
        self.jobs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        self.job_duration.observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_gauges_are_encoded() {
        let m = WorkerMetrics::new();
        m.outcome("completed", 12.0);
        m.running.set(1);
        m.images_per_second.set(4390.5);
        let text = m.encode();
        for needle in [
            "crossfold_worker_jobs_total{outcome=\"completed\"} 1",
            "crossfold_worker_running 1",
            "crossfold_worker_images_per_second 4390.5",
            "crossfold_worker_job_duration_seconds_count 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
