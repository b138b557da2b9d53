//! Service metrics, recorded through the `metrics` crate and rendered in the Prometheus text
//! exposition format by `metrics-exporter-prometheus` (one recorder per service instance, so
//! servers in one process never mix their figures).
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
//! - `akidb_connections_total`: client connections accepted;
//! - `akidb_request_queue_duration_seconds{route}`, `akidb_request_tokenization_duration_seconds{route}`,
//!   `akidb_request_inference_duration_seconds{route}`: where an embedding request's time went
//!   (histograms, the same figures as the `x-*-time` headers);
//! - `akidb_request_input_tokens{route}`: tokens per embedding request (histogram);
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_virtual_memory_bytes`, `process_open_fds`, `process_threads`,
//!   `process_start_time_seconds`: the process (Linux; read from `/proc/self` at each scrape).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::engine::batcher::{BatchObserver, BatchReport};
use crate::engine::timings::Timings;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const TOKEN_BUCKETS: &[f64] = &[
    8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 16384.0, 65536.0,
];

/// Counters and histograms of one service instance; cheap to update from any task.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    connections_accepted: AtomicU64,
    connections_closed: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("connections_open", &self.connections_open())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("akidb_batch_size".to_string()),
                    BATCH_SIZE_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("akidb_request_input_tokens".to_string()),
                    TOKEN_BUCKETS,
                )
            });
        // The bucket lists above are constant and non-empty, the only thing the builder checks.
        let recorder = match builder {
            Ok(builder) => builder.build_recorder(),
            Err(error) => {
                tracing::error!(%error, "metric buckets refused; histograms become summaries");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let handle = recorder.handle();
        let metrics = Self {
            recorder,
            handle,
            connections_accepted: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
        };
        metrics.describe();
        metrics
    }
}

impl Metrics {
    fn describe(&self) {
        with_local_recorder(&self.recorder, || {
            use metrics::{describe_counter, describe_gauge, describe_histogram};
            describe_counter!(
                "akidb_http_requests_total",
                "HTTP requests answered, by route and status code."
            );
            describe_histogram!(
                "akidb_http_request_duration_seconds",
                "HTTP request latency, by route."
            );
            describe_histogram!("akidb_batch_size", "Texts per provider run, by model.");
            describe_histogram!(
                "akidb_batch_duration_seconds",
                "Provider run time, by model."
            );
            describe_counter!(
                "akidb_batch_failures_total",
                "Provider runs that failed, by model."
            );
            describe_counter!(
                "akidb_tokens_embedded_total",
                "Tokens embedded by successful provider runs, by model."
            );
            describe_gauge!(
                "akidb_queue_depth",
                "Requests waiting for a provider run, by model."
            );
            describe_gauge!(
                "akidb_models_ready",
                "1 once every model is loaded and warmed up."
            );
            describe_gauge!("akidb_connections_open", "Client connections open now.");
            describe_counter!("akidb_connections_total", "Client connections accepted.");
            describe_histogram!(
                "akidb_request_queue_duration_seconds",
                "Time embedding requests waited for a model run, by route."
            );
            describe_histogram!(
                "akidb_request_tokenization_duration_seconds",
                "Time spent tokenising embedding requests before they queued, by route."
            );
            describe_histogram!(
                "akidb_request_inference_duration_seconds",
                "Time of the model runs that embedded each request, by route."
            );
            describe_histogram!(
                "akidb_request_input_tokens",
                "Tokens per embedding request (prompts and special tokens included), by route."
            );
            describe_counter!(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds."
            );
            describe_gauge!(
                "process_resident_memory_bytes",
                "Resident memory size in bytes."
            );
            describe_gauge!(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes."
            );
            describe_gauge!("process_open_fds", "Number of open file descriptors.");
            describe_gauge!("process_threads", "Number of OS threads in the process.");
            describe_gauge!(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds."
            );
        });
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
        with_local_recorder(&self.recorder, || {
            counter!("akidb_http_requests_total", "route" => route.to_string(), "status" => status.to_string())
                .increment(1);
            histogram!("akidb_http_request_duration_seconds", "route" => route.to_string())
                .record(elapsed.as_secs_f64());
        });
    }

    /// Records where an embedding request's time went, and its size in tokens.
    pub fn observe_timings(&self, route: &str, timings: &Timings) {
        with_local_recorder(&self.recorder, || {
            let route = route.to_string();
            histogram!("akidb_request_queue_duration_seconds", "route" => route.clone())
                .record(timings.queue().as_secs_f64());
            histogram!("akidb_request_tokenization_duration_seconds", "route" => route.clone())
                .record(timings.tokenization().as_secs_f64());
            histogram!("akidb_request_inference_duration_seconds", "route" => route.clone())
                .record(timings.inference().as_secs_f64());
            histogram!("akidb_request_input_tokens", "route" => route)
                .record(timings.tokens() as f64);
        });
    }

    /// Renders every metric; `queues` gives each model's current queue depth.
    pub fn render<'a>(
        &self,
        ready: bool,
        queues: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> String {
        with_local_recorder(&self.recorder, || {
            for (model, depth) in queues {
                gauge!("akidb_queue_depth", "model" => model.to_string()).set(depth as f64);
            }
            gauge!("akidb_models_ready").set(if ready { 1.0 } else { 0.0 });
            gauge!("akidb_connections_open").set(self.connections_open() as f64);
            counter!("akidb_connections_total").absolute(self.connections_total());
            record_process_metrics();
        });
        self.handle.render()
    }
}

impl BatchObserver for Metrics {
    fn batch_ran(&self, report: &BatchReport<'_>) {
        with_local_recorder(&self.recorder, || {
            let model = report.model.to_string();
            histogram!("akidb_batch_size", "model" => model.clone()).record(report.texts as f64);
            histogram!("akidb_batch_duration_seconds", "model" => model.clone())
                .record(report.elapsed.as_secs_f64());
            if report.succeeded {
                counter!("akidb_tokens_embedded_total", "model" => model)
                    .increment(report.tokens as u64);
            } else {
                counter!("akidb_batch_failures_total", "model" => model).increment(1);
            }
        });
    }
}

/// Sets the `process_*` series from `/proc/self` (nothing where it does not exist).
fn record_process_metrics() {
    let Some(process) = ProcessFigures::read() else {
        return;
    };
    counter!("process_cpu_seconds_total").absolute(process.cpu_seconds as u64);
    gauge!("process_resident_memory_bytes").set(process.resident_bytes as f64);
    gauge!("process_virtual_memory_bytes").set(process.virtual_bytes as f64);
    gauge!("process_threads").set(process.threads as f64);
    gauge!("process_start_time_seconds").set(process.start_time_seconds);
    if let Some(fds) = process.open_fds {
        gauge!("process_open_fds").set(fds as f64);
    }
}

/// The process's figures as `/proc/self/stat` gives them.
#[derive(Debug, Clone, PartialEq)]
struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: f64,
    open_fds: Option<u64>,
}

/// Clock ticks per second: `USER_HZ`, 100 on the Linux platforms the service ships for (x86-64,
/// arm64), whatever the kernel's internal tick rate.
const CLOCK_TICKS: f64 = 100.0;

/// The size of a memory page, in bytes, by which `/proc/self/stat` counts resident memory:
/// 4 KiB on x86-64, but 16 or 64 KiB on some arm64 kernels, so it is asked of the system.
///
/// `sysconf` through `libc` (already a dependency for `malloc_trim`) rather than the
/// `metrics-process` crate: that crate would replace the whole `/proc` reader with one more
/// dependency tree for the same series, and ours is small and tested.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn page_size() -> u64 {
    // SAFETY: `sysconf` takes a plain integer, reads a constant of the C library and touches
    // no memory of ours; it is safe to call from any thread.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|size| *size > 0)
        .unwrap_or(FALLBACK_PAGE_SIZE)
}

/// Where `libc` is not a dependency (musl, other systems): the common page size.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn page_size() -> u64 {
    FALLBACK_PAGE_SIZE
}

/// The page size assumed when the system cannot tell.
const FALLBACK_PAGE_SIZE: u64 = 4096;

impl ProcessFigures {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let mut figures = Self::parse_stat(&stat, boot_time, page_size())?;
        figures.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        Some(figures)
    }

    /// Parses `/proc/self/stat` (fields after the parenthesised command name); resident
    /// memory is counted in pages of `page_size` bytes.
    fn parse_stat(stat: &str, boot_time: f64, page_size: u64) -> Option<Self> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field n is fields[n - 3].
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|value| value.parse::<u64>().ok())
        };
        let ticks = field(14)? + field(15)?;
        Some(Self {
            cpu_seconds: ticks as f64 / CLOCK_TICKS,
            threads: field(20)?,
            start_time_seconds: boot_time + field(22)? as f64 / CLOCK_TICKS,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(page_size),
            open_fds: None,
        })
    }
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
            text.contains("akidb_http_requests_total{route=\"/api/v1/embed\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("akidb_http_requests_total{route=\"/api/v1/embed\",status=\"422\"} 1")
        );
        assert!(
            text.contains(
                "akidb_http_request_duration_seconds_bucket{route=\"/api/v1/embed\",le=\"0.005\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "akidb_http_request_duration_seconds_bucket{route=\"/api/v1/embed\",le=\"+Inf\"} 3"
        ));
        assert!(
            text.contains("akidb_batch_size_bucket{model=\"m\\\"x\",le=\"2\"} 0"),
            "{text}"
        );
        assert!(text.contains("akidb_batch_size_bucket{model=\"m\\\"x\",le=\"4\"} 1"));
        assert!(text.contains("akidb_tokens_embedded_total{model=\"m\\\"x\"} 12"));
        assert!(text.contains("akidb_queue_depth{model=\"m\\\"x\"} 4"));
        assert!(text.contains("akidb_models_ready 1"));
        assert!(text.contains("akidb_connections_open 1\n"));
        assert!(text.contains("akidb_connections_total 2\n"));
        assert!(text.contains("# TYPE akidb_http_request_duration_seconds histogram"));
    }

    #[test]
    fn process_figures_parse_from_proc_stat() {
        let stat = "42 (akidb rest) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 123456789 2048 18446744073709551615";
        let figures = ProcessFigures::parse_stat(stat, 1_700_000_000.0, 4096).unwrap();
        assert_eq!(figures.cpu_seconds, 3.0);
        assert_eq!(figures.threads, 7);
        assert_eq!(figures.start_time_seconds, 1_700_000_010.0);
        assert_eq!(figures.virtual_bytes, 123_456_789);
        assert_eq!(figures.resident_bytes, 2048 * 4096);
        // With 64 KiB pages (some arm64 kernels) the same count is sixteen times the bytes.
        let large = ProcessFigures::parse_stat(stat, 1_700_000_000.0, 65_536).unwrap();
        assert_eq!(large.resident_bytes, 2048 * 65_536);
        assert!(page_size().is_power_of_two() && page_size() >= 4096);
        if cfg!(target_os = "linux") {
            assert!(ProcessFigures::read().is_some_and(|f| f.resident_bytes > 0));
        }
    }
}
