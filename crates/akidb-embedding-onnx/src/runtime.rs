//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded at build time, and the library is
//! looked up at run time, in this order:
//! 1. `ORT_DYLIB_PATH` (a path to `libonnxruntime.so`); if set, it must exist;
//! 2. the project's runtime folder that `scripts/setup.sh` fills: `$AKIDB_HOME/runtime`, else
//!    `.akidb/runtime` in the current directory or in the workspace this crate was built in;
//! 3. an installed Python `onnxruntime` package (`onnxruntime/capi/libonnxruntime.so*`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use akidb_embedding_core::{EmbeddingError, Result};
use ort::environment::Environment;

/// Name of the library file on this platform.
pub const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The environment variable that names the library explicitly.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The runtime's name in [`EmbeddingError::RuntimeUnavailable`].
const RUNTIME: &str = "ONNX Runtime";

static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// The process-wide ONNX Runtime environment, created on first successful use.
///
/// ONNX Runtime allows one environment per process, so the library chosen by the first
/// successful call serves every later one; `explicit_library` (from
/// [`crate::LoadOptions::with_runtime_library`]) takes precedence over the search until then.
/// A failed attempt is not remembered: fixing the installation and loading again works.
pub fn environment(explicit_library: Option<&Path>) -> Result<Environment> {
    let mut current = ENVIRONMENT.lock().map_err(|_| {
        EmbeddingError::runtime_unavailable(RUNTIME, "a previous initialisation panicked")
    })?;
    if let Some(env) = current.as_ref() {
        return Ok(env.clone());
    }
    let env = create_environment(explicit_library)
        .map_err(|reason| EmbeddingError::runtime_unavailable(RUNTIME, reason))?;
    *current = Some(env.clone());
    Ok(env)
}

fn create_environment(explicit_library: Option<&Path>) -> std::result::Result<Environment, String> {
    let library = match explicit_library {
        Some(path) if path.is_file() => path.to_path_buf(),
        Some(path) => {
            return Err(format!(
                "the runtime library {} does not exist; {}",
                path.display(),
                HOW_TO_INSTALL
            ));
        }
        None => {
            // Asking python3 where `onnxruntime` lives costs a process start (~100 ms): only
            // when the cheaper places had nothing.
            let mut places = SearchPlaces::from_environment();
            match find_library(&places) {
                Ok(found) => found,
                Err(_) => {
                    places.python_package = python_onnxruntime_dir();
                    find_library(&places)?
                }
            }
        }
    };
    tracing::info!(library = %library.display(), "loading ONNX Runtime");
    let builder = ort::init_from(&library)
        .map_err(|e| format!("cannot load {}: {e}; {HOW_TO_INSTALL}", library.display()))?;
    builder
        .with_name("akidb-embeddings")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))
}

const HOW_TO_INSTALL: &str = "run `scripts/setup.sh` (installs ONNX Runtime into .akidb/runtime), \
     or `python3 -m pip install onnxruntime`, or set ORT_DYLIB_PATH to a libonnxruntime.so";

/// Where [`find_library`] looks; built from the process environment by
/// [`SearchPlaces::from_environment`], or by hand in tests.
#[derive(Debug, Clone, Default)]
pub struct SearchPlaces {
    /// Value of `ORT_DYLIB_PATH`, if set.
    pub ort_dylib_path: Option<OsString>,
    /// Runtime folders of the project, in order.
    pub runtime_dirs: Vec<PathBuf>,
    /// The Python `onnxruntime` package folder, if one is installed.
    pub python_package: Option<PathBuf>,
}

impl SearchPlaces {
    /// The places of the documented search order, read from this process's environment
    /// (without the Python package, which [`environment`] asks for only when needed).
    pub fn from_environment() -> Self {
        let mut runtime_dirs = Vec::new();
        if let Some(home) = std::env::var_os("AKIDB_HOME") {
            runtime_dirs.push(PathBuf::from(home).join("runtime"));
        }
        runtime_dirs.push(PathBuf::from(".akidb/runtime"));
        runtime_dirs.push(workspace_akidb_home().join("runtime"));
        Self {
            ort_dylib_path: std::env::var_os(ORT_DYLIB_PATH).filter(|v| !v.is_empty()),
            runtime_dirs,
            python_package: None,
        }
    }
}

/// The `.akidb` folder of the workspace this crate was built in (where `scripts/setup.sh`
/// installs the runtime and models).
pub fn workspace_akidb_home() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.akidb")
}

/// Picks the runtime library from `places`, in the documented order.
pub fn find_library(places: &SearchPlaces) -> std::result::Result<PathBuf, String> {
    if let Some(explicit) = &places.ort_dylib_path {
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
    let mut looked = Vec::new();
    for dir in &places.runtime_dirs {
        let candidate = dir.join(LIBRARY_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
    }
    if let Some(package) = &places.python_package {
        let capi = package.join("capi");
        if let Some(found) = versioned_library_in(&capi) {
            return Ok(found);
        }
        looked.push(capi.join("libonnxruntime.so*").display().to_string());
    } else {
        looked.push("python3 package `onnxruntime` (not installed)".to_string());
    }
    Err(format!(
        "no ONNX Runtime library found (looked in: {}); {HOW_TO_INSTALL}",
        looked.join(", ")
    ))
}

fn versioned_library_in(dir: &Path) -> Option<PathBuf> {
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

/// Asks `python3` where the `onnxruntime` package lives, without importing it.
fn python_onnxruntime_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins_and_must_exist() {
        let places = SearchPlaces {
            ort_dylib_path: Some("/nonexistent/libonnxruntime.so".into()),
            runtime_dirs: vec![workspace_akidb_home().join("runtime")],
            python_package: None,
        };
        let err = find_library(&places).unwrap_err();
        assert!(err.contains("ORT_DYLIB_PATH"), "{err}");
    }

    #[test]
    fn nothing_found_explains_how_to_install() {
        let dir = std::env::temp_dir().join("akidb-no-runtime-here");
        let places = SearchPlaces {
            ort_dylib_path: None,
            runtime_dirs: vec![dir.clone()],
            python_package: Some(dir.join("onnxruntime")),
        };
        let err = find_library(&places).unwrap_err();
        assert!(
            err.contains("scripts/setup.sh") && err.contains("pip install onnxruntime"),
            "{err}"
        );
        assert!(err.contains("akidb-no-runtime-here"), "{err}");
    }

    #[test]
    fn python_package_layout_is_searched() {
        let dir = std::env::temp_dir().join(format!("akidb-fake-ort-{}", std::process::id()));
        let capi = dir.join("capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.32.0"), b"").unwrap();
        let places = SearchPlaces {
            ort_dylib_path: None,
            runtime_dirs: vec![],
            python_package: Some(dir.clone()),
        };
        assert_eq!(
            find_library(&places).unwrap(),
            capi.join("libonnxruntime.so.1.32.0")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
