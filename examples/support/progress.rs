//! A terminal progress bar (`indicatif`) for model downloads, shared by the example CLIs
//! (`#[path]`-included). Only on a terminal: piped or redirected output stays clean.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use akidb_embedding_onnx::{DownloadProgress, LoadOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// One bar per downloaded file.
struct TerminalBar {
    bar: Mutex<Option<ProgressBar>>,
}

impl DownloadProgress for TerminalBar {
    fn started(&self, file: &str, total_bytes: u64) {
        let bar = ProgressBar::new(total_bytes);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file.to_string());
        if let Ok(mut current) = self.bar.lock() {
            *current = Some(bar);
        }
    }

    fn advanced(&self, bytes: u64) {
        if let Ok(current) = self.bar.lock()
            && let Some(bar) = current.as_ref()
        {
            bar.inc(bytes);
        }
    }

    fn finished(&self) {
        if let Ok(mut current) = self.bar.lock()
            && let Some(bar) = current.take()
        {
            bar.finish();
        }
    }
}

/// `options` with a download progress bar when stderr is a terminal.
pub fn with_progress_bar(options: LoadOptions) -> LoadOptions {
    if std::io::stderr().is_terminal() {
        options.with_download_progress(Arc::new(TerminalBar {
            bar: Mutex::new(None),
        }))
    } else {
        options
    }
}
