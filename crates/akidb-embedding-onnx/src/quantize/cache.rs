//! The q8 cache: `OnnxVariant::Q8` on a folder without `model_q8.onnx` quantises the fp32
//! graph at first load and keeps the result for later loads.
//!
//! Where: beside the graph, in `<graph folder>/.akidb-q8/`, when that folder is writable (a
//! folder without write permission bits counts as read-only, also for root); else in the
//! per-user cache folder, `$XDG_CACHE_HOME/akidb-embeddings/q8`, else
//! `$HOME/.cache/akidb-embeddings/q8`. [`cached_q8`] takes the folders to try from the caller.
//!
//! Each entry is a folder named by a key: the checksum (XXH3-128) of the source graph and its
//! `model.onnx_data`, mixed with the recipe and the quantiser's format version. It holds
//! `model_q8.onnx`, `model_q8.onnx_data` and `manifest.json` (source path and checksum,
//! recipe, each output's size and checksum). On every load the source is checksummed to find
//! the key, and the entry's outputs are checked against its manifest: a missing, truncated or
//! altered entry is rebuilt, never used. Checksumming reads the source and the outputs once
//! per load (about a second for the 1.2 GB EmbeddingGemma from the page cache); run the
//! `quantize` example once and ship `model_q8.onnx` in the folder to skip it.
//!
//! An entry is built in a private temporary folder and renamed into place when complete, so
//! concurrent first loads (threads or processes) never see a half-written entry: the first
//! rename wins, the others use the winner's entry. When a source changes, the entries made
//! from the same graph path with the old content are removed once the new one is in place.
//!
//! The same cache holds fused graphs ([`super::fuse`], [`fused_files`]): an entry is
//! quantised, fused, or both ([`cached_rewrite`]); fused-only entries hold
//! [`FUSED_FILE`] instead of `model_q8.onnx`, and their key adds the fusion recipe and its
//! format version.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use akidb_embedding_core::{EmbeddingError, Result};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::fuse::FuseRecipe;
use super::{Q8_FILE, QuantizeError, QuantizeRecipe, rewrite_file};
use crate::source::{self, ModelFiles};
use crate::{ModelSpec, OnnxVariant};

/// Bumped whenever the quantiser's output changes for the same source and recipe.
const FORMAT_VERSION: u32 = 2;
const MANIFEST: &str = "manifest.json";
/// Folder name of the cache beside a model's graph (it holds fused graphs too).
pub const BESIDE_DIR: &str = ".akidb-q8";
/// The graph file of a cache entry that is fused but not quantised.
pub const FUSED_FILE: &str = "model_fused.onnx";

/// The files of a model's `q8` variant for the loader: the folder's own `model_q8.onnx`
/// is found by the caller first; this is called when there is none. Quantises the folder's
/// fp32 graph with [`QuantizeRecipe::q8`] into the cache (or reuses a valid entry) and returns
/// the cached graph with the folder's tokenizer and configuration.
///
/// With `fuse`, the entry's graph is fused too ([`super::fuse`]).
pub fn q8_model_files(
    dir: &Path,
    spec: Option<&ModelSpec>,
    fuse: Option<&FuseRecipe>,
) -> Result<ModelFiles> {
    let fp32 = source::local_files_with(dir, &OnnxVariant::Fp32, spec, None)?;
    let mut roots = vec![beside_root(&fp32.onnx)];
    roots.extend(user_cache_root());
    q8_of(fp32, &roots, fuse)
}

/// The fused graph of `files` (see [`super::fuse`]), from the cache beside the graph (else
/// the user cache folder, or `<hub cache>/akidb-q8` for a model fetched from the hub):
/// built at first load, checked and reused later like the `q8` entries. Files whose graph is
/// already fused (written by the `fuse` example) are returned as they are.
pub fn fused_files(
    files: ModelFiles,
    fuse: &FuseRecipe,
    hub_cache: Option<&Path>,
) -> Result<ModelFiles> {
    if files.fused || super::is_fused(&files.onnx) {
        return Ok(ModelFiles {
            fused: true,
            ..files
        });
    }
    // Never into a hub cache's `snapshots/`, which mirror the repository.
    let from_hub = files
        .onnx
        .components()
        .any(|c| c.as_os_str() == "snapshots")
        && files.onnx.components().any(|c| {
            c.as_os_str()
                .to_str()
                .is_some_and(|name| name.starts_with("models--"))
        });
    let mut roots = Vec::new();
    match hub_cache {
        Some(cache) if from_hub => roots.push(cache.join("akidb-q8")),
        None if from_hub => {}
        _ => roots.push(beside_root(&files.onnx)),
    }
    roots.extend(user_cache_root());
    // Fusion only makes the run faster: a graph it cannot read or a cache it cannot write
    // leaves the graph as it is (ONNX Runtime then reports a broken graph itself).
    let entry = match cached_rewrite(
        &files.onnx,
        files.onnx_data.as_deref(),
        &roots,
        None,
        Some(fuse),
    ) {
        Ok(entry) => entry,
        Err(error) => {
            tracing::warn!(graph = %files.onnx.display(), %error, "cannot fuse the graph; running it as it is");
            return Ok(files);
        }
    };
    Ok(ModelFiles {
        dir: files.dir,
        onnx_data: data_if_any(&entry),
        onnx: entry.onnx,
        fused: true,
    })
}

/// The entry's weights file, unless the graph keeps every weight inline (an empty file).
fn data_if_any(entry: &CacheEntry) -> Option<PathBuf> {
    std::fs::metadata(&entry.data)
        .is_ok_and(|m| m.len() > 0)
        .then(|| entry.data.clone())
}

/// The `q8` variant of a model fetched from the hub whose repository publishes none: its fp32
/// files are quantised into `<hub cache>/akidb-q8` when the caller named a hub cache folder,
/// else the user cache folder ([`user_cache_root`]); never into the hub cache's `snapshots/`,
/// which mirror the repository.
///
/// With `fuse`, the entry's graph is fused too ([`super::fuse`]).
pub fn q8_hub_files(
    fp32: ModelFiles,
    hub_cache: Option<&Path>,
    fuse: Option<&FuseRecipe>,
) -> Result<ModelFiles> {
    let roots: Vec<PathBuf> = match hub_cache {
        Some(cache) => vec![cache.join("akidb-q8")],
        None => user_cache_root().into_iter().collect(),
    };
    if roots.is_empty() {
        return Err(EmbeddingError::model_load(
            fp32.onnx.display(),
            "no cache folder for the q8 variant: name one (LoadOptions::with_cache_dir), set \
             XDG_CACHE_HOME or HOME, or quantise the model ahead of time with the quantize example",
        ));
    }
    q8_of(fp32, &roots, fuse)
}

/// Quantises (or finds in the first usable of `roots`) the `q8` graph of `fp32`'s files,
/// fused when `fuse` says so.
fn q8_of(fp32: ModelFiles, roots: &[PathBuf], fuse: Option<&FuseRecipe>) -> Result<ModelFiles> {
    let entry = cached_rewrite(
        &fp32.onnx,
        fp32.onnx_data.as_deref(),
        roots,
        Some(&QuantizeRecipe::q8()),
        fuse,
    )?;
    Ok(ModelFiles {
        dir: fp32.dir,
        onnx_data: data_if_any(&entry),
        onnx: entry.onnx,
        fused: fuse.is_some(),
    })
}

/// The cache folder beside a graph: `<graph folder>/.akidb-q8`.
pub fn beside_root(source_onnx: &Path) -> PathBuf {
    source_onnx
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(BESIDE_DIR)
}

/// The per-user cache folder: `$XDG_CACHE_HOME/akidb-embeddings/q8`, else
/// `$HOME/.cache/akidb-embeddings/q8`; `None` when neither variable is set.
pub fn user_cache_root() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("akidb-embeddings").join("q8"))
}

/// A usable cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The entry's folder.
    pub dir: PathBuf,
    /// Its graph (`model_q8.onnx`).
    pub onnx: PathBuf,
    /// Its weights (`model_q8.onnx_data`).
    pub data: PathBuf,
    /// True when this call quantised; false when a valid entry was reused.
    pub built: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    source_graph: String,
    source_checksum: String,
    #[serde(default)]
    recipe: Option<QuantizeRecipe>,
    #[serde(default)]
    fuse: Option<FuseRecipe>,
    files: Vec<FileSum>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileSum {
    name: String,
    bytes: u64,
    xxh3: String,
}

/// Returns a valid cache entry for `source_onnx` (with its weights file `source_data`)
/// quantised with `recipe`, building it when needed in the first of `roots` that accepts it.
///
/// A root is skipped when its parent folder has no write permission bits or when creating
/// files there fails; quantisation errors other than I/O (an invalid model, nothing to
/// quantise) end the search at once.
pub fn cached_q8(
    source_onnx: &Path,
    source_data: Option<&Path>,
    roots: &[PathBuf],
    recipe: &QuantizeRecipe,
) -> Result<CacheEntry, QuantizeError> {
    cached_rewrite(source_onnx, source_data, roots, Some(recipe), None)
}

/// Like [`cached_q8`] for any rewrite: quantised with `quantize` when given, fused with
/// `fuse` when given (the graph is `model_q8.onnx` when quantised, else [`FUSED_FILE`]).
/// The key covers both recipes and the fusion's format version.
pub fn cached_rewrite(
    source_onnx: &Path,
    source_data: Option<&Path>,
    roots: &[PathBuf],
    quantize: Option<&QuantizeRecipe>,
    fuse: Option<&FuseRecipe>,
) -> Result<CacheEntry, QuantizeError> {
    if let Some(recipe) = quantize {
        recipe.validate()?;
    }
    let plan = Plan { quantize, fuse };
    let source_checksum = checksum_files(&[Some(source_onnx), source_data])?;
    let key = entry_key(&source_checksum, &plan)?;
    let mut failures = Vec::new();
    for root in roots {
        let entry_dir = root.join(&key);
        if entry_dir.is_dir() {
            match verify(&entry_dir, &source_checksum, plan.file()) {
                Ok(()) => {
                    tracing::debug!(entry = %entry_dir.display(), "q8 cache hit");
                    return Ok(entry(entry_dir, plan.file(), false));
                }
                Err(reason) => {
                    tracing::warn!(entry = %entry_dir.display(), reason, "q8 cache entry is invalid; rebuilding it");
                }
            }
        }
        if read_only_parent(root) {
            tracing::debug!(root = %root.display(), "read-only folder; trying the next cache folder");
            failures.push(format!("{}: read-only", root.display()));
            continue;
        }
        match build(source_onnx, &source_checksum, &key, root, &plan) {
            Ok(entry) => return Ok(entry),
            Err(QuantizeError::Io { path, source }) => {
                tracing::debug!(root = %root.display(), error = %source, "cannot build the q8 cache here");
                failures.push(format!("{}: {source}", path.display()));
            }
            Err(other) => return Err(other),
        }
    }
    Err(QuantizeError::Io {
        path: roots.first().cloned().unwrap_or_default(),
        source: std::io::Error::other(format!(
            "no writable folder for the q8 cache (tried: {})",
            if failures.is_empty() {
                "none".to_string()
            } else {
                failures.join("; ")
            }
        )),
    })
}

/// What an entry is made of.
#[derive(Clone, Copy)]
struct Plan<'a> {
    quantize: Option<&'a QuantizeRecipe>,
    fuse: Option<&'a FuseRecipe>,
}

impl Plan<'_> {
    /// The entry's graph file name.
    fn file(&self) -> &'static str {
        if self.quantize.is_some() {
            Q8_FILE
        } else {
            FUSED_FILE
        }
    }
}

fn entry(dir: PathBuf, file: &str, built: bool) -> CacheEntry {
    CacheEntry {
        onnx: dir.join(file),
        data: dir.join(format!("{file}_data")),
        dir,
        built,
    }
}

/// The folder that would hold `root` (or `root` itself, once it exists) has no write bits.
fn read_only_parent(root: &Path) -> bool {
    let probe = if root.exists() {
        Some(root)
    } else {
        root.parent()
    };
    probe
        .and_then(|p| std::fs::metadata(p).ok())
        .is_some_and(|m| m.permissions().readonly())
}

fn entry_key(source_checksum: &str, plan: &Plan<'_>) -> Result<String, QuantizeError> {
    fn json<T: Serialize>(value: &T) -> Result<String, QuantizeError> {
        serde_json::to_string(value)
            .map_err(|e| QuantizeError::Recipe(format!("cannot serialise the recipe: {e}")))
    }
    let mut hasher = Xxh3::new();
    hasher.update(&FORMAT_VERSION.to_le_bytes());
    hasher.update(source_checksum.as_bytes());
    // An unfused q8 entry's key hashes nothing about fusion, so it matches entries made
    // without fusion: those stay valid.
    if let Some(recipe) = plan.quantize {
        hasher.update(json(recipe)?.as_bytes());
    }
    if let Some(fuse) = plan.fuse {
        hasher.update(b"fuse");
        hasher.update(&super::fuse::FORMAT_VERSION.to_le_bytes());
        hasher.update(json(fuse)?.as_bytes());
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// XXH3-128 over the files in order (absent ones skipped), streamed.
fn checksum_files(files: &[Option<&Path>]) -> Result<String, QuantizeError> {
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; 4 << 20];
    for path in files.iter().flatten() {
        let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => QuantizeError::Missing {
                what: "model file",
                path: path.to_path_buf(),
            },
            _ => QuantizeError::io(path, e),
        })?;
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(|e| QuantizeError::io(path, e))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

fn verify(entry_dir: &Path, source_checksum: &str, file: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(entry_dir.join(MANIFEST))
        .map_err(|e| format!("no readable manifest: {e}"))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("unreadable manifest: {e}"))?;
    if manifest.format != FORMAT_VERSION {
        return Err(format!(
            "format {} (expected {FORMAT_VERSION})",
            manifest.format
        ));
    }
    if manifest.source_checksum != source_checksum {
        return Err("made from other source files".to_string());
    }
    let expected = [file.to_string(), format!("{file}_data")];
    for name in &expected {
        let Some(sum) = manifest.files.iter().find(|f| &f.name == name) else {
            return Err(format!("the manifest does not list {name}"));
        };
        let path = entry_dir.join(name);
        let bytes = std::fs::metadata(&path)
            .map_err(|e| format!("{name}: {e}"))?
            .len();
        if bytes != sum.bytes {
            return Err(format!(
                "{name} has {bytes} bytes, the manifest says {}",
                sum.bytes
            ));
        }
        let actual = checksum_files(&[Some(&path)]).map_err(|e| e.to_string())?;
        if actual != sum.xxh3 {
            return Err(format!("{name} does not match its checksum"));
        }
    }
    Ok(())
}

fn build(
    source_onnx: &Path,
    source_checksum: &str,
    key: &str,
    root: &Path,
    plan: &Plan<'_>,
) -> Result<CacheEntry, QuantizeError> {
    let file = plan.file();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(root).map_err(|e| QuantizeError::io(root, e))?;
    let unique = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let temp = root.join(format!(".tmp-{key}-{unique}"));
    std::fs::create_dir(&temp).map_err(|e| QuantizeError::io(&temp, e))?;
    let cleanup = |dir: &Path| {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::debug!(folder = %dir.display(), error = %e, "cannot remove a temporary q8 folder");
        }
    };
    let built = (|| {
        let report = rewrite_file(source_onnx, &temp.join(file), plan.quantize, plan.fuse)?;
        let mut files = Vec::new();
        for name in [file.to_string(), format!("{file}_data")] {
            let path = temp.join(&name);
            let bytes = std::fs::metadata(&path)
                .map_err(|e| QuantizeError::io(&path, e))?
                .len();
            files.push(FileSum {
                xxh3: checksum_files(&[Some(&path)])?,
                name,
                bytes,
            });
        }
        let manifest = Manifest {
            format: FORMAT_VERSION,
            source_graph: source_onnx.display().to_string(),
            source_checksum: source_checksum.to_string(),
            recipe: plan.quantize.cloned(),
            fuse: plan.fuse.cloned(),
            files,
        };
        let json = serde_json::to_string_pretty(&manifest)
            .map_err(|e| QuantizeError::invalid(source_onnx, e.to_string()))?;
        let manifest_path = temp.join(MANIFEST);
        std::fs::write(&manifest_path, json).map_err(|e| QuantizeError::io(&manifest_path, e))?;
        Ok(report)
    })();
    let report = match built {
        Ok(report) => report,
        Err(e) => {
            cleanup(&temp);
            return Err(e);
        }
    };

    let entry_dir = root.join(key);
    if entry_dir.exists() {
        // Invalid (checked by the caller) or just made by a concurrent load: keep a valid one.
        if verify(&entry_dir, source_checksum, file).is_ok() {
            cleanup(&temp);
            return Ok(entry(entry_dir, file, false));
        }
        let stale = root.join(format!(".stale-{key}-{unique}"));
        if std::fs::rename(&entry_dir, &stale).is_ok() {
            cleanup(&stale);
        }
    }
    if let Err(e) = std::fs::rename(&temp, &entry_dir) {
        // Another load installed its entry between our check and our rename.
        if verify(&entry_dir, source_checksum, file).is_ok() {
            cleanup(&temp);
            return Ok(entry(entry_dir, file, false));
        }
        cleanup(&temp);
        return Err(QuantizeError::io(&entry_dir, e));
    }
    tracing::info!(
        entry = %entry_dir.display(),
        source = %source_onnx.display(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "q8 cache entry built"
    );
    remove_outdated(root, key, source_onnx, source_checksum);
    Ok(entry(entry_dir, file, true))
}

/// Removes the entries of `root` made from the same graph path with other content (entries
/// of the same content with other recipes, fused or not, stay).
fn remove_outdated(root: &Path, key: &str, source_onnx: &Path, source_checksum: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let source = source_onnx.display().to_string();
    for dir in entries.flatten().map(|e| e.path()) {
        if dir.file_name().and_then(|n| n.to_str()) == Some(key) {
            continue;
        }
        let outdated = std::fs::read_to_string(dir.join(MANIFEST))
            .ok()
            .and_then(|text| serde_json::from_str::<Manifest>(&text).ok())
            .is_some_and(|m| m.source_graph == source && m.source_checksum != source_checksum);
        if outdated {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(entry = %dir.display(), "removed an outdated q8 cache entry")
                }
                Err(e) => {
                    tracing::debug!(entry = %dir.display(), error = %e, "cannot remove an outdated q8 cache entry")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_source_and_recipe() {
        fn plan(q: &QuantizeRecipe) -> Plan<'_> {
            Plan {
                quantize: Some(q),
                fuse: None,
            }
        }
        let default = QuantizeRecipe::default();
        let a = entry_key("0011", &plan(&default)).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(a, entry_key("0011", &plan(&default)).unwrap());
        assert_ne!(a, entry_key("0012", &plan(&default)).unwrap());
        assert_ne!(
            a,
            entry_key("0011", &plan(&default.clone().with_block_size(64))).unwrap()
        );
        let fuse = FuseRecipe::default();
        let fused = Plan {
            quantize: Some(&default),
            fuse: Some(&fuse),
        };
        assert_ne!(a, entry_key("0011", &fused).unwrap());
        let fused_only = Plan {
            quantize: None,
            fuse: Some(&fuse),
        };
        assert_ne!(
            entry_key("0011", &fused).unwrap(),
            entry_key("0011", &fused_only).unwrap()
        );
        assert_eq!(fused_only.file(), FUSED_FILE);
    }

    #[test]
    fn the_user_cache_folder_ends_in_q8() {
        if let Some(root) = user_cache_root() {
            assert!(root.ends_with("akidb-embeddings/q8"), "{}", root.display());
        }
    }

    #[test]
    fn checksums_cover_every_byte_of_every_file() {
        let dir = std::env::temp_dir().join(format!("akidb-q8-sum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"graph").unwrap();
        std::fs::write(&b, vec![7u8; 9 << 20]).unwrap();
        let both = checksum_files(&[Some(&a), Some(&b)]).unwrap();
        assert_ne!(both, checksum_files(&[Some(&a), None]).unwrap());
        let mut changed = vec![7u8; 9 << 20];
        changed[(9 << 20) - 1] = 8;
        std::fs::write(&b, changed).unwrap();
        assert_ne!(both, checksum_files(&[Some(&a), Some(&b)]).unwrap());
        let missing = checksum_files(&[Some(&dir.join("nope"))]).unwrap_err();
        assert!(
            matches!(missing, QuantizeError::Missing { .. }),
            "{missing}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
