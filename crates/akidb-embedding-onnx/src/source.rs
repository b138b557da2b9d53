//! Finding a model's files: a local folder, an installed copy in the folder the caller names
//! ([`crate::LoadOptions::with_models_dir`]), or the Hugging Face hub through `hf-hub` and its
//! cache.
//!
//! Paths are never canonicalised: in the hub cache, `snapshots/<rev>/onnx/model.onnx` is a
//! symlink into `blobs/`, and ONNX Runtime looks for `model.onnx_data` beside the path it is
//! given, which only the snapshot folder has.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use akidb_embedding_core::{EmbeddingError, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::quantize::fuse::FuseRecipe;
use crate::{LoadOptions, ModelSpec, OnnxVariant};

/// The files of one model, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// Folder holding `tokenizer.json` and the configuration files.
    pub dir: PathBuf,
    /// The ONNX graph.
    pub onnx: PathBuf,
    /// The external weights beside the graph, when the model has them.
    pub onnx_data: Option<PathBuf>,
    /// Whether the graph is already fused (see [`crate::quantize::fuse`]).
    pub fused: bool,
}

/// Told about every file downloaded from the hub, so a large download does not look like a
/// hang. Called from the loading thread; files already in the cache are not reported.
pub trait DownloadProgress: Send + Sync {
    /// A download of `file` (`total_bytes` long) starts.
    fn started(&self, file: &str, total_bytes: u64);
    /// `bytes` more bytes of the current file arrived.
    fn advanced(&self, bytes: u64);
    /// The current file is complete.
    fn finished(&self);
}

/// A [`DownloadProgress`] hook as [`HubOptions`] holds it (compared by identity).
#[derive(Clone)]
pub struct ProgressHook(pub Arc<dyn DownloadProgress>);

impl fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl PartialEq for ProgressHook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProgressHook {}

/// A hub access token; its `Debug` output is redacted, so logging options never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct HubToken(pub String);

impl fmt::Debug for HubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HubToken(<redacted>)")
    }
}

/// hf-hub's progress callback, forwarding to a [`DownloadProgress`].
struct ProgressAdapter(Arc<dyn DownloadProgress>);

impl hf_hub::api::Progress for ProgressAdapter {
    fn init(&mut self, size: usize, filename: &str) {
        self.0.started(filename, size as u64);
    }

    fn update(&mut self, size: usize) {
        self.0.advanced(size as u64);
    }

    fn finish(&mut self) {
        self.0.finished();
    }
}

/// How to reach the Hugging Face hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Use only the local cache; never touch the network (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Cache folder (default: `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Hub address (default: `HF_ENDPOINT`, else the public hub).
    pub endpoint: Option<String>,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// Access token for gated or private repositories (default: `HF_TOKEN`, else the token
    /// file of the hub cache's parent folder, as `huggingface-cli login` writes it).
    pub token: Option<HubToken>,
    /// Told about each file downloaded (default: nobody).
    pub progress: Option<ProgressHook>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            offline: std::env::var("HF_HUB_OFFLINE")
                .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes")),
            cache_dir: None,
            endpoint: None,
            revision: "main".to_string(),
            token: std::env::var("HF_TOKEN")
                .ok()
                .filter(|token| !token.trim().is_empty())
                .map(HubToken),
            progress: None,
        }
    }
}

/// Configuration files read when present, besides `tokenizer.json`.
pub const OPTIONAL_FILES: &[&str] = &[
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// The name of the external-weights file of an ONNX file (`model.onnx` → `model.onnx_data`).
pub fn data_file_name(onnx_file: &str) -> String {
    format!("{onnx_file}_data")
}

/// Finds the files of a model stored in a local folder: the ONNX file at the root or under
/// `onnx/` (the hub layout), its `_data` file beside it.
pub fn local_files(
    dir: &Path,
    variant: &OnnxVariant,
    spec: Option<&ModelSpec>,
) -> Result<ModelFiles> {
    local_files_with(dir, variant, spec, None)
}

/// [`local_files`], with the `q8` variant made fused when `fuse` is given (other variants
/// are fused by the caller, [`crate::quantize::cache::fused_files`]).
pub fn local_files_with(
    dir: &Path,
    variant: &OnnxVariant,
    spec: Option<&ModelSpec>,
    fuse: Option<&FuseRecipe>,
) -> Result<ModelFiles> {
    if !dir.is_dir() {
        return Err(EmbeddingError::model_load(dir.display(), "not a folder"));
    }
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(EmbeddingError::model_load(
            tokenizer.display(),
            "missing tokenizer file",
        ));
    }
    let file = variant.file_name();
    let candidates = [dir.join(file), dir.join("onnx").join(file)];
    let Some(onnx) = candidates.iter().find(|p| p.is_file()).cloned() else {
        if *variant == OnnxVariant::Q8 {
            return crate::quantize::cache::q8_model_files(dir, spec, fuse);
        }
        return Err(EmbeddingError::model_load(
            dir.display(),
            format!(
                "no {file} (looked for {} and {})",
                candidates[0].display(),
                candidates[1].display()
            ),
        ));
    };
    let data = onnx.with_file_name(data_file_name(file));
    let onnx_data = check_data_file(&onnx, data, spec.is_some_and(|s| s.external_data))?;
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        onnx,
        onnx_data,
        fused: false,
    })
}

fn check_data_file(onnx: &Path, data: PathBuf, required: bool) -> Result<Option<PathBuf>> {
    match std::fs::metadata(&data) {
        Ok(meta) if meta.len() == 0 => Err(EmbeddingError::model_load(
            data.display(),
            "the weights file is empty (truncated download?)",
        )),
        Ok(_) => Ok(Some(data)),
        Err(_) if required => Err(EmbeddingError::model_load(
            data.display(),
            format!(
                "missing weights file: {} keeps its weights in {}, which must sit in the same folder",
                onnx.display(),
                data.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("its _data file")
            ),
        )),
        Err(_) => Ok(None),
    }
}

/// Fetches (or, offline, finds in the cache) the files of hub repository `repo`.
pub fn hub_files(
    repo: &str,
    variant: &OnnxVariant,
    spec: Option<&ModelSpec>,
    hub: &HubOptions,
) -> Result<ModelFiles> {
    hub_files_with(repo, variant, spec, hub, None)
}

/// [`hub_files`], with a made `q8` variant fused when `fuse` is given.
pub fn hub_files_with(
    repo: &str,
    variant: &OnnxVariant,
    spec: Option<&ModelSpec>,
    hub: &HubOptions,
    fuse: Option<&FuseRecipe>,
) -> Result<ModelFiles> {
    let fetcher = HubFetcher::new(repo, hub)?;
    let tokenizer = fetcher.get(repo, "tokenizer.json")?;
    for name in OPTIONAL_FILES {
        fetcher.get_optional(repo, name)?;
    }
    let file = variant.file_name();
    let onnx_paths: Vec<String> = match spec.and_then(|s| s.hub_onnx_dir.as_deref()) {
        Some(dir) => vec![format!("{dir}/{file}")],
        None => vec![file.to_string(), format!("onnx/{file}")],
    };
    let mut onnx = None;
    for path in &onnx_paths {
        if let Some(found) = fetcher.get_optional(repo, path)? {
            onnx = Some((path.clone(), found));
            break;
        }
    }
    let Some((onnx_path, onnx)) = onnx else {
        if *variant == OnnxVariant::Q8 {
            // No published q8 graph: the project's own, made from the fp32 files.
            let fp32 = hub_files_with(repo, &OnnxVariant::Fp32, spec, hub, None)?;
            return crate::quantize::cache::q8_hub_files(fp32, hub.cache_dir.as_deref(), fuse);
        }
        return Err(EmbeddingError::Download {
            model: repo.to_string(),
            reason: format!("the repository has no {}", onnx_paths.join(" or ")),
        });
    };
    let required = spec.is_some_and(|s| s.external_data);
    let data_path = data_file_name(&onnx_path);
    let data = if required {
        Some(fetcher.get(repo, &data_path)?)
    } else {
        fetcher.get_optional(repo, &data_path)?
    };
    let onnx_data = match data {
        Some(data) => check_data_file(&onnx, data, required)?,
        None => None,
    };
    let dir = tokenizer
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(ModelFiles {
        dir,
        onnx,
        onnx_data,
        fused: false,
    })
}

enum HubFetcher {
    Online {
        api: Box<hf_hub::api::sync::ApiRepo>,
        cache: hf_hub::CacheRepo,
        progress: Option<ProgressHook>,
    },
    Offline(hf_hub::CacheRepo),
}

impl HubFetcher {
    fn new(repo: &str, hub: &HubOptions) -> Result<Self> {
        let repo_ref = Repo::with_revision(repo.to_string(), RepoType::Model, hub.revision.clone());
        let cache = match &hub.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None => Cache::from_env(),
        };
        if hub.offline {
            return Ok(Self::Offline(cache.repo(repo_ref)));
        }
        let cache_repo = cache.repo(repo_ref.clone());
        let mut builder = ApiBuilder::from_cache(cache).with_progress(false);
        if let Some(token) = &hub.token {
            builder = builder.with_token(Some(token.0.clone()));
        }
        if let Some(endpoint) = hub
            .endpoint
            .clone()
            .or_else(|| std::env::var("HF_ENDPOINT").ok())
        {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
        }
        let api = builder.build().map_err(|e| EmbeddingError::Download {
            model: repo.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::Online {
            api: Box::new(api.repo(repo_ref)),
            cache: cache_repo,
            progress: hub.progress.clone(),
        })
    }

    /// A file the model cannot do without.
    fn get(&self, repo: &str, file: &str) -> Result<PathBuf> {
        self.get_optional(repo, file)?.ok_or_else(|| EmbeddingError::Download {
            model: repo.to_string(),
            reason: match self {
                Self::Online { .. } => format!("the repository has no file {file}"),
                Self::Offline(_) => format!(
                    "{file} is not in the local cache and offline mode (HF_HUB_OFFLINE) forbids downloading it"
                ),
            },
        })
    }

    /// A file that may be absent (Ok(None)); other failures are errors.
    fn get_optional(&self, repo: &str, file: &str) -> Result<Option<PathBuf>> {
        match self {
            Self::Offline(cache) => Ok(cache.get(file)),
            Self::Online {
                api,
                cache,
                progress,
            } => match Self::fetch(api, cache, progress.as_ref(), file) {
                Ok(path) => Ok(Some(path)),
                Err(ApiError::RequestError(e)) if matches!(*e, ureq::Error::Status(404, _)) => {
                    tracing::debug!(model = repo, file, "not in the repository");
                    Ok(None)
                }
                Err(e) => Err(EmbeddingError::Download {
                    model: repo.to_string(),
                    reason: format!("{file}: {e}"),
                }),
            },
        }
    }

    /// The cached file, else a download, reported to `progress` when there is one.
    fn fetch(
        api: &hf_hub::api::sync::ApiRepo,
        cache: &hf_hub::CacheRepo,
        progress: Option<&ProgressHook>,
        file: &str,
    ) -> std::result::Result<PathBuf, ApiError> {
        let Some(hook) = progress else {
            return api.get(file);
        };
        match cache.get(file) {
            Some(path) => Ok(path),
            None => api.download_with_progress(file, ProgressAdapter(Arc::clone(&hook.0))),
        }
    }
}

/// Finds the files for `options.model` (a folder, an installed copy in the caller's models
/// folder, or a hub repository) and the built-in row it names, if any.
pub(crate) fn resolve(options: &LoadOptions) -> Result<(ModelFiles, Option<ModelSpec>)> {
    let model = options.model.as_str();
    let fuse = options.fuse.as_ref();
    let builtin = options.spec.clone().or_else(|| ModelSpec::builtin(model));
    let path = Path::new(model);
    if path.is_dir() {
        return Ok((
            local_files_with(path, &options.variant, builtin.as_ref(), fuse)?,
            builtin,
        ));
    }
    if let Some(installed) = builtin
        .as_ref()
        .and_then(|spec| spec.install_dir.as_deref())
        .and_then(|name| installed_dir(options, name))
    {
        tracing::debug!(model, folder = %installed.display(), "using the installed copy");
        return Ok((
            local_files_with(&installed, &options.variant, builtin.as_ref(), fuse)?,
            builtin,
        ));
    }
    let looks_like_repo =
        model.split('/').count() == 2 && !model.starts_with('.') && !model.starts_with('/');
    if !looks_like_repo {
        return Err(EmbeddingError::model_load(
            model,
            "no such folder, and not a Hugging Face repository id (owner/name)",
        ));
    }
    let repo = builtin.as_ref().map_or(model, |spec| spec.id.as_str());
    Ok((
        hub_files_with(repo, &options.variant, builtin.as_ref(), &options.hub, fuse)?,
        builtin,
    ))
}

/// The installed copy `<models_dir>/<name>` of a built-in model, if the caller gave a models
/// folder and the copy holds a tokenizer.
fn installed_dir(options: &LoadOptions, name: &str) -> Option<PathBuf> {
    let dir = options.models_dir.as_ref()?.join(name);
    dir.join("tokenizer.json").is_file().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, files: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("akidb-src-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for file in files {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        dir
    }

    #[test]
    fn finds_onnx_at_root_or_under_onnx() {
        let root = folder("root", &["tokenizer.json", "model.onnx"]);
        let files = local_files(&root, &OnnxVariant::Fp32, None).unwrap();
        assert_eq!(files.onnx, root.join("model.onnx"));
        assert_eq!(files.onnx_data, None);
        let hub = folder(
            "hub",
            &[
                "tokenizer.json",
                "onnx/model_q4.onnx",
                "onnx/model_q4.onnx_data",
            ],
        );
        let files = local_files(&hub, &OnnxVariant::Q4, None).unwrap();
        assert_eq!(files.onnx, hub.join("onnx/model_q4.onnx"));
        assert_eq!(files.onnx_data, Some(hub.join("onnx/model_q4.onnx_data")));
        for dir in [root, hub] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn missing_pieces_are_named() {
        let dir = folder("missing", &["tokenizer.json", "onnx/model.onnx"]);
        let gemma = ModelSpec::embedding_gemma_300m();
        let err = local_files(&dir, &OnnxVariant::Fp32, Some(&gemma))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.onnx_data") && err.contains("missing weights file"),
            "{err}"
        );
        let err = local_files(&dir, &OnnxVariant::Fp16, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no model_fp16.onnx"), "{err}");
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        let err = local_files(&dir, &OnnxVariant::Fp32, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_builtin_id_is_found_in_the_callers_models_folder_only() {
        let models = folder(
            "installed",
            &[
                "all-MiniLM-L6-v2/tokenizer.json",
                "all-MiniLM-L6-v2/model.onnx",
            ],
        );
        let id = "sentence-transformers/all-MiniLM-L6-v2";
        let (files, builtin) = resolve(&LoadOptions::new(id).with_models_dir(&models)).unwrap();
        assert_eq!(files.dir, models.join("all-MiniLM-L6-v2"));
        assert_eq!(builtin.map(|spec| spec.id), Some(id.to_string()));
        // Without a models folder, nothing local is guessed: the hub (offline here) is asked.
        let cache = folder("empty-cache", &[]);
        let err = resolve(
            &LoadOptions::new(id)
                .with_offline(true)
                .with_cache_dir(&cache),
        )
        .unwrap_err();
        assert!(matches!(err, EmbeddingError::Download { .. }), "{err:?}");
        for dir in [models, cache] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn a_local_folder_wins_and_other_strings_must_look_like_repositories() {
        let dir = folder("plain", &["tokenizer.json", "model.onnx"]);
        let (files, builtin) = resolve(&LoadOptions::new(dir.to_str().unwrap())).unwrap();
        assert_eq!(files.onnx, dir.join("model.onnx"));
        assert!(builtin.is_none());
        let err = resolve(&LoadOptions::new("./no/such/folder")).unwrap_err();
        assert!(err.to_string().contains("no such folder"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
