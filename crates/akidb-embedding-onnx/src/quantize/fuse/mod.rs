//! Graph fusion: rewrites the operators a transformer export spells out into the fused
//! operators ONNX Runtime's CPU kernels run in one pass, and folds the export's shape
//! arithmetic.
//!
//! Each rewrite is one step, applied only where its whole pattern matches and every constant
//! it relies on has the expected value; anything else is left as it is:
//!
//! - **shape folding** ([`FuseStep::Shapes`]): the `Shape → Gather → Unsqueeze → Concat`
//!   chains (and `Equal`/`Where` guards) that compute `Reshape`, `Expand` and `Slice`
//!   arguments at run time become constants, with `0` (copy the input's dimension) and `-1`
//!   (infer it) standing for the batch size and sequence length. What follows only from those
//!   is worked out symbolically ([`shapes`]); nodes left without readers are removed.
//! - **GELU** ([`FuseStep::Gelu`]): the tanh approximation spelled as nine `Mul`/`Add`/`Tanh`
//!   nodes (EmbeddingGemma's `gelu_pytorch_tanh`) becomes `com.microsoft::FastGelu`; the exact
//!   `x · ½(1 + erf(x/√2))` becomes `com.microsoft::Gelu`.
//!
//! The graph's weights are not touched: [`fuse_graph`] rewrites nodes and adds small
//! constants only.

mod multi_query;
mod packed_attention;
mod q8_matmul;
mod rotary;
mod shapes;
mod skip_norm;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::graph::{
    collect_uses, consumers, float_attribute, int_attribute, ints_attribute, le_f32, producers,
};
use super::proto::{GraphProto, NodeProto, TensorProto, tensor_proto::DataType};
use shapes::{Dim, ShapeFacts, normalise_axis};

const MS_DOMAIN: &str = "com.microsoft";

/// Bumped whenever the fusion's output changes for the same graph and recipe (cache entries
/// of fused graphs are keyed by it).
pub const FORMAT_VERSION: u32 = 4;

/// The graph metadata key a fused graph carries (its value: the recipe as JSON).
pub const FUSED_METADATA_KEY: &str = "akidb.fused";

/// One kind of rewrite [`fuse_graph`] can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FuseStep {
    /// Constant `Reshape`/`Expand`/`Slice` arguments instead of run-time shape arithmetic.
    Shapes,
    /// `FastGelu`/`Gelu` instead of the spelled-out activation.
    Gelu,
    /// `SimplifiedLayerNormalization` for RMSNorm spelled out as `Pow`, `ReduceMean`, `Add`,
    /// `Sqrt`, `Div`, `Mul` and the scale (EmbeddingGemma's `1 + weight` is already folded
    /// into that constant by the export). ONNX Runtime fuses most of these itself, but not
    /// those a transpose it moves lands in.
    RmsNorm,
    /// `com.microsoft::MultiHeadAttention` instead of the spelled-out scaled dot product
    /// attention (its mask, padding and sliding window alike, becomes the attention bias).
    Attention,
    /// `com.microsoft::RotaryEmbedding` for rotary position embeddings spelled out as
    /// `x·cos + rotate_half(x)·sin` with `cos`/`sin` computed from the positions at run time;
    /// the tables are precomputed from the graph's own inverse frequencies.
    Rotary,
    /// `com.microsoft::SkipSimplifiedLayerNormalization` for a residual `Add` whose sum an
    /// RMSNorm (`SimplifiedLayerNormalization`) reads; the sum, when read elsewhere too, is
    /// the operator's fourth output.
    SkipRmsNorm,
    /// Attention whose key and value are one head repeated for every query head
    /// (EmbeddingGemma's): the `MultiHeadAttention` the [`FuseStep::Attention`] step wrote
    /// becomes two GEMMs over that one head with the queries of all heads as rows, and the
    /// heads' transposes and repeats go (see `multi_query.rs`). Needs the attention step.
    MultiQuery,
    /// Attention whose query, key and value are each `MatMul(x, W) + b` of one input (BERT's,
    /// MiniLM's): the `MultiHeadAttention` the [`FuseStep::Attention`] step wrote becomes
    /// `com.microsoft::Attention` with the three weights and biases concatenated, one GEMM
    /// for the three projections (see `packed_attention.rs`). Needs the attention step.
    PackedAttention,
    /// The `q8` products (`MatMulNBits`, 8 bits, accuracy level 4) on this library's AVX-512
    /// VNNI kernel: `ai.akidb::MatMulQ8`, same inputs, same arithmetic (see
    /// [`crate::q8_matmul`] and `q8_matmul.rs`). Such a graph loads only in this library's
    /// sessions; the default recipe has the step only where [`crate::q8_matmul::supported`].
    /// It changes nothing in a graph without `MatMulNBits` (fp32, MiniLM).
    Q8Matmul,
    /// This library's row operators ([`crate::row_ops`]) in place of chains of ONNX
    /// Runtime's: the same arithmetic in fewer nodes, each on the thread pool only when its
    /// rows are many. In the attention the [`FuseStep::MultiQuery`] step writes (that step
    /// applies this part, where a query and a key each have exactly a norm then a rotation
    /// from position 0, there is a bias and each projection is read whole):
    /// `ai.akidb::NormRotary` for the query's and the key's per-head norm and rotation, and
    /// `ai.akidb::AttentionSoftmax` for the bias and softmax, in the layouts the two GEMMs
    /// read (EmbeddingGemma: 6 nodes per layer between the projections and the output
    /// projection where there were 17). And `ai.akidb::NormAddNorm` for each RMSNorm whose
    /// result a `SkipSimplifiedLayerNormalization` adds to the residual (EmbeddingGemma's
    /// post-attention and post-feedforward norms: 48 nodes fewer; the
    /// [`FuseStep::SkipRmsNorm`] step applies this part and needs it). Such a graph loads
    /// only in this library's sessions.
    RowOps,
}

impl FuseStep {
    /// The steps whose graphs any ONNX Runtime loads: all but [`FuseStep::Q8Matmul`] and
    /// [`FuseStep::RowOps`].
    pub const PORTABLE: [FuseStep; 8] = [
        FuseStep::Shapes,
        FuseStep::Gelu,
        FuseStep::RmsNorm,
        FuseStep::Attention,
        FuseStep::Rotary,
        FuseStep::SkipRmsNorm,
        FuseStep::MultiQuery,
        FuseStep::PackedAttention,
    ];

    /// Every step, in the order they are applied: [`FuseStep::PORTABLE`], then
    /// [`FuseStep::Q8Matmul`] (after the `q8` quantisation when one runs in the same rewrite)
    /// and [`FuseStep::RowOps`] (whose attention part the multi-query step applies).
    pub const ALL: [FuseStep; 10] = {
        let mut all = [FuseStep::RowOps; 10];
        let mut i = 0;
        while i < Self::PORTABLE.len() {
            all[i] = Self::PORTABLE[i];
            i += 1;
        }
        all[i] = FuseStep::Q8Matmul;
        all
    };
}

/// Which rewrites to apply. The default applies every step that passes the fidelity checks
/// (`tests/it/fuse.rs`, and on the real EmbeddingGemma `tests/it/real_gemma.rs`):
/// [`FuseStep::PORTABLE`], [`FuseStep::RowOps`], and [`FuseStep::Q8Matmul`] where
/// this CPU runs its kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FuseRecipe {
    /// The steps, applied in [`FuseStep::ALL`]'s order.
    pub steps: Vec<FuseStep>,
}

impl Default for FuseRecipe {
    fn default() -> Self {
        let mut steps = FuseStep::PORTABLE.to_vec();
        if crate::q8_matmul::supported() {
            steps.push(FuseStep::Q8Matmul);
        }
        steps.push(FuseStep::RowOps);
        Self { steps }
    }
}

impl FuseRecipe {
    /// A recipe of only these steps.
    pub fn only(steps: impl IntoIterator<Item = FuseStep>) -> Self {
        let mut steps: Vec<FuseStep> = steps.into_iter().collect();
        steps.sort();
        steps.dedup();
        Self { steps }
    }

    pub(crate) fn has(&self, step: FuseStep) -> bool {
        self.steps.contains(&step)
    }
}

pub(crate) use q8_matmul::use_q8_matmul;

/// What a fusion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuseReport {
    /// Nodes of the graph before (`Constant` nodes included).
    pub nodes_before: usize,
    /// Nodes after.
    pub nodes_after: usize,
    /// How many times each rewrite applied (`reshape`, `expand`, `slice`, `fast_gelu`, …).
    pub rewrites: BTreeMap<String, usize>,
}

impl FuseReport {
    /// Adds `count` rewrites of kind `what` (none: no entry).
    pub(crate) fn add(&mut self, what: &str, count: usize) {
        if count > 0 {
            *self.rewrites.entry(what.to_string()).or_default() += count;
        }
    }
}

/// A fused subgraph's new initializer (small constants are inline; larger ones go to the
/// weights file).
pub(crate) struct NewTensor {
    pub(crate) name: String,
    pub(crate) data_type: DataType,
    pub(crate) dims: Vec<i64>,
    pub(crate) bytes: Vec<u8>,
}

/// The small constants of a graph (inline initializers and `Constant` nodes), by name.
pub(crate) struct Constants {
    tensors: HashMap<String, TensorProto>,
}

impl Constants {
    pub(crate) fn of(graph: &GraphProto) -> Self {
        let mut tensors = HashMap::new();
        for init in &graph.initializer {
            if init.data_location != Some(super::proto::tensor_proto::DataLocation::External as i32)
            {
                tensors.insert(init.name().to_string(), init.clone());
            }
        }
        for node in &graph.node {
            // An Identity of a constant is that constant (exports share weights so).
            if node.op_type() == "Identity"
                && node.domain().is_empty()
                && let (Some(input), Some(output)) = (node.input.first(), node.output.first())
                && let Some(tensor) = tensors.get(input).cloned()
            {
                tensors.insert(output.clone(), tensor);
                continue;
            }
            if node.op_type() != "Constant" || !node.domain().is_empty() {
                continue;
            }
            let (Some(out), Some(attribute)) = (node.output.first(), node.attribute.first()) else {
                continue;
            };
            let tensor = match attribute.name() {
                "value" => attribute.t.clone(),
                "value_int" => attribute.i.map(|i| TensorProto {
                    data_type: Some(DataType::Int64 as i32),
                    int64_data: vec![i],
                    ..Default::default()
                }),
                "value_ints" => Some(TensorProto {
                    data_type: Some(DataType::Int64 as i32),
                    dims: vec![attribute.ints.len() as i64],
                    int64_data: attribute.ints.clone(),
                    ..Default::default()
                }),
                "value_float" => attribute.f.map(|f| TensorProto {
                    data_type: Some(DataType::Float as i32),
                    float_data: vec![f],
                    ..Default::default()
                }),
                _ => None,
            };
            if let Some(tensor) = tensor {
                tensors.insert(out.clone(), tensor);
            }
        }
        Self { tensors }
    }

    pub(crate) fn tensor(&self, name: &str) -> Option<&TensorProto> {
        self.tensors.get(name)
    }

    /// An integer (or boolean) constant's values.
    pub(crate) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        tensor_ints(self.tensors.get(name)?)
    }

    /// A float constant's values.
    pub(crate) fn floats(&self, name: &str) -> Option<Vec<f32>> {
        tensor_floats(self.tensors.get(name)?)
    }

    /// A float constant holding one value (any shape of one element).
    pub(crate) fn scalar(&self, name: &str) -> Option<f32> {
        match self.floats(name)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }
}

/// The values of an integer or boolean tensor stored in the graph.
pub(crate) fn tensor_ints(t: &TensorProto) -> Option<Vec<i64>> {
    let dt = t.data_type?;
    if let Some(raw) = &t.raw_data {
        return match dt {
            x if x == DataType::Int64 as i32 => Some(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect(),
            ),
            x if x == DataType::Int32 as i32 => Some(
                raw.chunks_exact(4)
                    .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect(),
            ),
            x if x == DataType::Bool as i32 || x == DataType::Uint8 as i32 => {
                Some(raw.iter().map(|&b| i64::from(b)).collect())
            }
            _ => None,
        };
    }
    match dt {
        x if x == DataType::Int64 as i32 => Some(t.int64_data.clone()),
        x if x == DataType::Int32 as i32
            || x == DataType::Bool as i32
            || x == DataType::Uint8 as i32 =>
        {
            Some(t.int32_data.iter().map(|&v| i64::from(v)).collect())
        }
        _ => None,
    }
}

/// The values of a float tensor stored in the graph.
pub(crate) fn tensor_floats(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type? != DataType::Float as i32 {
        return None;
    }
    match &t.raw_data {
        Some(raw) => Some(le_f32(raw)),
        None => Some(t.float_data.clone()),
    }
}

/// The values of an integer tensor that is a constant or whose value the shape facts know.
pub(crate) fn known_ints(
    constants: &Constants,
    facts: &ShapeFacts,
    name: &str,
) -> Option<Vec<i64>> {
    constants
        .ints(name)
        .or_else(|| facts.values.get(name)?.all_known())
}

/// A norm node's `epsilon` attribute, or the ONNX default 1e-5 where it has none.
pub(crate) fn norm_epsilon(node: &NodeProto) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name() == "epsilon")
        .and_then(|a| a.f)
        .unwrap_or(1e-5)
}

pub(crate) fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|a| a.name() == name)
        .and_then(|a| a.i)
}

pub(crate) fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name() == name)
        .map(|a| a.ints.clone())
}

/// Applies `recipe` to `graph` in place. Returns what it did and the new constants the
/// rewritten nodes read (the caller stores them with the graph's other initializers).
pub(crate) fn fuse_graph(
    graph: &mut GraphProto,
    recipe: &FuseRecipe,
) -> (FuseReport, Vec<NewTensor>) {
    let mut report = FuseReport {
        nodes_before: graph.node.len(),
        ..Default::default()
    };
    let mut fuser = Fuser {
        new: Vec::new(),
        expanded: HashMap::new(),
        initializers: Vec::new(),
        names: graph
            .initializer
            .iter()
            .map(|t| t.name().to_string())
            .chain(graph.node.iter().flat_map(|n| n.output.iter().cloned()))
            .collect(),
        report: &mut report,
        row_ops: recipe.has(FuseStep::RowOps),
    };
    for step in FuseStep::ALL {
        if !recipe.has(step) {
            continue;
        }
        match step {
            FuseStep::Shapes => fuser.fold_shapes(graph),
            FuseStep::Gelu => fuser.fuse_gelu(graph),
            FuseStep::RmsNorm => fuser.fuse_rms_norm(graph),
            FuseStep::Attention => fuser.fuse_attention(graph),
            FuseStep::Rotary => fuser.fuse_rotary(graph),
            FuseStep::SkipRmsNorm => {
                fuser.fuse_skip_rms_norm(graph);
                if fuser.row_ops {
                    fuser.fuse_norm_add_norm(graph);
                }
            }
            FuseStep::MultiQuery => fuser.fuse_multi_query(graph),
            FuseStep::PackedAttention => fuser.fuse_packed_attention(graph),
            FuseStep::Q8Matmul => {
                let count = q8_matmul::use_q8_matmul(graph, &HashSet::new());
                fuser.report.add("q8_matmul", count);
            }
            // Applied by the skip-norm and multi-query steps (`row_ops` above): the rewrites
            // read shapes, which stop at this library's operators.
            FuseStep::RowOps => {}
        }
        fuser.flush(graph);
    }
    let mut new = std::mem::take(&mut fuser.new);
    remove_dead_nodes(graph);
    let read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    new.retain(|t| read.contains(t.name.as_str()));
    report.nodes_after = graph.node.len();
    tracing::debug!(
        before = report.nodes_before,
        after = report.nodes_after,
        rewrites = ?report.rewrites,
        "graph fused"
    );
    (report, new)
}

struct Fuser<'a> {
    new: Vec<NewTensor>,
    /// Padding biases expanded to one row per query, by the original's name.
    expanded: HashMap<String, String>,
    initializers: Vec<TensorProto>,
    names: HashSet<String>,
    report: &'a mut FuseReport,
    /// Whether the multi-query step writes [`FuseStep::RowOps`]' operators.
    row_ops: bool,
}

impl Fuser<'_> {
    fn count(&mut self, what: &str) {
        *self.report.rewrites.entry(what.to_string()).or_default() += 1;
    }

    fn fresh_name(&mut self, base: &str) -> String {
        let mut name = format!("akidb_fused/{base}");
        let mut n = 0;
        while self.names.contains(&name) {
            n += 1;
            name = format!("akidb_fused/{base}_{n}");
        }
        self.names.insert(name.clone());
        name
    }

    /// A new int64 constant, stored in the graph (inline: shape constants are small).
    fn int64_constant(&mut self, base: &str, values: &[i64], scalar: bool) -> String {
        let name = self.fresh_name(base);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(DataType::Int64 as i32),
            dims: if scalar {
                Vec::new()
            } else {
                vec![values.len() as i64]
            },
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// Puts each node at its index in place of the one there, counting the rewrite.
    fn replace_nodes(&mut self, graph: &mut GraphProto, rewrites: Vec<(usize, NodeProto, &str)>) {
        for (index, node, what) in rewrites {
            if let Some(slot) = graph.node.get_mut(index) {
                *slot = node;
                self.count(what);
            }
        }
    }

    /// Puts each list of nodes at its index in place of the one there (the last index first,
    /// so the others stay valid), counting the rewrite.
    fn splice_nodes(
        &mut self,
        graph: &mut GraphProto,
        mut edits: Vec<(usize, Vec<NodeProto>)>,
        what: &str,
    ) {
        edits.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
        for (index, nodes) in edits {
            graph.node.splice(index..=index, nodes);
            self.count(what);
        }
    }

    /// Moves the constants made so far into the graph, so later steps see them.
    fn flush(&mut self, graph: &mut GraphProto) {
        graph.initializer.append(&mut self.initializers);
    }

    /// Replaces run-time shape arithmetic by constants (see the module documentation).
    fn fold_shapes(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let is_constant = |name: &str| constants.tensor(name).is_some();
        let mut clear_allowzero = Vec::new();
        for index in 0..graph.node.len() {
            let node = &graph.node[index];
            if !node.domain().is_empty() {
                continue;
            }
            let data_shape = node
                .input
                .first()
                .and_then(|n| facts.shapes.get(n))
                .cloned();
            let value_of = |i: usize| {
                node.input
                    .get(i)
                    .filter(|n| !n.is_empty() && !is_constant(n))
                    .and_then(|n| facts.values.get(n))
                    .cloned()
            };
            let mut replace: Vec<(usize, Vec<i64>, bool, &str)> = Vec::new();
            match node.op_type() {
                "Reshape" => {
                    // With `allowzero`, a 0 in the target is a zero-sized dimension, not a
                    // copy: fold only targets without one, and let the copies be copies.
                    let allowzero = attr_int(node, "allowzero") == Some(1);
                    if let (Some(target), Some(data)) = (value_of(1), &data_shape)
                        && !(allowzero && target.elements.contains(&Dim::Known(0)))
                        && let Some(constant) = reshape_target(&target.elements, data)
                    {
                        replace.push((1, constant, false, "reshape"));
                        if allowzero {
                            clear_allowzero.push(index);
                        }
                    }
                }
                "Expand" => {
                    if let (Some(target), Some(data)) = (value_of(1), &data_shape)
                        && let Some(constant) = expand_target(&target.elements, data)
                    {
                        replace.push((1, constant, false, "expand"));
                    }
                }
                "Slice" => {
                    let axes: Option<Vec<i64>> = match node.input.get(3) {
                        Some(n) if !n.is_empty() => facts.values.get(n).and_then(|v| v.all_known()),
                        _ => value_of(1).map(|s| (0..s.elements.len() as i64).collect()),
                    };
                    for slot in 1..node.input.len().min(5) {
                        let Some(value) = value_of(slot) else {
                            continue;
                        };
                        let folded: Option<Vec<i64>> = value
                            .elements
                            .iter()
                            .enumerate()
                            .map(|(i, d)| match d {
                                Dim::Known(k) => Some(*k),
                                // An end equal to the whole dimension: to the end.
                                sym if slot == 2 => {
                                    let axis = *axes.as_ref()?.get(i)?;
                                    let data = data_shape.as_ref()?;
                                    let axis = normalise_axis(axis, data.len())?;
                                    (data[axis] == *sym).then_some(i64::MAX)
                                }
                                _ => None,
                            })
                            .collect();
                        if let Some(folded) = folded {
                            replace.push((slot, folded, value.scalar, "slice"));
                        }
                    }
                }
                _ => {
                    // Any other integer argument fully known: a constant.
                    for slot in 0..node.input.len() {
                        if node.op_type() == "Shape" {
                            break;
                        }
                        if let Some(value) = value_of(slot)
                            && let Some(known) = value.all_known()
                        {
                            replace.push((slot, known, value.scalar, "constant"));
                        }
                    }
                }
            }
            for (slot, values, scalar, what) in replace {
                // Only int64 tensors are replaced (narrower integers are left alone).
                let folded: HashSet<&str> = self.initializers.iter().map(|t| t.name()).collect();
                if !is_int64(graph, &producers, &folded, &graph.node[index].input[slot]) {
                    continue;
                }
                let name = self.int64_constant(what, &values, scalar);
                graph.node[index].input[slot] = name;
                self.count(what);
            }
        }
        for index in clear_allowzero {
            if let Some(node) = graph.node.get_mut(index)
                && node
                    .input
                    .get(1)
                    .is_some_and(|i| i.starts_with("akidb_fused/"))
            {
                node.attribute.retain(|a| a.name() != "allowzero");
            }
        }
    }

    /// `FastGelu` for the tanh approximation and `Gelu` for the exact form.
    fn fuse_gelu(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let producers = producers(graph);
        let near = |name: &str, expected: f32| {
            constants
                .scalar(name)
                .is_some_and(|v| (v - expected).abs() <= 1e-6 * expected.abs().max(1.0))
        };
        let mut rewrites: Vec<(usize, NodeProto, &str)> = Vec::new();
        for (index, node) in graph.node.iter().enumerate() {
            if node.op_type() != "Mul" || !node.domain().is_empty() || node.input.len() != 2 {
                continue;
            }
            let fused = match_tanh_gelu(node, graph, &producers, &near)
                .map(|x| ("FastGelu", "fast_gelu", x))
                .or_else(|| {
                    match_erf_gelu(node, graph, &producers, &near).map(|x| ("Gelu", "gelu", x))
                });
            if let Some((op, what, x)) = fused {
                rewrites.push((
                    index,
                    NodeProto {
                        name: Some(format!("{}/{op}", node.name())),
                        op_type: Some(op.to_string()),
                        domain: Some(MS_DOMAIN.to_string()),
                        input: vec![x],
                        output: node.output.clone(),
                        ..Default::default()
                    },
                    what,
                ));
            }
        }
        self.replace_nodes(graph, rewrites);
    }
}

impl Fuser<'_> {
    /// `SimplifiedLayerNormalization(x, scale)` for
    /// `x · (1 / √(mean(x²) + ε)) · scale` over the last axis.
    fn fuse_rms_norm(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let producers = producers(graph);
        let mut rewrites = Vec::new();
        for (index, out) in graph.node.iter().enumerate() {
            if out.op_type() != "Mul" || !out.domain().is_empty() {
                continue;
            }
            let Some((scale, normed)) =
                either(out, |n| vector_length(graph, &producers, n).is_some())
            else {
                continue;
            };
            let Some(normed) = producer(graph, &producers, normed, "Mul") else {
                continue;
            };
            let Some((x, epsilon)) = normed.input.iter().find_map(|x| {
                let other = normed.input.iter().find(|o| *o != x)?;
                let epsilon = rms_of(graph, &producers, &constants, other, x)?;
                Some((x.clone(), epsilon))
            }) else {
                continue;
            };
            // A Cast to float of the input is the input (the kernel runs in float).
            let input = producer(graph, &producers, &x, "Cast")
                .filter(|c| attr_int(c, "to") == Some(DataType::Float as i64))
                .map_or(x.clone(), |c| c.input[0].clone());
            rewrites.push((
                index,
                NodeProto {
                    name: Some(format!("{}/SimplifiedLayerNormalization", out.name())),
                    op_type: Some("SimplifiedLayerNormalization".to_string()),
                    input: vec![input, scale.to_string()],
                    output: out.output.clone(),
                    attribute: vec![
                        int_attribute("axis", -1),
                        float_attribute("epsilon", epsilon),
                        int_attribute("stash_type", 1),
                    ],
                    ..Default::default()
                },
                "simplified_layer_normalization",
            ));
        }
        self.replace_nodes(graph, rewrites);
    }

    /// `MultiHeadAttention` for `Softmax(scale · Q·Kᵀ + bias)·V` followed by the heads'
    /// merge (`Transpose(0,2,1,3)` and `Reshape` to `[batch, sequence, hidden]`).
    fn fuse_attention(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let consumers = consumers(graph);
        let mut edits: Vec<(usize, Vec<NodeProto>)> = Vec::new();
        for node in &graph.node {
            if node.op_type() != "Softmax" || !node.domain().is_empty() {
                continue;
            }
            if let Some(plan) =
                self.match_attention(graph, node, &constants, &facts, &producers, &consumers)
            {
                edits.push(plan);
            }
        }
        self.splice_nodes(graph, edits, "multi_head_attention");
    }

    /// The nodes replacing the heads' merge `Reshape` (at the returned index) for the
    /// attention around `softmax`, when the whole pattern is there.
    fn match_attention(
        &mut self,
        graph: &GraphProto,
        softmax: &NodeProto,
        constants: &Constants,
        facts: &ShapeFacts,
        producers: &HashMap<String, usize>,
        consumers: &HashMap<String, Vec<usize>>,
    ) -> Option<(usize, Vec<NodeProto>)> {
        let node_at = |i: usize| graph.node.get(i);
        let only_consumer = |name: &str| -> Option<&NodeProto> {
            match consumers.get(name).map(Vec::as_slice) {
                Some([one]) => node_at(*one),
                _ => None,
            }
        };
        let shape = |name: &str| facts.shapes.get(name);
        let axis = attr_int(softmax, "axis").unwrap_or(-1);
        if axis != -1 && axis != 3 {
            return None;
        }
        // Scores, with the optional additive bias.
        let scores_in = softmax.input.first()?;
        let (scores, bias) = match producer(graph, producers, scores_in, "Add") {
            Some(add) => {
                let [a, b] = add.input.as_slice() else {
                    return None;
                };
                if producer(graph, producers, a, "MatMul").is_some() {
                    (a.clone(), Some(b.clone()))
                } else if producer(graph, producers, b, "MatMul").is_some() {
                    (b.clone(), Some(a.clone()))
                } else {
                    return None;
                }
            }
            None => (scores_in.clone(), None),
        };
        let qk = producer(graph, producers, &scores, "MatMul")?;
        let unscale = |name: &str| -> Option<(String, f32)> {
            if let Some(mul) = producer(graph, producers, name, "Mul") {
                for (x, c) in [
                    (&mul.input[0], &mul.input[1]),
                    (&mul.input[1], &mul.input[0]),
                ] {
                    if let Some(value) = constants.scalar(c) {
                        return Some((x.clone(), value));
                    }
                }
                return None;
            }
            if let Some(div) = producer(graph, producers, name, "Div") {
                let value = constants.scalar(div.input.get(1)?)?;
                return (value != 0.0).then(|| (div.input[0].clone(), 1.0 / value));
            }
            Some((name.to_string(), 1.0))
        };
        let (q_bnsh, q_scale) = unscale(qk.input.first()?)?;
        let (k_t, k_scale) = unscale(qk.input.get(1)?)?;
        // After the softmax: optionally `Where(IsNaN(p), 0, p)`, then `MatMul(p, V)`.
        let probabilities = softmax.output.first()?;
        let mut p = probabilities.clone();
        if let Some(users) = consumers.get(probabilities)
            && users.len() == 2
        {
            let isnan = users
                .iter()
                .filter_map(|&i| node_at(i))
                .find(|n| n.op_type() == "IsNaN")?;
            let guard = users
                .iter()
                .filter_map(|&i| node_at(i))
                .find(|n| n.op_type() == "Where")?;
            let zero = constants.scalar(guard.input.get(1)?)?;
            if guard.input.first() != isnan.output.first()
                || zero != 0.0
                || guard.input.get(2) != Some(probabilities)
                || only_consumer(isnan.output.first()?)?.output != guard.output
            {
                return None;
            }
            p = guard.output.first()?.clone();
        }
        let pv = only_consumer(&p)?;
        if pv.op_type() != "MatMul" || pv.input.first() != Some(&p) {
            return None;
        }
        let v_bnsh = pv.input.get(1)?.clone();
        let merge = only_consumer(pv.output.first()?)?;
        if merge.op_type() != "Transpose" || attr_ints(merge, "perm")? != [0, 2, 1, 3] {
            return None;
        }
        let reshape = only_consumer(merge.output.first()?)?;
        if reshape.op_type() != "Reshape" {
            return None;
        }
        let reshape_index = graph.node.iter().position(|n| std::ptr::eq(n, reshape))?;
        // Shapes: Q [B, N, S, H], Kᵀ [B, N, H, L], V [B, N, L, H], output [B, S, N·H].
        let q_shape = shape(&q_bnsh)?;
        let [b, Dim::Known(heads), s, Dim::Known(head_size)] = q_shape.as_slice() else {
            return None;
        };

        let k_bnsh = key_of_transposed(graph, producers, facts, &k_t)?;
        let k_shape = shape(&k_bnsh)?;
        let v_shape = shape(&v_bnsh)?;
        let [kb, Dim::Known(k_heads), l, Dim::Known(k_size)] = k_shape.as_slice() else {
            return None;
        };
        if kb != b || k_heads != heads || k_size != head_size || v_shape != k_shape {
            return None;
        }
        let out_shape = shape(reshape.output.first()?)?;
        if out_shape.as_slice() != [*b, *s, Dim::Known(heads * head_size)] {
            return None;
        }
        let mut nodes = Vec::new();
        let mut bias = bias;
        if let Some(name) = bias.clone() {
            let bias_shape = shape(&name)?;
            let [bb, bn, bs, bl] = bias_shape.as_slice() else {
                return None;
            };
            if !(*bb == *b || *bb == Dim::Known(1))
                || !(*bn == Dim::Known(1) || *bn == Dim::Known(*heads))
                || bl != l
            {
                return None;
            }
            if bs != s {
                // A bias shared by every query ([B, 1, 1, L], a padding mask): the operator
                // wants one row per query, so it is expanded once (for all layers).
                if *bs != Dim::Known(1) || s != l {
                    return None;
                }
                bias = Some(self.expanded_bias(graph, facts, &name, *s, &mut nodes)?);
            }
        }
        let name = reshape.name().to_string();
        // Query as [B, S, N·H]: the projection itself when Q is its heads' split, else
        // Q transposed back and merged.
        let query = match bsd_of_split(graph, producers, facts, &q_bnsh) {
            Some(x) => x,
            None => {
                let transposed = self.fresh_name("query_bsnh");
                let merged = self.fresh_name("query_bsd");
                let target = self.int64_constant("query_shape", &[0, 0, heads * head_size], false);
                nodes.push(NodeProto {
                    name: Some(format!("{name}/akidb_query_transpose")),
                    op_type: Some("Transpose".to_string()),
                    input: vec![q_bnsh.clone()],
                    output: vec![transposed.clone()],
                    attribute: vec![ints_attribute("perm", &[0, 2, 1, 3])],
                    ..Default::default()
                });
                nodes.push(NodeProto {
                    name: Some(format!("{name}/akidb_query_merge")),
                    op_type: Some("Reshape".to_string()),
                    input: vec![transposed, target],
                    output: vec![merged.clone()],
                    ..Default::default()
                });
                merged
            }
        };
        // Key and value: both as [B, L, N·H] projections when both are split heads, else
        // both as [B, N, L, H].
        let (key, value) = match (
            bsd_of_split(graph, producers, facts, &k_bnsh),
            bsd_of_split(graph, producers, facts, &v_bnsh),
        ) {
            (Some(k), Some(v)) => (k, v),
            _ => (k_bnsh, v_bnsh),
        };
        nodes.push(NodeProto {
            name: Some(format!("{name}/MultiHeadAttention")),
            op_type: Some("MultiHeadAttention".to_string()),
            domain: Some(MS_DOMAIN.to_string()),
            input: vec![
                query,
                key,
                value,
                String::new(),
                String::new(),
                bias.unwrap_or_default(),
            ],
            output: reshape.output.clone(),
            attribute: vec![
                int_attribute("num_heads", *heads),
                float_attribute("scale", q_scale * k_scale),
            ],
            ..Default::default()
        });
        Some((reshape_index, nodes))
    }
}

impl Fuser<'_> {
    /// `bias` `[B, 1, 1, S]` expanded to `[B, 1, S, S]`, the sequence length read from the
    /// graph input that has it; the nodes go to `nodes` the first time.
    fn expanded_bias(
        &mut self,
        graph: &GraphProto,
        facts: &ShapeFacts,
        bias: &str,
        sequence: Dim,
        nodes: &mut Vec<NodeProto>,
    ) -> Option<String> {
        if let Some(done) = self.expanded.get(bias) {
            return Some(done.clone());
        }
        let (input, axis) = graph.input.iter().find_map(|i| {
            let dims = facts.shapes.get(i.name())?;
            let axis = dims.iter().position(|d| *d == sequence)?;
            Some((i.name().to_string(), axis as i64))
        })?;
        let length = self.fresh_name("sequence_length");
        let ones = self.int64_constant("bias_rows_ones", &[1, 1], false);
        let one = self.int64_constant("bias_rows_one", &[1], false);
        let target = self.fresh_name("bias_rows_shape");
        let expanded = self.fresh_name("attention_bias");
        nodes.push(NodeProto {
            name: Some(format!("{expanded}/Shape")),
            op_type: Some("Shape".to_string()),
            input: vec![input],
            output: vec![length.clone()],
            attribute: vec![int_attribute("start", axis), int_attribute("end", axis + 1)],
            ..Default::default()
        });
        nodes.push(NodeProto {
            name: Some(format!("{expanded}/Concat")),
            op_type: Some("Concat".to_string()),
            input: vec![ones, length, one],
            output: vec![target.clone()],
            attribute: vec![int_attribute("axis", 0)],
            ..Default::default()
        });
        nodes.push(NodeProto {
            name: Some(format!("{expanded}/Expand")),
            op_type: Some("Expand".to_string()),
            input: vec![bias.to_string(), target],
            output: vec![expanded.clone()],
            ..Default::default()
        });
        self.expanded.insert(bias.to_string(), expanded.clone());
        Some(expanded)
    }
}

/// The length of a 1-D fp32 initializer (inline or in the weights file), directly or
/// through `Identity` nodes.
fn vector_length(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    name: &str,
) -> Option<i64> {
    if let Some(t) = graph.initializer.iter().find(|t| t.name() == name) {
        return match t.dims.as_slice() {
            [length] if t.data_type == Some(DataType::Float as i32) => Some(*length),
            _ => None,
        };
    }
    let identity = producer(graph, producers, name, "Identity")?;
    vector_length(graph, producers, identity.input.first()?)
}

/// ε when `name` is `1 / √(mean(x², last axis) + ε)` of `x` (or `Reciprocal(√…)`).
fn rms_of(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    constants: &Constants,
    name: &str,
    x: &str,
) -> Option<f32> {
    let sqrt_out = if let Some(div) = producer(graph, producers, name, "Div") {
        if constants.scalar(div.input.first()?)? != 1.0 {
            return None;
        }
        div.input.get(1)?
    } else {
        producer(graph, producers, name, "Reciprocal")?
            .input
            .first()?
    };
    let sqrt = producer(graph, producers, sqrt_out, "Sqrt")?;
    let add = producer(graph, producers, sqrt.input.first()?, "Add")?;
    let (mean, epsilon) = match (
        constants.scalar(&add.input[0]),
        constants.scalar(&add.input[1]),
    ) {
        (None, Some(e)) => (&add.input[0], e),
        (Some(e), None) => (&add.input[1], e),
        _ => return None,
    };
    let mean = producer(graph, producers, mean, "ReduceMean")?;
    if attr_int(mean, "keepdims").unwrap_or(1) != 1 {
        return None;
    }
    let axes = match mean.input.get(1) {
        Some(a) if !a.is_empty() => constants.ints(a)?,
        _ => attr_ints(mean, "axes")?,
    };
    if axes != [-1] {
        return None;
    }
    let square = mean.input.first()?;
    let pow = producer(graph, producers, square, "Pow")?;
    if pow.input.first().map(String::as_str) != Some(x)
        || constants.scalar(pow.input.get(1)?)? != 2.0
    {
        return None;
    }
    Some(epsilon)
}

/// `K` as `[B, N, L, H]` from its transpose `Kᵀ` `[B, N, H, L]`: a `Transpose(0,1,3,2)`, or
/// the `Reshape([-1, L, H]) → Transpose(0,2,1) → Reshape([B, N, H, L])` exports also write.
fn key_of_transposed(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    facts: &ShapeFacts,
    k_t: &str,
) -> Option<String> {
    if let Some(t) = producer(graph, producers, k_t, "Transpose") {
        return (attr_ints(t, "perm")? == [0, 1, 3, 2]).then(|| t.input[0].clone());
    }
    let outer = producer(graph, producers, k_t, "Reshape")?;
    let t = producer(graph, producers, outer.input.first()?, "Transpose")?;
    if attr_ints(t, "perm")? != [0, 2, 1] {
        return None;
    }
    let inner = producer(graph, producers, t.input.first()?, "Reshape")?;
    let k = inner.input.first()?;
    let k_shape = facts.shapes.get(k)?;
    let t_shape = facts.shapes.get(k_t)?;
    let [b, n, l, h] = k_shape.as_slice() else {
        return None;
    };
    (t_shape.as_slice() == [*b, *n, *h, *l]).then(|| k.clone())
}

/// The `[B, S, N·H]` tensor whose heads' split `Transpose(Reshape(x, [B, S, N, H]),
/// (0,2,1,3))` is `bnsh`, if it is one.
fn bsd_of_split(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    facts: &ShapeFacts,
    bnsh: &str,
) -> Option<String> {
    let t = producer(graph, producers, bnsh, "Transpose")?;
    if attr_ints(t, "perm")? != [0, 2, 1, 3] {
        return None;
    }
    let split = producer(graph, producers, t.input.first()?, "Reshape")?;
    let x = split.input.first()?;
    let x_shape = facts.shapes.get(x)?;
    let split_shape = facts.shapes.get(split.output.first()?)?;
    let [b, s, Dim::Known(hidden)] = x_shape.as_slice() else {
        return None;
    };
    let [sb, ss, Dim::Known(n), Dim::Known(h)] = split_shape.as_slice() else {
        return None;
    };
    (sb == b && ss == s && n * h == *hidden).then(|| x.clone())
}

/// Whether tensor `name` holds int64 values, following the shape arithmetic back to where
/// its type is set (shape values are int64; a `Cast` to int32 is not).
fn is_int64(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    folded: &HashSet<&str>,
    name: &str,
) -> bool {
    let int64 = DataType::Int64 as i32;
    // The constants folding made are all int64.
    if folded.contains(name) {
        return true;
    }
    if let Some(init) = graph.initializer.iter().find(|t| t.name() == name) {
        return init.data_type == Some(int64);
    }
    let Some(node) = producers.get(name).and_then(|&i| graph.node.get(i)) else {
        return false;
    };
    match node.op_type() {
        "Shape" => true,
        "Cast" => attr_int(node, "to") == Some(i64::from(int64)),
        "Constant" | "ConstantOfShape" => node.attribute.first().and_then(|a| a.t.as_ref()).map_or(
            node.op_type() == "ConstantOfShape"
                || node.attribute.first().is_some_and(|a| a.name() != "value"),
            |t| t.data_type == Some(int64),
        ),
        "Where" => node
            .input
            .get(1)
            .is_some_and(|i| is_int64(graph, producers, folded, i)),
        "Gather" | "Concat" | "Unsqueeze" | "Squeeze" | "Reshape" | "Identity" | "Add" | "Sub"
        | "Mul" | "Div" => node
            .input
            .first()
            .is_some_and(|i| is_int64(graph, producers, folded, i)),
        _ => false,
    }
}

/// A constant `Reshape` target for the symbolic `target` applied to data of shape `data`:
/// a symbolic dimension equal to the input's at the same place becomes `0`, one other `-1`.
fn reshape_target(target: &[Dim], data: &[Dim]) -> Option<Vec<i64>> {
    let mut inferred = target.contains(&Dim::Known(-1));
    target
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(k) => Some(*k),
            sym if data.get(i) == Some(sym) => Some(0),
            _ if !inferred => {
                inferred = true;
                Some(-1)
            }
            _ => None,
        })
        .collect()
}

/// A constant `Expand` shape: a symbolic dimension the data already has at the aligned place
/// becomes `1` (broadcasting keeps the data's).
fn expand_target(target: &[Dim], data: &[Dim]) -> Option<Vec<i64>> {
    let rank = target.len().max(data.len());
    target
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(k) => Some(*k),
            sym => {
                let position = i + rank - target.len();
                let data_index = (position + data.len()).checked_sub(rank)?;
                (data.get(data_index) == Some(sym)).then_some(1)
            }
        })
        .collect()
}

fn producer<'g>(
    graph: &'g GraphProto,
    producers: &HashMap<String, usize>,
    name: &str,
    op: &str,
) -> Option<&'g NodeProto> {
    let node = graph.node.get(*producers.get(name)?)?;
    (node.op_type() == op && node.domain().is_empty()).then_some(node)
}

/// The two inputs of a binary node, tried in both orders: `(matches a, other)`.
fn either(node: &NodeProto, first: impl Fn(&str) -> bool) -> Option<(&str, &str)> {
    let [a, b] = node.input.as_slice() else {
        return None;
    };
    if first(a) {
        Some((a, b))
    } else if first(b) {
        Some((b, a))
    } else {
        None
    }
}

/// `0.5 · (x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))))`, in the orders exports write it;
/// returns `x`.
fn match_tanh_gelu(
    out: &NodeProto,
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    near: &impl Fn(&str, f32) -> bool,
) -> Option<String> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    // out = 0.5 * m, m = x * (1 + tanh(...))
    let (_, m) = either(out, |n| near(n, 0.5))?;
    let m = producer(graph, producers, m, "Mul")?;
    for (x, one_plus) in [(&m.input[0], &m.input[1]), (&m.input[1], &m.input[0])] {
        let Some(add) = producer(graph, producers, one_plus, "Add") else {
            continue;
        };
        let Some((_, tanh_out)) = either(add, |n| near(n, 1.0)) else {
            continue;
        };
        let Some(tanh) = producer(graph, producers, tanh_out, "Tanh") else {
            continue;
        };
        let Some(scaled) = producer(graph, producers, &tanh.input[0], "Mul") else {
            continue;
        };
        let Some((_, inner)) = either(scaled, |n| near(n, SQRT_2_OVER_PI)) else {
            continue;
        };
        let Some(sum) = producer(graph, producers, inner, "Add") else {
            continue;
        };
        let Some((_, cubic)) = either(sum, |n| n == x.as_str()) else {
            continue;
        };
        let Some(cubic) = producer(graph, producers, cubic, "Mul") else {
            continue;
        };
        let Some((_, cube)) = either(cubic, |n| near(n, 0.044_715)) else {
            continue;
        };
        if is_cube_of(graph, producers, cube, x) {
            return Some(x.clone());
        }
    }
    None
}

/// Whether `name` is `x · (x · x)` or `Pow(x, 3)`.
fn is_cube_of(graph: &GraphProto, producers: &HashMap<String, usize>, name: &str, x: &str) -> bool {
    let constants_pow3 = |node: &NodeProto| {
        node.input.first().is_some_and(|i| i == x)
            && node.input.get(1).is_some_and(|e| {
                let c = Constants::of_one(graph, e);
                c.is_some_and(|v| (v - 3.0).abs() < 1e-6)
            })
    };
    if let Some(pow) = producer(graph, producers, name, "Pow") {
        return constants_pow3(pow);
    }
    let Some(outer) = producer(graph, producers, name, "Mul") else {
        return false;
    };
    let Some((_, square)) = either(outer, |n| n == x) else {
        return false;
    };
    producer(graph, producers, square, "Mul")
        .is_some_and(|sq| sq.input.iter().all(|i| i == x) && sq.input.len() == 2)
}

impl Constants {
    /// One float scalar constant of `graph`, without collecting them all.
    fn of_one(graph: &GraphProto, name: &str) -> Option<f32> {
        let tensor = graph
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .cloned()
            .or_else(|| {
                graph
                    .node
                    .iter()
                    .find(|n| n.op_type() == "Constant" && n.output.iter().any(|o| o == name))
                    .and_then(|n| n.attribute.first())
                    .and_then(|a| a.t.clone())
            })?;
        match tensor_floats(&tensor)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }
}

/// `(x · 0.5) · (1 + erf(x / √2))` and the orders around it; returns `x`.
fn match_erf_gelu(
    out: &NodeProto,
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    near: &impl Fn(&str, f32) -> bool,
) -> Option<String> {
    const SQRT_2: f32 = std::f32::consts::SQRT_2;
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    // Find the `1 + erf(..)` factor among the Mul's inputs (one level down at most).
    let erf_factor = |name: &str| -> Option<String> {
        let add = producer(graph, producers, name, "Add")?;
        let (_, erf_out) = either(add, |n| near(n, 1.0))?;
        let erf = producer(graph, producers, erf_out, "Erf")?;
        let arg = erf.input.first()?;
        if let Some(div) = producer(graph, producers, arg, "Div")
            && near(div.input.get(1)?, SQRT_2)
        {
            return Some(div.input[0].clone());
        }
        let mul = producer(graph, producers, arg, "Mul")?;
        let (_, x) = either(mul, |n| near(n, FRAC_1_SQRT_2))?;
        Some(x.to_string())
    };
    let [a, b] = out.input.as_slice() else {
        return None;
    };
    for (factor, other) in [(a, b), (b, a)] {
        let Some(x) = erf_factor(factor) else {
            continue;
        };
        // other = x * 0.5
        if let Some(half) = producer(graph, producers, other, "Mul")
            && let Some((_, y)) = either(half, |n| near(n, 0.5))
            && y == x
        {
            return Some(x);
        }
    }
    // x * (0.5 * (1 + erf))
    for (x, half) in [(a, b), (b, a)] {
        if let Some(half) = producer(graph, producers, half, "Mul")
            && let Some((_, factor)) = either(half, |n| near(n, 0.5))
            && erf_factor(factor).is_some_and(|inner| inner == *x)
        {
            return Some(x.clone());
        }
    }
    // 0.5 * (x * (1 + erf))
    let (_, inner) = either(out, |n| near(n, 0.5))?;
    let inner = producer(graph, producers, inner, "Mul")?;
    let [a, b] = inner.input.as_slice() else {
        return None;
    };
    for (factor, other) in [(a, b), (b, a)] {
        if let Some(x) = erf_factor(factor)
            && x == *other
        {
            return Some(x);
        }
    }
    None
}

/// Removes nodes none of whose outputs is read (by a node, a subgraph or a graph output),
/// repeatedly, and initializers no node reads any more.
fn remove_dead_nodes(graph: &mut GraphProto) {
    loop {
        let mut used = HashSet::new();
        collect_uses(graph, &mut used);
        let before = graph.node.len();
        graph
            .node
            .retain(|n| n.output.iter().any(|o| !o.is_empty() && used.contains(o)));
        if graph.node.len() == before {
            let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
            graph
                .initializer
                .retain(|t| used.contains(t.name()) || inputs.contains(t.name()));
            return;
        }
    }
}

/// Small graphs for the matchers' unit tests.
#[cfg(test)]
pub(crate) mod test_graph {
    use super::super::proto::{
        TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto::Dimension,
        tensor_shape_proto::dimension::Value as DimValue, type_proto,
    };
    use super::*;

    /// A dimension of a graph input: a number or a named free dimension.
    pub(crate) enum D {
        N(i64),
        P(&'static str),
    }

    /// A node of the default domain.
    pub(crate) fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            name: Some(format!("/{output}/{op}")),
            op_type: Some(op.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            ..Default::default()
        }
    }

    /// A `MultiHeadAttention` as the attention step writes it: two heads, scale 0.5, the
    /// attention bias `bias`, output `out`.
    pub(crate) fn multi_head_attention(query: &str, key: &str, value: &str) -> NodeProto {
        let mut mha = node(
            "MultiHeadAttention",
            &[query, key, value, "", "", "bias"],
            "out",
        );
        mha.domain = Some(MS_DOMAIN.to_string());
        mha.attribute.push(int_attribute("num_heads", 2));
        mha.attribute.push(float_attribute("scale", 0.5));
        mha
    }

    /// `node` with an integer attribute.
    pub(crate) fn with_int(mut node: NodeProto, name: &str, value: i64) -> NodeProto {
        node.attribute.push(int_attribute(name, value));
        node
    }

    /// `node` with a float attribute.
    pub(crate) fn with_float(mut node: NodeProto, name: &str, value: f32) -> NodeProto {
        node.attribute.push(float_attribute(name, value));
        node
    }

    /// A float graph input.
    pub(crate) fn input(name: &str, dims: &[D]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    D::N(n) => DimValue::DimValue(*n),
                    D::P(p) => DimValue::DimParam(p.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        float_input(name, Some(TensorShapeProto { dim }))
    }

    /// A float graph input of any shape, its rank too.
    pub(crate) fn any_float_input(name: &str) -> ValueInfoProto {
        float_input(name, None)
    }

    fn float_input(name: &str, shape: Option<TensorShapeProto>) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// An int64 initializer.
    pub(crate) fn ints(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
        TensorProto {
            int64_data: values.to_vec(),
            ..initializer(name, DataType::Int64, dims)
        }
    }

    /// A float initializer.
    pub(crate) fn floats(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            float_data: values.to_vec(),
            ..initializer(name, DataType::Float, dims)
        }
    }

    fn initializer(name: &str, data_type: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some(name.to_string()),
            data_type: Some(data_type as i32),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets_use_copy_and_infer_for_symbols() {
        let (b, s) = (Dim::Sym(1), Dim::Sym(2));
        assert_eq!(
            reshape_target(
                &[b, s, Dim::Known(3), Dim::Known(256)],
                &[b, s, Dim::Known(768)]
            ),
            Some(vec![0, 0, 3, 256])
        );
        // [B, 3, S, 256] from [B, 1, 3, S, 256]: B copied, S inferred.
        let data = [b, Dim::Known(1), Dim::Known(3), s, Dim::Known(256)];
        assert_eq!(
            reshape_target(&[b, Dim::Known(3), s, Dim::Known(256)], &data),
            Some(vec![0, 3, -1, 256])
        );
        // Two symbols that cannot be copied: no constant target.
        assert_eq!(reshape_target(&[s, b], &[b, s]), None);
    }

    #[test]
    fn expand_targets_keep_the_datas_symbols_by_broadcasting() {
        let (b, s) = (Dim::Sym(1), Dim::Sym(2));
        let data = [b, Dim::Known(1), Dim::Known(1), s, Dim::Known(256)];
        assert_eq!(
            expand_target(
                &[b, Dim::Known(1), Dim::Known(3), s, Dim::Known(256)],
                &data
            ),
            Some(vec![1, 1, 3, 1, 256])
        );
        // A symbol the data does not have cannot be expanded to from a constant.
        assert_eq!(expand_target(&[b, s], &[b, Dim::Known(1)]), None);
    }
}
