//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded at build time, and the library is
//! looked up at run time. This crate knows no deployment layout: it honours, in order,
//! 1. the library its caller names ([`crate::LoadOptions::with_runtime_library`]); it must exist;
//! 2. `ORT_DYLIB_PATH` (a path to `libonnxruntime.so`); if set, it must exist;
//! 3. the places its caller lists ([`crate::LoadOptions::with_runtime_search`]): files, or
//!    folders holding `libonnxruntime.so` or a versioned `libonnxruntime.so.*` (as the
//!    `onnxruntime/capi/` folder of the Python package does).
//!
//! Where a project keeps its runtime (a project folder, Python's site-packages) is the
//! deployment's business: the service and the examples build that list (see the umbrella
//! crate's `install` module).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use akidb_embedding_core::{EmbeddingError, Result};
use ort::environment::Environment;

/// Name of the library file on this platform.
pub const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The environment variable that names the library explicitly.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The runtime's name in [`EmbeddingError::RuntimeUnavailable`].
const RUNTIME: &str = "ONNX Runtime";

/// How to get the library, for error messages.
const HOW_TO_GET: &str = "set ORT_DYLIB_PATH to a libonnxruntime.so (`python3 -m pip install onnxruntime` \
     ships one in its onnxruntime/capi/ folder), or name it with LoadOptions::with_runtime_library";

static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// Where the library may be, as the caller of [`environment`] knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeSearch<'a> {
    /// The library to load, if the caller names one (it must exist).
    pub library: Option<&'a Path>,
    /// Further places to look, in order, after `ORT_DYLIB_PATH`: library files or folders.
    pub candidates: &'a [PathBuf],
}

/// The process-wide ONNX Runtime environment, created on first successful use.
///
/// ONNX Runtime allows one environment per process, so the library chosen by the first
/// successful call serves every later one. A failed attempt is not remembered: fixing the
/// installation and loading again works.
pub fn environment(search: RuntimeSearch<'_>) -> Result<Environment> {
    let mut current = ENVIRONMENT.lock().map_err(|_| {
        EmbeddingError::runtime_unavailable(RUNTIME, "a previous initialisation panicked")
    })?;
    if let Some(env) = current.as_ref() {
        return Ok(env.clone());
    }
    let ort_dylib_path = std::env::var_os(ORT_DYLIB_PATH).filter(|v| !v.is_empty());
    let env = find_library(search, ort_dylib_path.as_deref())
        .and_then(|library| create_environment(&library))
        .map_err(|reason| EmbeddingError::runtime_unavailable(RUNTIME, reason))?;
    *current = Some(env.clone());
    Ok(env)
}

fn create_environment(library: &Path) -> std::result::Result<Environment, String> {
    tracing::info!(library = %library.display(), "loading ONNX Runtime");
    let builder = ort::init_from(library)
        .map_err(|e| format!("cannot load {}: {e}; {HOW_TO_GET}", library.display()))?;
    builder
        .with_name("akidb-embeddings")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))
}

/// Picks the runtime library: the caller's own, else `ort_dylib_path` (the value of
/// `ORT_DYLIB_PATH`), else the first candidate that holds one. The error lists every place
/// looked at and says how to get the library.
pub fn find_library(
    search: RuntimeSearch<'_>,
    ort_dylib_path: Option<&OsStr>,
) -> std::result::Result<PathBuf, String> {
    if let Some(path) = search.library {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "the runtime library {} does not exist; {HOW_TO_GET}",
                path.display()
            ))
        };
    }
    if let Some(explicit) = ort_dylib_path {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{ORT_DYLIB_PATH} is set to {}, which is not a file; fix it or unset it",
                path.display()
            ))
        };
    }
    let mut looked = vec![format!("{ORT_DYLIB_PATH} (not set)")];
    for candidate in search.candidates {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
        if let Some(found) = library_in(candidate) {
            return Ok(found);
        }
        looked.push(candidate.join(LIBRARY_NAME).display().to_string());
    }
    Err(format!(
        "no ONNX Runtime library found (looked in: {}); {HOW_TO_GET}",
        looked.join(", ")
    ))
}

/// `libonnxruntime.so` in `dir`, else its newest versioned file (`libonnxruntime.so.1.32.0`).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join(LIBRARY_NAME);
    if plain.is_file() {
        return Some(plain);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(LIBRARY_NAME))
        })
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("akidb-ort-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_callers_library_wins_then_ort_dylib_path_and_both_must_exist() {
        let dir = scratch("order");
        let real = dir.join(LIBRARY_NAME);
        std::fs::write(&real, b"").unwrap();
        let candidates = [dir.clone()];
        let search = RuntimeSearch {
            library: Some(&real),
            candidates: &candidates,
        };
        let bogus = OsStr::new("/nonexistent/libonnxruntime.so");
        assert_eq!(find_library(search, Some(bogus)).unwrap(), real);
        let missing = dir.join("missing.so");
        let err = find_library(
            RuntimeSearch {
                library: Some(&missing),
                ..search
            },
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("missing.so") && err.contains(ORT_DYLIB_PATH),
            "{err}"
        );
        let err = find_library(
            RuntimeSearch {
                library: None,
                ..search
            },
            Some(bogus),
        )
        .unwrap_err();
        assert!(
            err.contains("ORT_DYLIB_PATH is set to /nonexistent"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nothing_found_lists_the_places_and_says_how_to_get_it() {
        let dir = scratch("none");
        let candidates = [dir.join("runtime"), dir.join("onnxruntime/capi")];
        let err = find_library(
            RuntimeSearch {
                library: None,
                candidates: &candidates,
            },
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("pip install onnxruntime") && err.contains("ORT_DYLIB_PATH"),
            "{err}"
        );
        assert!(
            err.contains(&candidates[0].display().to_string())
                && err.contains(&candidates[1].display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn candidates_are_files_or_folders_with_a_versioned_library() {
        let dir = scratch("capi");
        let capi = dir.join("capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.0"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.32.0"), b"").unwrap();
        let candidates = [dir.join("empty"), capi.clone()];
        let search = RuntimeSearch {
            library: None,
            candidates: &candidates,
        };
        assert_eq!(
            find_library(search, None).unwrap(),
            capi.join("libonnxruntime.so.1.32.0")
        );
        let file = [capi.join("libonnxruntime.so.1.31.0")];
        assert_eq!(
            find_library(
                RuntimeSearch {
                    library: None,
                    candidates: &file
                },
                None
            )
            .unwrap(),
            file[0]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
