//! Service metrics, rendered in the Prometheus text exposition format.
//!
//! - `akidb_http_requests_total{route,status}`: requests answered;
//! - `akidb_http_request_duration_seconds{route}`: latency histogram;
//! - `akidb_batch_size{model}`: texts per provider run (histogram);
//! - `akidb_batch_duration_seconds{model}`: provider run time (histogram);
//! - `akidb_batch_failures_total{model}`: provider runs that failed;
//! - `akidb_tokens_embedded_total{model}`: tokens in successful runs;
//! - `akidb_queue_depth{model}`: requests waiting for a run (gauge);
//! - `akidb_models_ready`: 1 once every model is loaded and warmed up;
//! - `akidb_connections_open`: client connections open now (gauge);
//! - `akidb_connections_total`: client connections accepted.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::batcher::{BatchObserver, BatchReport};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Counters and histograms of one service instance; cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Recorded>,
    connections_accepted: AtomicU64,
    connections_closed: AtomicU64,
}

#[derive(Debug, Default)]
struct Recorded {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batch_sizes: BTreeMap<String, Histogram>,
    batch_durations: BTreeMap<String, Histogram>,
    batch_failures: BTreeMap<String, u64>,
    tokens: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, label: &str, value: &str) {
        let mut cumulative = 0;
        for (index, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let bound = self
                .bounds
                .get(index)
                .map_or_else(|| "+Inf".to_string(), f64::to_string);
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{}\",le=\"{bound}\"}} {cumulative}",
                escape(value)
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{{label}=\"{}\"}} {}",
            escape(value),
            self.sum
        );
        let _ = writeln!(
            out,
            "{name}_count{{{label}=\"{}\"}} {}",
            escape(value),
            self.count
        );
    }
}

impl Metrics {
    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        // Counters stay meaningful after a panic elsewhere: keep counting.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a newly accepted client connection.
    pub fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Ordering::AcqRel);
    }

    /// Records the end of a client connection [`Metrics::connection_opened`] counted.
    pub fn connection_closed(&self) {
        self.connections_closed.fetch_add(1, Ordering::AcqRel);
    }

    /// Client connections open now.
    pub fn connections_open(&self) -> u64 {
        let closed = self.connections_closed.load(Ordering::Acquire);
        self.connections_accepted
            .load(Ordering::Acquire)
            .saturating_sub(closed)
    }

    /// Client connections accepted since start.
    pub fn connections_total(&self) -> u64 {
        self.connections_accepted.load(Ordering::Acquire)
    }

    /// Records one answered HTTP request.
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        let mut recorded = self.recorded();
        *recorded
            .requests
            .entry((route.to_string(), status))
            .or_default() += 1;
        recorded
            .latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// Renders every metric; `queues` gives each model's current queue depth.
    pub fn render<'a>(
        &self,
        ready: bool,
        queues: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> String {
        let recorded = self.recorded();
        let mut out = String::new();
        header(
            &mut out,
            "akidb_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status code.",
        );
        for ((route, status), count) in &recorded.requests {
            let _ = writeln!(
                out,
                "akidb_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        histograms(
            &mut out,
            "akidb_http_request_duration_seconds",
            "HTTP request latency, by route.",
            "route",
            &recorded.latency,
        );
        histograms(
            &mut out,
            "akidb_batch_size",
            "Texts per provider run, by model.",
            "model",
            &recorded.batch_sizes,
        );
        histograms(
            &mut out,
            "akidb_batch_duration_seconds",
            "Provider run time, by model.",
            "model",
            &recorded.batch_durations,
        );
        counters(
            &mut out,
            "akidb_batch_failures_total",
            "Provider runs that failed, by model.",
            &recorded.batch_failures,
        );
        counters(
            &mut out,
            "akidb_tokens_embedded_total",
            "Tokens embedded by successful provider runs, by model.",
            &recorded.tokens,
        );
        header(
            &mut out,
            "akidb_queue_depth",
            "gauge",
            "Requests waiting for a provider run, by model.",
        );
        for (model, depth) in queues {
            let _ = writeln!(
                out,
                "akidb_queue_depth{{model=\"{}\"}} {depth}",
                escape(model)
            );
        }
        header(
            &mut out,
            "akidb_models_ready",
            "gauge",
            "1 once every model is loaded and warmed up.",
        );
        let _ = writeln!(out, "akidb_models_ready {}", u8::from(ready));
        header(
            &mut out,
            "akidb_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(out, "akidb_connections_open {}", self.connections_open());
        header(
            &mut out,
            "akidb_connections_total",
            "counter",
            "Client connections accepted.",
        );
        let _ = writeln!(out, "akidb_connections_total {}", self.connections_total());
        out
    }
}

impl BatchObserver for Metrics {
    fn batch_ran(&self, report: &BatchReport<'_>) {
        let mut recorded = self.recorded();
        let model = report.model.to_string();
        recorded
            .batch_sizes
            .entry(model.clone())
            .or_insert_with(|| Histogram::new(BATCH_SIZE_BUCKETS))
            .observe(report.texts as f64);
        recorded
            .batch_durations
            .entry(model.clone())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(report.elapsed.as_secs_f64());
        if report.succeeded {
            *recorded.tokens.entry(model).or_default() += report.tokens as u64;
        } else {
            *recorded.batch_failures.entry(model).or_default() += 1;
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    by_label: &BTreeMap<String, Histogram>,
) {
    header(out, name, "histogram", help);
    for (value, histogram) in by_label {
        histogram.render(out, name, label, value);
    }
}

fn counters(out: &mut String, name: &str, help: &str, by_model: &BTreeMap<String, u64>) {
    header(out, name, "counter", help);
    for (model, count) in by_model {
        let _ = writeln!(out, "{name}{{model=\"{}\"}} {count}", escape(model));
    }
}

/// Escapes a label value as the exposition format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::default();
        metrics.observe_request("/api/v1/embed", 200, Duration::from_millis(3));
        metrics.observe_request("/api/v1/embed", 200, Duration::from_millis(40));
        metrics.observe_request("/api/v1/embed", 422, Duration::from_millis(1));
        metrics.batch_ran(&BatchReport {
            model: "m\"x",
            requests: 2,
            texts: 3,
            tokens: 12,
            elapsed: Duration::from_millis(5),
            succeeded: true,
        });
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        let text = metrics.render(true, [("m\"x", 4)]);
        assert!(
            text.contains("akidb_http_requests_total{route=\"/api/v1/embed\",status=\"200\"} 2")
        );
        assert!(
            text.contains("akidb_http_requests_total{route=\"/api/v1/embed\",status=\"422\"} 1")
        );
        assert!(text.contains(
            "akidb_http_request_duration_seconds_bucket{route=\"/api/v1/embed\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "akidb_http_request_duration_seconds_bucket{route=\"/api/v1/embed\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("akidb_batch_size_bucket{model=\"m\\\"x\",le=\"2\"} 0"));
        assert!(text.contains("akidb_batch_size_bucket{model=\"m\\\"x\",le=\"4\"} 1"));
        assert!(text.contains("akidb_tokens_embedded_total{model=\"m\\\"x\"} 12"));
        assert!(text.contains("akidb_queue_depth{model=\"m\\\"x\"} 4"));
        assert!(text.contains("akidb_models_ready 1"));
        assert!(text.contains("akidb_connections_open 1\n"));
        assert!(text.contains("akidb_connections_total 2\n"));
    }
}
