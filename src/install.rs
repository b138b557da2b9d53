//! Where this project installs what a model needs, for the programs that run from a
//! checkout of it: the service (`akidb-rest`), the examples and the benches.
//!
//! The library crates know no such place (`akidb-embedding-onnx` honours only what its caller
//! passes, plus `ORT_DYLIB_PATH`); this module is the one place that does. `scripts/setup.sh`
//! installs ONNX Runtime into `<home>/runtime` and the built-in models into
//! `<home>/models/<name>`, where `<home>` is `$AKIDB_HOME`, else the `.akidb` folder of the
//! checkout: the nearest one in the current directory or above it (so a program or test run
//! from a crate's folder finds it too). A user who ran `python3 -m pip install onnxruntime`
//! already has the library in site-packages: that package folder is the last place searched.
//!
//! ```no_run
//! use akidb_embeddings::install;
//! use akidb_embeddings::onnx::OnnxEmbeddingProvider;
//!
//! let provider = OnnxEmbeddingProvider::load(
//!     install::load_options("sentence-transformers/all-MiniLM-L6-v2").with_intra_threads(2),
//! )?;
//! # Ok::<(), akidb_embeddings::core::EmbeddingError>(())
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use akidb_embedding_onnx::LoadOptions;
use akidb_embedding_onnx::runtime::LIBRARY_NAME;

/// The environment variable that moves the project folder.
pub const AKIDB_HOME: &str = "AKIDB_HOME";

/// The project folder's name inside a checkout.
pub const HOME_DIR_NAME: &str = ".akidb";

/// The project folder: `$AKIDB_HOME` if set, else the nearest `.akidb` folder in the current
/// directory or above it; `None` when there is neither.
pub fn home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os(AKIDB_HOME).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home));
    }
    let cwd = std::env::current_dir().ok()?;
    nearest_home(&cwd)
}

/// The nearest `.akidb` folder at `start` or above it.
pub fn nearest_home(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(HOME_DIR_NAME))
        .find(|dir| dir.is_dir())
}

/// Where to look for the ONNX Runtime library, in order: the project folder's `runtime/`,
/// then the `onnxruntime/capi/` folder of an installed Python package (asking `python3` where
/// it is, without importing it).
///
/// `python3` is asked (once per process, about 100 ms) only when the project folder holds no
/// library.
pub fn runtime_search() -> Vec<PathBuf> {
    let mut places: Vec<PathBuf> = home()
        .map(|home| home.join("runtime"))
        .into_iter()
        .collect();
    if !places.iter().any(|dir| dir.join(LIBRARY_NAME).is_file()) {
        static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
        places.extend(PYTHON.get_or_init(python_onnxruntime_capi).clone());
    }
    places
}

/// Folder of the installed built-in models (`<home>/models`), if there is a project folder.
pub fn models_dir() -> Option<PathBuf> {
    home().map(|home| home.join("models"))
}

/// [`LoadOptions`] for `model` that find this project's runtime ([`runtime_search`]) and
/// installed models ([`models_dir`]).
pub fn load_options(model: impl Into<String>) -> LoadOptions {
    with_project_paths(LoadOptions::new(model))
}

/// Adds this project's runtime search and models folder to `options`.
pub fn with_project_paths(options: LoadOptions) -> LoadOptions {
    let options = options.with_runtime_search(runtime_search());
    match models_dir() {
        Some(dir) => options.with_models_dir(dir),
        None => options,
    }
}

/// The `capi` folder of the Python `onnxruntime` package, if `python3` has one.
fn python_onnxruntime_capi() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir).join("capi"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_project_folder_is_found_from_below() {
        let root = std::env::temp_dir().join(format!("akidb-home-{}", std::process::id()));
        let nested = root.join("crates/some-crate/src");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(nearest_home(&nested), None);
        std::fs::create_dir_all(root.join(HOME_DIR_NAME)).unwrap();
        assert_eq!(nearest_home(&nested), Some(root.join(HOME_DIR_NAME)));
        std::fs::remove_dir_all(root).unwrap();
    }
}
