//! What the service tells about models while they load: each model's state for `/health`,
//! and download progress in the log every few seconds (bytes, rate, ETA), so a 1.2 GB fetch
//! never looks like a hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use akidb_embedding_onnx::DownloadProgress;
use serde::Serialize;

/// How often a download in progress is logged.
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(3);

/// Where one configured model is on its way to serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// Not started yet (models load one after another).
    Pending,
    /// Fetching files from the hub.
    Downloading,
    /// Building the tokenizer and the ONNX Runtime session, warming up.
    Loading,
    /// Serving requests.
    Ready,
    /// Could not be loaded; the service stops.
    Failed,
}

/// One configured model's state, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStatus {
    /// The model as configured (`AKIDB_EMBEDDING_MODEL` entry).
    pub model: String,
    /// Its state.
    pub state: ModelState,
    /// Bytes downloaded so far (while downloading).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded_bytes: Option<u64>,
    /// Size of the file being downloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The states of every configured model; shared by the loader and `/health`.
#[derive(Debug, Default)]
pub struct LoadStatus {
    models: Mutex<Vec<ModelStatus>>,
}

impl LoadStatus {
    /// Every model of `models` pending.
    pub fn new(models: &[String]) -> Self {
        Self {
            models: Mutex::new(
                models
                    .iter()
                    .map(|model| ModelStatus {
                        model: model.clone(),
                        state: ModelState::Pending,
                        downloaded_bytes: None,
                        total_bytes: None,
                        error: None,
                    })
                    .collect(),
            ),
        }
    }

    /// A copy of every model's state, in configuration order.
    pub fn snapshot(&self) -> Vec<ModelStatus> {
        self.models
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, model: &str, change: impl FnOnce(&mut ModelStatus)) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        match models.iter_mut().find(|status| status.model == model) {
            Some(status) => change(status),
            None => {
                let mut status = ModelStatus {
                    model: model.to_string(),
                    state: ModelState::Pending,
                    downloaded_bytes: None,
                    total_bytes: None,
                    error: None,
                };
                change(&mut status);
                models.push(status);
            }
        }
    }

    /// Records `model`'s new state (download figures are dropped once it leaves downloading).
    pub fn set(&self, model: &str, state: ModelState) {
        self.update(model, |status| {
            status.state = state;
            if state != ModelState::Downloading {
                status.downloaded_bytes = None;
                status.total_bytes = None;
            }
        });
    }

    /// Records that `model` failed, and why.
    pub fn fail(&self, model: &str, error: &str) {
        self.update(model, |status| {
            status.state = ModelState::Failed;
            status.error = Some(error.to_string());
        });
    }

    /// Marks every model ready.
    pub fn all_ready(&self) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        for status in models.iter_mut() {
            status.state = ModelState::Ready;
        }
    }
}

/// Logs a model's downloads every [`PROGRESS_LOG_INTERVAL`] and keeps its `/health` state.
pub struct DownloadLogger {
    model: String,
    status: Arc<LoadStatus>,
    interval: Duration,
    file: Mutex<FileProgress>,
    bytes: AtomicU64,
}

#[derive(Debug)]
struct FileProgress {
    name: String,
    total: u64,
    started: Instant,
    last_log: Instant,
}

impl DownloadLogger {
    /// A logger for `model`'s downloads, logging every `interval`.
    pub fn new(model: &str, status: Arc<LoadStatus>, interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            model: model.to_string(),
            status,
            interval,
            file: Mutex::new(FileProgress {
                name: String::new(),
                total: 0,
                started: now,
                last_log: now,
            }),
            bytes: AtomicU64::new(0),
        }
    }

    fn log(&self, file: &FileProgress, done: u64, finished: bool) {
        let elapsed = file.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let eta_s = if rate > 0.0 {
            file.total.saturating_sub(done) as f64 / rate
        } else {
            f64::INFINITY
        };
        let percent = if file.total > 0 {
            100.0 * done as f64 / file.total as f64
        } else {
            100.0
        };
        if finished {
            tracing::info!(
                model = %self.model,
                file = %file.name,
                bytes = done,
                elapsed_ms = (elapsed * 1000.0) as u64,
                rate_mb_s = format!("{:.2}", rate / 1e6),
                "download finished"
            );
        } else {
            tracing::info!(
                model = %self.model,
                file = %file.name,
                bytes = done,
                total_bytes = file.total,
                percent = format!("{percent:.1}"),
                rate_mb_s = format!("{:.2}", rate / 1e6),
                eta_s = format!("{eta_s:.0}"),
                "downloading"
            );
        }
    }
}

impl DownloadProgress for DownloadLogger {
    fn started(&self, file: &str, total_bytes: u64) {
        let now = Instant::now();
        let mut progress = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        *progress = FileProgress {
            name: file.to_string(),
            total: total_bytes,
            started: now,
            last_log: now,
        };
        self.bytes.store(0, Ordering::Release);
        tracing::info!(model = %self.model, file, total_bytes, "download started");
        self.status.update(&self.model, |status| {
            status.state = ModelState::Downloading;
            status.downloaded_bytes = Some(0);
            status.total_bytes = Some(total_bytes);
        });
    }

    fn advanced(&self, bytes: u64) {
        let done = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.status.update(&self.model, |status| {
            status.downloaded_bytes = Some(done);
        });
        let mut progress = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if progress.last_log.elapsed() >= self.interval {
            progress.last_log = Instant::now();
            self.log(&progress, done, false);
        }
    }

    fn finished(&self) {
        let done = self.bytes.load(Ordering::Acquire);
        let progress = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        self.log(&progress, done, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_moves_the_model_through_its_states() {
        let status = Arc::new(LoadStatus::new(&["m".to_string()]));
        let logger = DownloadLogger::new("m", Arc::clone(&status), Duration::ZERO);
        logger.started("onnx/model.onnx", 10);
        logger.advanced(4);
        let snapshot = status.snapshot();
        assert_eq!(snapshot[0].state, ModelState::Downloading);
        assert_eq!(snapshot[0].downloaded_bytes, Some(4));
        assert_eq!(snapshot[0].total_bytes, Some(10));
        logger.finished();
        status.set("m", ModelState::Loading);
        assert_eq!(status.snapshot()[0].downloaded_bytes, None);
        status.fail("m", "boom");
        assert_eq!(status.snapshot()[0].state, ModelState::Failed);
        assert_eq!(status.snapshot()[0].error.as_deref(), Some("boom"));
    }
}
