//! Reading an ONNX graph with its external weights, rewriting it, and writing the result.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prost::Message;

use super::fuse::{FUSED_METADATA_KEY, FuseRecipe, FuseStep, fuse_graph, use_q8_matmul};
use super::graph::{collect_uses, f32_bytes, int_attribute, le_f32};
use super::pack::{quantize_gather_rows, quantize_matmul_weight};
use super::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    tensor_proto::DataLocation, tensor_proto::DataType,
};
use super::{NodeSettings, QuantizeError, QuantizeRecipe, QuantizeReport, QuantizedNodeInfo};

/// Tensors smaller than this stay inside the graph file (as `onnx.save` does).
const INLINE_LIMIT: usize = 1024;
/// Tensors of at least this size start at an [`ALIGNMENT`] offset in the `_data` file.
const ALIGN_THRESHOLD: usize = 1 << 20;
/// Offset alignment of large tensors (the allocation granularity ONNX Runtime maps with).
const ALIGNMENT: u64 = 64 * 1024;
/// Bytes of fp32 embedding rows read at once.
const EMBEDDING_CHUNK_BYTES: usize = 16 << 20;
const MS_DOMAIN: &str = "com.microsoft";

/// A `MatMulNBits` node as found in a graph, with its packed weight and scales: what
/// [`read_matmul_nbits`] returns (used to compare two quantisers' outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatMul {
    /// Node name.
    pub name: String,
    /// Input names: A, B, scales (and zero points, if any).
    pub inputs: Vec<String>,
    /// Attribute `K`.
    pub k: i64,
    /// Attribute `N`.
    pub n: i64,
    /// Attribute `bits`.
    pub bits: i64,
    /// Attribute `block_size`.
    pub block_size: i64,
    /// Attribute `accuracy_level`, when present.
    pub accuracy_level: Option<i64>,
    /// Shape of B.
    pub packed_dims: Vec<i64>,
    /// Bytes of B.
    pub packed: Vec<u8>,
    /// Shape of the scales.
    pub scales_dims: Vec<i64>,
    /// Scales (little-endian f32 bytes decoded).
    pub scales: Vec<f32>,
}

/// Reads every `MatMulNBits` node of a graph with its B and scales tensors.
pub fn read_matmul_nbits(onnx: &Path) -> Result<Vec<QuantizedMatMul>, QuantizeError> {
    let model = read_model(onnx)?;
    let graph = model
        .graph
        .ok_or_else(|| QuantizeError::invalid(onnx, "the model has no graph"))?;
    let mut source = Source::new(onnx);
    let inits: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    let mut found = Vec::new();
    for node in graph.node.iter().filter(|n| n.op_type() == "MatMulNBits") {
        let attr = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name() == name)
                .and_then(|a| a.i)
        };
        let tensor = |index: usize| {
            node.input
                .get(index)
                .and_then(|name| inits.get(name.as_str()).copied())
                .ok_or_else(|| {
                    QuantizeError::invalid(
                        onnx,
                        format!("node `{}` input {index} is not an initializer", node.name()),
                    )
                })
        };
        let packed = tensor(1)?;
        let scales = tensor(2)?;
        let scale_bytes = source.tensor_bytes(scales)?;
        found.push(QuantizedMatMul {
            name: node.name().to_string(),
            inputs: node.input.clone(),
            k: attr("K").unwrap_or(-1),
            n: attr("N").unwrap_or(-1),
            bits: attr("bits").unwrap_or(-1),
            block_size: attr("block_size").unwrap_or(-1),
            accuracy_level: attr("accuracy_level"),
            packed_dims: packed.dims.clone(),
            packed: source.tensor_bytes(packed)?,
            scales_dims: scales.dims.clone(),
            scales: scale_bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        });
    }
    Ok(found)
}

/// Whether the graph `onnx` was written fused (it carries [`FUSED_METADATA_KEY`]); false
/// when it cannot be read.
pub fn is_fused(onnx: &Path) -> bool {
    read_model(onnx).is_ok_and(|m| {
        m.metadata_props
            .iter()
            .any(|p| p.key() == FUSED_METADATA_KEY)
    })
}

fn read_model(onnx: &Path) -> Result<ModelProto, QuantizeError> {
    let bytes = std::fs::read(onnx).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => QuantizeError::Missing {
            what: "ONNX graph",
            path: onnx.to_path_buf(),
        },
        _ => QuantizeError::io(onnx, e),
    })?;
    ModelProto::decode(bytes.as_slice())
        .map_err(|e| QuantizeError::invalid(onnx, format!("not an ONNX model: {e}")))
}

/// One planned weight quantisation.
struct MatMulJob {
    weight: String,
    packed_name: String,
    scales_name: String,
    k: usize,
    n: usize,
    settings: NodeSettings,
}

struct EmbeddingJob {
    weight: String,
    data_name: String,
    scales_name: String,
    rows: usize,
    cols: usize,
    block_size: usize,
}

/// Quantises the graph `source` (with its external weights) into `output` and
/// `<output>_data`, following `recipe`. Both files are written under temporary names and
/// renamed into place, the weights first.
pub fn quantize_file(
    source: &Path,
    output: &Path,
    recipe: &QuantizeRecipe,
) -> Result<QuantizeReport, QuantizeError> {
    rewrite_file(source, output, Some(recipe), None)
}

/// Rewrites the graph `source` (with its external weights) into `output` and
/// `<output>_data`: fused as `fuse` says (see [`super::fuse`]), then quantised as `recipe`
/// says. With neither, the graph and its weights are copied (in the layout this module
/// writes). Both files are written under temporary names and renamed into place, the
/// weights first.
pub fn rewrite_file(
    source: &Path,
    output: &Path,
    recipe: Option<&QuantizeRecipe>,
    fuse: Option<&FuseRecipe>,
) -> Result<QuantizeReport, QuantizeError> {
    let started = Instant::now();
    if let Some(recipe) = recipe {
        recipe.validate()?;
    }
    let mut model = read_model(source)?;
    let mut graph = model
        .graph
        .take()
        .ok_or_else(|| QuantizeError::invalid(source, "the model has no graph"))?;
    let source_bytes = source_size(source, &graph);
    let (mut fused, new_tensors) = match fuse {
        Some(fuse) => {
            let (report, tensors) = fuse_graph(&mut graph, fuse);
            (Some(report), tensors)
        }
        None => (None, Vec::new()),
    };
    let no_recipe = QuantizeRecipe {
        keep_fp32: vec!["*".to_string()],
        embedding_block_size: None,
        ..QuantizeRecipe::default()
    };
    let quantizing = recipe.is_some();
    let recipe = recipe.unwrap_or(&no_recipe);

    let init_index: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    let float_2d = |name: &str| -> Option<(usize, usize)> {
        let t = &graph.initializer[*init_index.get(name)?];
        if t.data_type != Some(DataType::Float as i32) || t.dims.len() != 2 {
            return None;
        }
        let rows = usize::try_from(t.dims[0]).ok()?;
        let cols = usize::try_from(t.dims[1]).ok()?;
        (rows > 0 && cols > 0).then_some((rows, cols))
    };

    // Plan the MatMuls.
    let mut jobs: Vec<MatMulJob> = Vec::new();
    let mut job_of: HashMap<(String, NodeSettings), usize> = HashMap::new();
    let mut node_job: HashMap<usize, usize> = HashMap::new();
    let mut quantized = Vec::new();
    let mut kept_fp32 = Vec::new();
    let mut matmuls = 0;
    for (index, node) in graph.node.iter().enumerate() {
        if node.op_type() != "MatMul" || !node.domain().is_empty() || node.input.len() != 2 {
            continue;
        }
        matmuls += 1;
        let weight = node.input[1].as_str();
        let Some((k, n)) = float_2d(weight) else {
            continue;
        };
        let Some(settings) = recipe.settings_for(node.name()) else {
            kept_fp32.push(node.name().to_string());
            continue;
        };
        let key = (weight.to_string(), settings);
        let job = match job_of.get(&key) {
            Some(&job) => job,
            None => {
                let bits = settings.bits;
                // ONNX Runtime's names; a weight quantised twice with different settings gets
                // its settings appended to stay unique.
                let suffix = if jobs.iter().any(|j| j.weight == weight) {
                    format!("_b{}_a{}", settings.block_size, settings.accuracy_level)
                } else {
                    String::new()
                };
                jobs.push(MatMulJob {
                    weight: weight.to_string(),
                    packed_name: format!("{weight}_Q{bits}{suffix}"),
                    scales_name: format!("{weight}_scales{suffix}"),
                    k,
                    n,
                    settings,
                });
                job_of.insert(key, jobs.len() - 1);
                jobs.len() - 1
            }
        };
        node_job.insert(index, job);
        quantized.push(QuantizedNodeInfo {
            node: node.name().to_string(),
            weight: weight.to_string(),
            k,
            n,
            settings,
        });
    }

    // Plan the embedding table: the largest 2-D fp32 initializer gathered along axis 0.
    let mut embedding: Option<(usize, EmbeddingJob)> = None;
    if let Some(block_size) = recipe.embedding_block_size {
        for (index, node) in graph.node.iter().enumerate() {
            if node.op_type() != "Gather" || !node.domain().is_empty() || node.input.len() != 2 {
                continue;
            }
            let axis = node
                .attribute
                .iter()
                .find(|a| a.name() == "axis")
                .and_then(|a| a.i)
                .unwrap_or(0);
            let Some((rows, cols)) = float_2d(&node.input[0]) else {
                continue;
            };
            if axis != 0
                || embedding
                    .as_ref()
                    .is_some_and(|(_, e)| e.rows * e.cols >= rows * cols)
            {
                continue;
            }
            let weight = node.input[0].clone();
            embedding = Some((
                index,
                EmbeddingJob {
                    data_name: format!("{weight}_Q8"),
                    scales_name: format!("{weight}_scales"),
                    weight,
                    rows,
                    cols,
                    block_size,
                },
            ));
        }
        if embedding.is_none() {
            return Err(QuantizeError::invalid(
                source,
                "the recipe asks for a quantised embedding table, but no Gather (axis 0) reads a 2-D fp32 initializer",
            ));
        }
    }

    if quantizing && jobs.is_empty() && embedding.is_none() {
        let reason = if matmuls == 0 {
            "the graph has no MatMul".to_string()
        } else if kept_fp32.is_empty() {
            format!("none of its {matmuls} MatMuls has a constant 2-D fp32 weight")
        } else {
            format!(
                "the recipe keeps every MatMul with a constant weight in fp32 ({} of them: {}{})",
                kept_fp32.len(),
                kept_fp32[..kept_fp32.len().min(3)].join(", "),
                if kept_fp32.len() > 3 { ", …" } else { "" }
            )
        };
        return Err(QuantizeError::NothingToQuantize {
            path: source.to_path_buf(),
            reason,
        });
    }

    // Rewrite the nodes.
    for (&index, &job) in &node_job {
        let job = &jobs[job];
        let node = &mut graph.node[index];
        let s = job.settings;
        let mut attributes = vec![
            int_attribute("K", job.k as i64),
            int_attribute("N", job.n as i64),
            int_attribute("bits", i64::from(s.bits)),
            int_attribute("block_size", s.block_size as i64),
        ];
        if s.accuracy_level != 0 {
            attributes.push(int_attribute("accuracy_level", i64::from(s.accuracy_level)));
        }
        *node = NodeProto {
            input: vec![
                node.input[0].clone(),
                job.packed_name.clone(),
                job.scales_name.clone(),
            ],
            output: std::mem::take(&mut node.output),
            name: Some(if node.name().is_empty() {
                String::new()
            } else {
                format!("{}_Q{}", node.name(), s.bits)
            }),
            op_type: Some("MatMulNBits".to_string()),
            domain: Some(MS_DOMAIN.to_string()),
            attribute: attributes,
            ..Default::default()
        };
    }
    if let Some((index, job)) = &embedding {
        let node = &mut graph.node[*index];
        *node = NodeProto {
            input: vec![
                job.data_name.clone(),
                node.input[1].clone(),
                job.scales_name.clone(),
            ],
            output: std::mem::take(&mut node.output),
            name: Some(if node.name().is_empty() {
                String::new()
            } else {
                format!("{}_Q8", node.name())
            }),
            op_type: Some("GatherBlockQuantized".to_string()),
            domain: Some(MS_DOMAIN.to_string()),
            attribute: vec![
                int_attribute("gather_axis", 0),
                int_attribute("quantize_axis", 1),
                int_attribute("block_size", job.block_size as i64),
                int_attribute("bits", 8),
            ],
            ..Default::default()
        };
    }

    // The products just quantised run on this library's kernel when the fusion asks (the
    // fusion ran before the quantisation, on fp32 `MatMul`s).
    if quantizing
        && let (Some(fuse), Some(report)) = (fuse, fused.as_mut())
        && fuse.has(FuseStep::Q8Matmul)
    {
        let new_names: HashSet<&str> = jobs
            .iter()
            .flat_map(|j| [j.packed_name.as_str(), j.scales_name.as_str()])
            .collect();
        report.add("q8_matmul", use_q8_matmul(&mut graph, &new_names));
    }

    // Initializers still read by some node (or a graph output) are kept.
    let mut used: HashSet<String> = HashSet::new();
    collect_uses(&graph, &mut used);
    let replaced: HashSet<&str> = jobs
        .iter()
        .map(|j| j.weight.as_str())
        .chain(embedding.iter().map(|(_, e)| e.weight.as_str()))
        .collect();

    // Write the weights.
    let data_name = format!(
        "{}_data",
        output
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| QuantizeError::invalid(output, "the output needs a file name"))?
    );
    let data_path = output.with_file_name(&data_name);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temp_suffix = format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let temp_data = append_suffix(&data_path, &temp_suffix);
    let temp_graph = append_suffix(output, &temp_suffix);
    let result = (|| {
        let mut sink = Sink::create(&temp_data, data_name.clone())?;
        let mut src = Source::new(source);
        let originals = std::mem::take(&mut graph.initializer);
        let mut initializers = Vec::with_capacity(originals.len() + 2 * jobs.len());
        let mut quantize_inputs: HashMap<String, TensorProto> = HashMap::new();
        for tensor in originals {
            let name = tensor.name().to_string();
            if replaced.contains(name.as_str()) {
                let still_used = used.contains(&name);
                quantize_inputs.insert(name.clone(), tensor.clone());
                if !still_used {
                    continue;
                }
            }
            initializers.push(sink.copy_tensor(tensor, &mut src)?);
        }
        for job in &jobs {
            let tensor = &quantize_inputs[&job.weight];
            let weight = src.read_f32(tensor, job.k * job.n)?;
            if let Some(bad) = weight.iter().position(|v| !v.is_finite()) {
                return Err(QuantizeError::invalid(
                    source,
                    format!("weight `{}` holds a non-finite value at {bad}", job.weight),
                ));
            }
            let s = job.settings;
            let packed = quantize_matmul_weight(&weight, job.k, job.n, s.bits, s.block_size);
            drop(weight);
            let blocks = packed.blocks as i64;
            initializers.push(sink.put(
                &job.packed_name,
                DataType::Uint8,
                vec![job.n as i64, blocks, packed.blob_size as i64],
                &packed.packed,
            )?);
            initializers.push(sink.put(
                &job.scales_name,
                DataType::Float,
                vec![job.n as i64, blocks],
                &f32_bytes(&packed.scales),
            )?);
        }
        if let Some((_, job)) = &embedding {
            let tensor = &quantize_inputs[&job.weight];
            initializers.extend(write_embedding(job, tensor, &mut src, &mut sink, source)?);
        }
        for tensor in &new_tensors {
            initializers.push(sink.put(
                &tensor.name,
                tensor.data_type,
                tensor.dims.clone(),
                &tensor.bytes,
            )?);
        }
        graph.initializer = initializers;
        graph
            .input
            .retain(|i| !replaced.contains(i.name()) || used.contains(i.name()));
        sink.finish()?;

        for domain in [crate::q8_matmul::DOMAIN, MS_DOMAIN] {
            let used = graph.node.iter().any(|n| n.domain() == domain);
            if used && !model.opset_import.iter().any(|o| o.domain() == domain) {
                model.opset_import.push(OperatorSetIdProto {
                    domain: Some(domain.to_string()),
                    version: Some(1),
                });
            }
        }
        if let Some(fuse) = fuse {
            model
                .metadata_props
                .retain(|p| p.key() != FUSED_METADATA_KEY);
            model.metadata_props.push(StringStringEntryProto {
                key: Some(FUSED_METADATA_KEY.to_string()),
                value: Some(serde_json::to_string(fuse).unwrap_or_default()),
            });
        }
        model.graph = Some(graph);
        std::fs::write(&temp_graph, model.encode_to_vec())
            .map_err(|e| QuantizeError::io(&temp_graph, e))?;
        std::fs::rename(&temp_data, &data_path).map_err(|e| QuantizeError::io(&data_path, e))?;
        std::fs::rename(&temp_graph, output).map_err(|e| QuantizeError::io(output, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp_data);
        let _ = std::fs::remove_file(&temp_graph);
    }
    result?;

    let output_bytes = [output, data_path.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let report = QuantizeReport {
        output: output.to_path_buf(),
        quantized,
        kept_fp32,
        embedding: embedding.map(|(_, e)| e.weight),
        fused,
        source_bytes,
        output_bytes,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        source = %source.display(),
        output = %output.display(),
        matmuls = report.quantized.len(),
        kept_fp32 = report.kept_fp32.len(),
        embedding = report.embedding.is_some(),
        source_mb = source_bytes / 1_000_000,
        output_mb = output_bytes / 1_000_000,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "quantised"
    );
    Ok(report)
}

fn write_embedding(
    job: &EmbeddingJob,
    tensor: &TensorProto,
    src: &mut Source,
    sink: &mut Sink,
    source: &Path,
) -> Result<Vec<TensorProto>, QuantizeError> {
    let rows_per_chunk = (EMBEDDING_CHUNK_BYTES / (job.cols * 4)).max(1);
    let blocks = job.cols.div_ceil(job.block_size);
    let mut scales = Vec::with_capacity(job.rows * blocks);
    let location = src.locate(tensor, job.rows * job.cols * 4)?;
    sink.begin_tensor(job.rows * job.cols)?;
    let start = sink.offset;
    let mut row = 0;
    while row < job.rows {
        let count = rows_per_chunk.min(job.rows - row);
        let bytes = src.read_at(&location, (row * job.cols * 4) as u64, count * job.cols * 4)?;
        let values = le_f32(&bytes);
        if values.iter().any(|v| !v.is_finite()) {
            return Err(QuantizeError::invalid(
                source,
                format!("embedding table `{}` holds non-finite values", job.weight),
            ));
        }
        let (data, chunk_scales) = quantize_gather_rows(&values, job.cols, job.block_size);
        sink.write_raw(&data)?;
        scales.extend(chunk_scales);
        row += count;
    }
    let data = external_tensor(
        &job.data_name,
        DataType::Uint8,
        vec![job.rows as i64, job.cols as i64],
        &sink.location,
        start,
        (job.rows * job.cols) as u64,
    );
    let scales = sink.put(
        &job.scales_name,
        DataType::Float,
        vec![job.rows as i64, blocks as i64],
        &f32_bytes(&scales),
    )?;
    Ok(vec![data, scales])
}

fn append_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn source_size(source: &Path, graph: &GraphProto) -> u64 {
    let mut files: HashSet<String> = HashSet::new();
    for t in &graph.initializer {
        if let Some(ext) = external_entries(t) {
            files.insert(ext.location);
        }
    }
    let dir = source.parent().unwrap_or(Path::new("."));
    std::fs::metadata(source).map_or(0, |m| m.len())
        + files
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum::<u64>()
}

struct External {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn external_entries(t: &TensorProto) -> Option<External> {
    if t.data_location != Some(DataLocation::External as i32) {
        return None;
    }
    let get = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key() == key)
            .map(|e| e.value().to_string())
    };
    Some(External {
        location: get("location")?,
        offset: get("offset").and_then(|v| v.parse().ok()).unwrap_or(0),
        length: get("length").and_then(|v| v.parse().ok()),
    })
}

fn external_tensor(
    name: &str,
    data_type: DataType,
    dims: Vec<i64>,
    location: &str,
    offset: u64,
    length: u64,
) -> TensorProto {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    };
    TensorProto {
        name: Some(name.to_string()),
        data_type: Some(data_type as i32),
        dims,
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            entry("location", location.to_string()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ],
        ..Default::default()
    }
}

/// Where a tensor's bytes are in an external file.
struct Located {
    path: PathBuf,
    offset: u64,
}

/// The source graph's external weight files, opened on demand.
struct Source {
    graph: PathBuf,
    dir: PathBuf,
    files: HashMap<PathBuf, (File, u64)>,
}

impl Source {
    fn new(graph: &Path) -> Self {
        Self {
            graph: graph.to_path_buf(),
            dir: graph
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            files: HashMap::new(),
        }
    }

    /// Checks a tensor's external location and that `expected` bytes exist there.
    fn locate(&mut self, t: &TensorProto, expected: usize) -> Result<Located, QuantizeError> {
        let ext = external_entries(t).ok_or_else(|| {
            QuantizeError::invalid(&self.graph, format!("`{}` is not external", t.name()))
        })?;
        let relative = Path::new(&ext.location);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(QuantizeError::invalid(
                &self.graph,
                format!(
                    "`{}` names its weights file `{}`, which is not a plain path inside the model folder",
                    t.name(),
                    ext.location
                ),
            ));
        }
        let path = self.dir.join(relative);
        if let Some(length) = ext.length
            && length != expected as u64
        {
            return Err(QuantizeError::invalid(
                &self.graph,
                format!(
                    "`{}` claims {length} bytes in {}, its shape needs {expected}",
                    t.name(),
                    ext.location
                ),
            ));
        }
        let size = self.file(&path)?.1;
        if ext.offset + expected as u64 > size {
            return Err(QuantizeError::invalid(
                &path,
                format!(
                    "the weights file is too short for `{}` ({} bytes at offset {}, the file has {size}): truncated?",
                    t.name(),
                    expected,
                    ext.offset
                ),
            ));
        }
        Ok(Located {
            path,
            offset: ext.offset,
        })
    }

    fn file(&mut self, path: &Path) -> Result<&mut (File, u64), QuantizeError> {
        if !self.files.contains_key(path) {
            let file = File::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => QuantizeError::Missing {
                    what: "external weights file",
                    path: path.to_path_buf(),
                },
                _ => QuantizeError::io(path, e),
            })?;
            let size = file
                .metadata()
                .map_err(|e| QuantizeError::io(path, e))?
                .len();
            self.files.insert(path.to_path_buf(), (file, size));
        }
        self.files
            .get_mut(path)
            .ok_or_else(|| QuantizeError::invalid(path, "weights file vanished"))
    }

    fn read_at(&mut self, at: &Located, offset: u64, len: usize) -> Result<Vec<u8>, QuantizeError> {
        let path = at.path.clone();
        let (file, _) = self.file(&path)?;
        file.seek(SeekFrom::Start(at.offset + offset))
            .map_err(|e| QuantizeError::io(&path, e))?;
        let mut bytes = vec![0u8; len];
        file.read_exact(&mut bytes)
            .map_err(|e| QuantizeError::io(&path, e))?;
        Ok(bytes)
    }

    /// A tensor's raw bytes, wherever they are stored.
    fn tensor_bytes(&mut self, t: &TensorProto) -> Result<Vec<u8>, QuantizeError> {
        if let Some(ext) = external_entries(t) {
            let len = ext.length.map_or_else(
                || {
                    let size = self.file(&self.dir.join(&ext.location))?.1;
                    Ok(size.saturating_sub(ext.offset))
                },
                Ok,
            )?;
            let len = usize::try_from(len)
                .map_err(|_| QuantizeError::invalid(&self.graph, "tensor too large"))?;
            let at = self.locate(t, len)?;
            return self.read_at(&at, 0, len);
        }
        if t.raw_data.is_some() {
            return Ok(t.raw_data.clone().unwrap_or_default());
        }
        if !t.float_data.is_empty() {
            return Ok(f32_bytes(&t.float_data));
        }
        if !t.int32_data.is_empty() {
            // uint8 and friends are stored widened in int32_data.
            return Ok(t.int32_data.iter().map(|&v| v as u8).collect());
        }
        Ok(Vec::new())
    }

    /// An fp32 tensor of `count` values.
    fn read_f32(&mut self, t: &TensorProto, count: usize) -> Result<Vec<f32>, QuantizeError> {
        if t.segment.is_some() {
            return Err(QuantizeError::invalid(
                &self.graph,
                format!("`{}` is a segmented tensor", t.name()),
            ));
        }
        let values = if external_entries(t).is_some() {
            let at = self.locate(t, count * 4)?;
            le_f32(&self.read_at(&at, 0, count * 4)?)
        } else if let Some(raw) = &t.raw_data {
            le_f32(raw)
        } else {
            t.float_data.clone()
        };
        if values.len() != count {
            return Err(QuantizeError::invalid(
                &self.graph,
                format!(
                    "`{}` holds {} values, its shape needs {count}",
                    t.name(),
                    values.len()
                ),
            ));
        }
        Ok(values)
    }
}

/// The output `_data` file being written.
struct Sink {
    path: PathBuf,
    file: BufWriter<File>,
    offset: u64,
    location: String,
}

impl Sink {
    fn create(path: &Path, location: String) -> Result<Self, QuantizeError> {
        let file = File::create(path).map_err(|e| QuantizeError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            location,
        })
    }

    /// Pads so a tensor of `len` bytes starts where ONNX Runtime can map it.
    fn begin_tensor(&mut self, len: usize) -> Result<(), QuantizeError> {
        if len >= ALIGN_THRESHOLD && !self.offset.is_multiple_of(ALIGNMENT) {
            let pad = ALIGNMENT - self.offset % ALIGNMENT;
            self.write_raw(&vec![0u8; pad as usize])?;
        }
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), QuantizeError> {
        self.file
            .write_all(bytes)
            .map_err(|e| QuantizeError::io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// A new tensor: inline when small, else appended to the `_data` file.
    fn put(
        &mut self,
        name: &str,
        data_type: DataType,
        dims: Vec<i64>,
        bytes: &[u8],
    ) -> Result<TensorProto, QuantizeError> {
        if bytes.len() < INLINE_LIMIT {
            return Ok(TensorProto {
                name: Some(name.to_string()),
                data_type: Some(data_type as i32),
                dims,
                raw_data: Some(bytes.to_vec()),
                ..Default::default()
            });
        }
        self.begin_tensor(bytes.len())?;
        let start = self.offset;
        self.write_raw(bytes)?;
        Ok(external_tensor(
            name,
            data_type,
            dims,
            &self.location,
            start,
            bytes.len() as u64,
        ))
    }

    /// Keeps a source tensor: inline ones as they are, external ones copied into this file.
    fn copy_tensor(
        &mut self,
        mut t: TensorProto,
        src: &mut Source,
    ) -> Result<TensorProto, QuantizeError> {
        let Some(ext) = external_entries(&t) else {
            return Ok(t);
        };
        let len = match ext.length {
            Some(len) => len,
            None => {
                let size = src.file(&src.dir.join(&ext.location))?.1;
                size.saturating_sub(ext.offset)
            }
        };
        let len_usize = usize::try_from(len)
            .map_err(|_| QuantizeError::invalid(&src.graph, "tensor too large"))?;
        let at = src.locate(&t, len_usize)?;
        self.begin_tensor(len_usize)?;
        let start = self.offset;
        let (file, _) = src.file(&at.path)?;
        file.seek(SeekFrom::Start(at.offset))
            .map_err(|e| QuantizeError::io(&at.path, e))?;
        let copied = std::io::copy(&mut file.take(len), &mut self.file)
            .map_err(|e| QuantizeError::io(&self.path, e))?;
        if copied != len {
            return Err(QuantizeError::invalid(
                &at.path,
                format!("the weights file ended inside `{}`", t.name()),
            ));
        }
        self.offset += len;
        let fresh = external_tensor(
            t.name(),
            DataType::Float,
            Vec::new(),
            &self.location,
            start,
            len,
        );
        t.external_data = fresh.external_data;
        t.data_location = Some(DataLocation::External as i32);
        t.raw_data = None;
        Ok(t)
    }

    fn finish(mut self) -> Result<(), QuantizeError> {
        self.file
            .flush()
            .map_err(|e| QuantizeError::io(&self.path, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| QuantizeError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::pack::quantize_matmul_weight;

    fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.to_string()),
            name: Some(name.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            ..Default::default()
        }
    }

    fn write_model(dir: &Path, nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> PathBuf {
        let model = ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(18),
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer: initializers,
                output: vec![super::super::proto::ValueInfoProto {
                    name: Some("y".to_string()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("model.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("akidb-q8-rw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_graph_without_matmul_has_nothing_to_quantise() {
        let dir = scratch("nomatmul");
        let graph = write_model(&dir, vec![node("Add", "add", &["x", "x"], "y")], Vec::new());
        let err =
            quantize_file(&graph, &dir.join("q.onnx"), &QuantizeRecipe::default()).unwrap_err();
        assert!(
            matches!(&err, QuantizeError::NothingToQuantize { reason, .. } if reason.contains("no MatMul")),
            "{err}"
        );
        // A MatMul of two activations has no constant weight either.
        let graph = write_model(
            &dir,
            vec![node("MatMul", "mm", &["x", "z"], "y")],
            Vec::new(),
        );
        let err =
            quantize_file(&graph, &dir.join("q.onnx"), &QuantizeRecipe::default()).unwrap_err();
        assert!(
            err.to_string().contains("constant 2-D fp32 weight"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn inline_weights_are_quantised_and_shared_weights_stay_when_still_used() {
        let dir = scratch("inline");
        let (k, n) = (64usize, 24usize);
        let values: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.1).cos()).collect();
        let weight = TensorProto {
            name: Some("w".to_string()),
            dims: vec![k as i64, n as i64],
            data_type: Some(DataType::Float as i32),
            float_data: values.clone(),
            ..Default::default()
        };
        let graph = write_model(
            &dir,
            vec![
                node("MatMul", "mm", &["x", "w"], "h"),
                // `w` is also read by another node: it must survive.
                node("Add", "add", &["h", "w"], "y"),
            ],
            vec![weight],
        );
        let out = dir.join("q.onnx");
        let report = quantize_file(&graph, &out, &QuantizeRecipe::default()).unwrap();
        assert_eq!(report.quantized.len(), 1);
        let model = read_model(&out).unwrap();
        let g = model.graph.unwrap();
        assert!(g.initializer.iter().any(|t| t.name() == "w"), "still used");
        assert!(
            model
                .opset_import
                .iter()
                .any(|o| o.domain() == "com.microsoft" && o.version == Some(1))
        );
        let nodes = read_matmul_nbits(&out).unwrap();
        assert_eq!(nodes.len(), 1);
        let expected = quantize_matmul_weight(&values, k, n, 8, 32);
        assert_eq!(nodes[0].name, "mm_Q8");
        assert_eq!(nodes[0].inputs, vec!["x", "w_Q8", "w_scales"]);
        assert_eq!(nodes[0].packed, expected.packed);
        assert_eq!(nodes[0].scales, expected.scales);
        assert_eq!(nodes[0].packed_dims, vec![24, 2, 32]);
        assert_eq!(nodes[0].accuracy_level, Some(4));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn external_paths_must_stay_inside_the_model_folder() {
        let dir = scratch("escape");
        let entry = |k: &str, v: &str| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v.to_string()),
        };
        let weight = TensorProto {
            name: Some("w".to_string()),
            dims: vec![32, 4],
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![entry("location", "../../etc/passwd")],
            ..Default::default()
        };
        let graph = write_model(
            &dir,
            vec![node("MatMul", "mm", &["x", "w"], "y")],
            vec![weight],
        );
        let err =
            quantize_file(&graph, &dir.join("q.onnx"), &QuantizeRecipe::default()).unwrap_err();
        assert!(err.to_string().contains("not a plain path"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
