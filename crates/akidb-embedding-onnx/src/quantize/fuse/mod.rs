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

mod shapes;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::proto::{GraphProto, NodeProto, TensorProto, tensor_proto::DataType};
use shapes::{Dim, ShapeFacts, normalise_axis};

const MS_DOMAIN: &str = "com.microsoft";

/// Bumped whenever the fusion's output changes for the same graph and recipe (cache entries
/// of fused graphs are keyed by it).
pub const FORMAT_VERSION: u32 = 1;

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
}

impl FuseStep {
    /// Every step, in the order they are applied.
    pub const ALL: [FuseStep; 2] = [FuseStep::Shapes, FuseStep::Gelu];
}

/// Which rewrites to apply. The default applies every step that passes the fidelity checks
/// (`tests/it/fuse.rs`, and on the real EmbeddingGemma `tests/it/real_gemma.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FuseRecipe {
    /// The steps, applied in [`FuseStep::ALL`]'s order.
    pub steps: Vec<FuseStep>,
}

impl Default for FuseRecipe {
    fn default() -> Self {
        Self {
            steps: FuseStep::ALL.to_vec(),
        }
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

    fn has(&self, step: FuseStep) -> bool {
        self.steps.contains(&step)
    }
}

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
        Some(raw) => Some(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        None => Some(t.float_data.clone()),
    }
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
        names: graph
            .initializer
            .iter()
            .map(|t| t.name().to_string())
            .chain(graph.node.iter().flat_map(|n| n.output.iter().cloned()))
            .collect(),
        report: &mut report,
    };
    if recipe.has(FuseStep::Shapes) {
        fuser.fold_shapes(graph);
    }
    if recipe.has(FuseStep::Gelu) {
        fuser.fuse_gelu(graph);
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
    names: HashSet<String>,
    report: &'a mut FuseReport,
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

    fn int64_constant(&mut self, base: &str, values: &[i64], scalar: bool) -> String {
        let name = self.fresh_name(base);
        self.new.push(NewTensor {
            name: name.clone(),
            data_type: DataType::Int64,
            dims: if scalar {
                Vec::new()
            } else {
                vec![values.len() as i64]
            },
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// Replaces run-time shape arithmetic by constants (see the module documentation).
    fn fold_shapes(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let is_constant = |name: &str| constants.tensor(name).is_some();
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
                "Reshape" if attr_int(node, "allowzero") != Some(1) => {
                    if let (Some(target), Some(data)) = (value_of(1), &data_shape)
                        && let Some(constant) = reshape_target(&target.elements, data)
                    {
                        replace.push((1, constant, false, "reshape"));
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
                let folded: HashSet<&str> = self.new.iter().map(|t| t.name.as_str()).collect();
                if !is_int64(graph, &producers, &folded, &graph.node[index].input[slot]) {
                    continue;
                }
                let name = self.int64_constant(what, &values, scalar);
                graph.node[index].input[slot] = name;
                self.count(what);
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
            if let Some(x) = match_tanh_gelu(node, graph, &producers, &near) {
                rewrites.push((
                    index,
                    NodeProto {
                        name: Some(format!("{}/FastGelu", node.name())),
                        op_type: Some("FastGelu".to_string()),
                        domain: Some(MS_DOMAIN.to_string()),
                        input: vec![x],
                        output: node.output.clone(),
                        ..Default::default()
                    },
                    "fast_gelu",
                ));
            } else if let Some(x) = match_erf_gelu(node, graph, &producers, &near) {
                rewrites.push((
                    index,
                    NodeProto {
                        name: Some(format!("{}/Gelu", node.name())),
                        op_type: Some("Gelu".to_string()),
                        domain: Some(MS_DOMAIN.to_string()),
                        input: vec![x],
                        output: node.output.clone(),
                        ..Default::default()
                    },
                    "gelu",
                ));
            }
        }
        for (index, node, what) in rewrites {
            graph.node[index] = node;
            self.count(what);
        }
    }
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

/// Producer node index of each tensor.
fn producers(graph: &GraphProto) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for out in &node.output {
            map.insert(out.clone(), i);
        }
    }
    map
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
fn either<'n>(node: &'n NodeProto, first: impl Fn(&str) -> bool) -> Option<(&'n str, &'n str)> {
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
        let mut used: HashSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
        for node in &graph.node {
            used.extend(node.input.iter().cloned());
            for attribute in &node.attribute {
                if let Some(g) = &attribute.g {
                    collect_inputs(g, &mut used);
                }
                for g in &attribute.graphs {
                    collect_inputs(g, &mut used);
                }
            }
        }
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

fn collect_inputs(graph: &GraphProto, used: &mut HashSet<String>) {
    for node in &graph.node {
        used.extend(node.input.iter().cloned());
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
