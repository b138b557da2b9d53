//! How ONNX Runtime reaches a model's split weights (`model.onnx_data`).
//!
//! ONNX Runtime maps external weights into memory instead of reading them into the heap,
//! which keeps resident memory low (pages are shared with the page cache and can be dropped
//! under pressure). A mapping has one hazard: if another process truncates the mapped file
//! *in place* (`cp new.onnx_data model.onnx_data`, `truncate`, a half-finished download over
//! the old file), the next run touches pages that no longer exist and the kernel kills the
//! whole process with `SIGBUS`.
//!
//! [`WeightsMapping::PrivateCopy`], the default, closes that hazard without giving up the
//! mapping: before the session is built, the graph and its weights are copied into a private
//! folder that only this process knows, ONNX Runtime maps the copy, and the copy is unlinked
//! as soon as the session holds it. Nothing outside the process can reach an unlinked file,
//! so later changes to the model folder cannot touch the running model; the disk space is
//! returned when the process exits. On file systems with reflinks (btrfs, XFS) the copy is
//! a metadata operation; elsewhere it costs one sequential read and write of the weights at
//! load. [`WeightsMapping::InPlace`] skips the copy for deployments that only ever replace
//! model files by rename.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use akidb_embedding_core::{EmbeddingError, Result};

/// Prefix of the private folders; [`PrivateWeights::create`] removes those a dead process
/// left behind.
const COPY_PREFIX: &str = ".akidb-weights-";

/// How ONNX Runtime reaches split weights (`model.onnx_data`); models whose weights are
/// inside `model.onnx` are read into memory by ONNX Runtime either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsMapping {
    /// Map a private, unlinked copy made at load (the default): the running model cannot be
    /// harmed by later changes to the model folder. See the [module docs](self).
    #[default]
    PrivateCopy,
    /// Map the model folder's file itself: no copy at load, but the file must never be
    /// modified in place while the model is loaded (replacing it by rename is safe), or the
    /// process dies with `SIGBUS`.
    InPlace,
}

impl std::str::FromStr for WeightsMapping {
    type Err = String;

    /// Parses `private-copy` or `in-place`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "private-copy" => Ok(Self::PrivateCopy),
            "in-place" => Ok(Self::InPlace),
            other => Err(format!(
                "unknown weights mapping `{other}` (expected `private-copy` or `in-place`)"
            )),
        }
    }
}

/// A private copy of a graph and its split weights, removed from the file system on drop
/// (the mapping ONNX Runtime made of it stays valid until the session is dropped).
#[derive(Debug)]
pub struct PrivateWeights {
    dir: PathBuf,
    onnx: PathBuf,
}

impl PrivateWeights {
    /// Copies `onnx` and `data` (its external-weights file) into a new private folder.
    ///
    /// The folder is made in `dir` when given; otherwise beside `onnx` (same file system, so a
    /// reflink where the file system has them), and in the system's temporary folder when the
    /// model folder is read-only. A temporary folder on `tmpfs` keeps the copy in memory for
    /// as long as the model is loaded: name a folder on disk for large models there.
    pub fn create(onnx: &Path, data: &Path, dir: Option<&Path>) -> Result<Self> {
        let candidates: Vec<PathBuf> = match dir {
            Some(dir) => vec![dir.to_path_buf()],
            None => {
                let beside = onnx
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                vec![beside.to_path_buf(), std::env::temp_dir()]
            }
        };
        let mut failures = Vec::new();
        for base in &candidates {
            match Self::create_in(base, onnx, data) {
                Ok(copy) => return Ok(copy),
                Err(e) => {
                    tracing::debug!(folder = %base.display(), error = %e, "cannot copy the weights here");
                    failures.push(format!("{}: {e}", base.display()));
                }
            }
        }
        Err(EmbeddingError::model_load(
            data.display(),
            format!(
                "cannot make the private copy of the weights that protects the running model from \
                 later changes to its files ({}); name a writable folder with enough space \
                 (LoadOptions::with_weights_copy_dir, AKIDB_WEIGHTS_COPY_DIR), or map the files in \
                 place (WeightsMapping::InPlace, AKIDB_WEIGHTS_MAPPING=in-place) if they are only \
                 ever replaced by rename",
                failures.join("; ")
            ),
        ))
    }

    fn create_in(base: &Path, onnx: &Path, data: &Path) -> std::io::Result<Self> {
        remove_stale(base);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = base.join(format!(
            "{COPY_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        // From here on, dropping `copy` removes the folder, also when a copy below fails.
        let mut copy = Self {
            onnx: PathBuf::new(),
            dir,
        };
        copy.onnx = copy_into(onnx, &copy.dir)?;
        let copied_data = copy_into(data, &copy.dir)?;
        tracing::debug!(
            weights = %data.display(),
            copy = %copied_data.display(),
            "split weights copied; the session maps the private copy"
        );
        Ok(copy)
    }

    /// The copied graph: build the session from this path, then drop `self`.
    pub fn onnx(&self) -> &Path {
        &self.onnx
    }
}

impl Drop for PrivateWeights {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(folder = %self.dir.display(), error = %e, "cannot remove the private copy of the weights");
        }
    }
}

/// Copies `file` into `dir` under its own name (the graph names its weights file relative to
/// itself). `std::fs::copy` clones extents where the file system can.
fn copy_into(file: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    let name = file.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} has no file name", file.display()),
        )
    })?;
    let target = dir.join(name);
    std::fs::copy(file, &target)?;
    Ok(target)
}

/// Removes private copies whose process is gone (a process killed while loading leaves its
/// folder behind). Only on Linux, where `/proc` tells whether a process id is alive.
fn remove_stale(base: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(COPY_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(folder = %path.display(), "removed a private weights copy left by a dead process");
                }
                Err(e) => {
                    tracing::debug!(folder = %path.display(), error = %e, "cannot remove a stale weights copy");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("akidb-weights-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn copies_beside_the_model_and_removes_the_copy_on_drop() {
        let dir = scratch("beside");
        std::fs::write(dir.join("model.onnx"), b"graph").unwrap();
        std::fs::write(dir.join("model.onnx_data"), b"weights").unwrap();
        let copy =
            PrivateWeights::create(&dir.join("model.onnx"), &dir.join("model.onnx_data"), None)
                .unwrap();
        let private = copy.onnx().parent().unwrap().to_path_buf();
        assert_eq!(private.parent().unwrap(), dir);
        assert_eq!(std::fs::read(copy.onnx()).unwrap(), b"graph");
        assert_eq!(
            std::fs::read(private.join("model.onnx_data")).unwrap(),
            b"weights"
        );
        // The original can now be truncated without touching the copy.
        std::fs::write(dir.join("model.onnx_data"), b"").unwrap();
        assert_eq!(
            std::fs::read(private.join("model.onnx_data")).unwrap(),
            b"weights"
        );
        drop(copy);
        assert!(!private.exists(), "the private copy outlived its guard");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_copy_names_every_folder_tried_and_leaves_nothing_behind() {
        let dir = scratch("failed");
        std::fs::write(dir.join("model.onnx"), b"graph").unwrap();
        let target = dir.join("target");
        std::fs::create_dir(&target).unwrap();
        // The weights file is missing: the copy fails after the folder was made.
        let err = PrivateWeights::create(
            &dir.join("model.onnx"),
            &dir.join("model.onnx_data"),
            Some(&target),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&target.display().to_string()), "{text}");
        assert!(text.contains("AKIDB_WEIGHTS_COPY_DIR"), "{text}");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stale_copies_of_dead_processes_are_removed() {
        let dir = scratch("stale");
        // Process ids are below 2^22 on Linux: this one cannot be alive.
        let stale = dir.join(format!("{COPY_PREFIX}4294967294-0"));
        let own = dir.join(format!("{COPY_PREFIX}{}-999", std::process::id()));
        let unrelated = dir.join("keep-me");
        for d in [&stale, &own, &unrelated] {
            std::fs::create_dir(d).unwrap();
        }
        remove_stale(&dir);
        assert_eq!(stale.exists(), !cfg!(target_os = "linux"));
        assert!(own.exists() && unrelated.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn parses_the_two_names() {
        assert_eq!("private-copy".parse(), Ok(WeightsMapping::PrivateCopy));
        assert_eq!("in-place".parse(), Ok(WeightsMapping::InPlace));
        assert!("mmap".parse::<WeightsMapping>().is_err());
    }
}
