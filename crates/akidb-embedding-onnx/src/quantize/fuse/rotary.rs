//! Rotary position embeddings ([`super::FuseStep::Rotary`]): the export's
//! `x·cos + rotate_half(x)·sin`, with `cos`/`sin` computed at run time from the positions and
//! the inverse frequencies, becomes `com.microsoft::RotaryEmbedding` reading precomputed
//! tables.
//!
//! The pattern, for `x` of shape `[B, N, S, H]` (heads split, as the attention reads them):
//!
//! ```text
//! angles = Concat(t, t, axis -1),  t = Transpose(MatMul(Expand(inv_freq [1, H/2, 1]),
//!                                          Unsqueeze(Unsqueeze(Range(0, S, 1), 0), 1)), (0,2,1))
//! cos = Unsqueeze(Cos(angles) · scale, 1)       sin = Unsqueeze(Sin(angles) · scale, 1)
//! out = x · cos + Concat(−x[..., H/2:], x[..., :H/2]) · sin
//! ```
//!
//! (casts to float between any of these steps are allowed). The inverse frequencies and the
//! scale are read from the graph, so EmbeddingGemma's two bases (its sliding layers' and its
//! global layers') each get their own tables. The tables are computed as the graph computes
//! them: the angle is the fp32 product of position and inverse frequency, its cosine and sine
//! rounded to fp32 and multiplied by the scale in fp32.

use std::collections::HashMap;

use super::super::proto::{GraphProto, NodeProto, tensor_proto::DataType};
use super::shapes::{Dim, ShapeFacts};
use super::{
    Constants, Fuser, MS_DOMAIN, NewTensor, attr_int, attr_ints, either, known_ints, producer,
    producers,
};
use crate::quantize::graph::int_attribute;

/// Positions the precomputed tables cover: EmbeddingGemma's `max_position_embeddings` (and
/// the token limit its model description sets). ONNX Runtime refuses a longer sequence.
pub(crate) const ROTARY_POSITIONS: usize = 2048;

/// One matched rotary embedding: the rotated tensor and what its tables are made of.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RotaryMatch {
    /// The tensor rotated, `[B, N, S, H]`.
    pub(crate) x: String,
    /// The tensor the cosine and sine are taken of (the tables are shared by every rotation
    /// that reads it).
    pub(crate) angles: String,
    /// `H/2` inverse frequencies.
    pub(crate) inv_freq: Vec<f32>,
    /// The factor the cosine is multiplied by.
    pub(crate) cos_scale: f32,
    /// The factor the sine is multiplied by.
    pub(crate) sin_scale: f32,
}

/// What one side of the rotation (the cosine or the sine table) is made of.
struct Table {
    angles: String,
    inv_freq: Vec<f32>,
    scale: f32,
    /// The table's shape as the rotation reads it, `[B or 1, 1, S, H]`.
    shape: Vec<Dim>,
}

impl Fuser<'_> {
    /// `RotaryEmbedding(x, [0], cos_table, sin_table)` for each rotation the module
    /// documentation describes.
    pub(super) fn fuse_rotary(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let view = View {
            graph,
            constants: &constants,
            facts: &facts,
            producers: &producers,
        };
        let mut tables: HashMap<String, (String, String)> = HashMap::new();
        let mut offset: Option<String> = None;
        let mut rewrites = Vec::new();
        for (index, add) in graph.node.iter().enumerate() {
            if add.op_type() != "Add" || !add.domain().is_empty() {
                continue;
            }
            let Some(rotary) = match_rotary(&view, add) else {
                continue;
            };
            let (cos, sin) = match tables.get(&rotary.angles) {
                Some(names) => names.clone(),
                None => {
                    let names = self.rotary_tables(&rotary);
                    tables.insert(rotary.angles.clone(), names.clone());
                    names
                }
            };
            // Positions are 0..S for every row: the operator's offset form.
            let offset = match &offset {
                Some(name) => name.clone(),
                None => {
                    let name = self.int64_constant("rotary_position_offset", &[0], false);
                    offset = Some(name.clone());
                    name
                }
            };
            rewrites.push((
                index,
                NodeProto {
                    name: Some(format!("{}/RotaryEmbedding", add.name())),
                    op_type: Some("RotaryEmbedding".to_string()),
                    domain: Some(MS_DOMAIN.to_string()),
                    input: vec![rotary.x, offset, cos, sin],
                    output: add.output.clone(),
                    attribute: vec![int_attribute("interleaved", 0)],
                    ..Default::default()
                },
                "rotary_embedding",
            ));
        }
        self.replace_nodes(graph, rewrites);
    }

    /// The cosine and sine tables of `rotary`, added to the new tensors; their names.
    fn rotary_tables(&mut self, rotary: &RotaryMatch) -> (String, String) {
        let (cos, sin) = rotary_table_values(
            &rotary.inv_freq,
            rotary.cos_scale,
            rotary.sin_scale,
            ROTARY_POSITIONS,
        );
        let dims = vec![ROTARY_POSITIONS as i64, rotary.inv_freq.len() as i64];
        let mut add = |base: &str, values: Vec<f32>| {
            let name = self.fresh_name(base);
            self.new.push(NewTensor {
                name: name.clone(),
                data_type: DataType::Float,
                dims: dims.clone(),
                bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            });
            name
        };
        (add("rotary_cos_cache", cos), add("rotary_sin_cache", sin))
    }
}

/// The `[positions, H/2]` cosine and sine tables, row `p` for position `p`, computed as the
/// graph does: `angle = fp32(p · inv_freq)`, `scale · fp32(cos(angle))`.
pub(crate) fn rotary_table_values(
    inv_freq: &[f32],
    cos_scale: f32,
    sin_scale: f32,
    positions: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(positions * inv_freq.len());
    let mut sin = Vec::with_capacity(positions * inv_freq.len());
    for position in 0..positions {
        for &frequency in inv_freq {
            let angle = f64::from(position as f32 * frequency);
            cos.push(angle.cos() as f32 * cos_scale);
            sin.push(angle.sin() as f32 * sin_scale);
        }
    }
    (cos, sin)
}

/// The graph as the matchers read it: its nodes, its constants and what is known of its
/// shapes.
pub(crate) struct View<'a> {
    pub(crate) graph: &'a GraphProto,
    pub(crate) constants: &'a Constants,
    pub(crate) facts: &'a ShapeFacts,
    pub(crate) producers: &'a HashMap<String, usize>,
}

impl<'a> View<'a> {
    /// The node of the default domain with operator `op` producing `name`.
    fn producer(&self, name: &str, op: &str) -> Option<&'a NodeProto> {
        producer(self.graph, self.producers, name, op)
    }

    /// The values of a constant or known integer tensor.
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        known_ints(self.constants, self.facts, name)
    }

    /// The known shape of `name`.
    fn shape(&self, name: &str) -> Option<&'a [Dim]> {
        self.facts.shapes.get(name).map(Vec::as_slice)
    }

    /// The axes of an `Unsqueeze` (an input from opset 13, an attribute before).
    fn axes(&self, node: &NodeProto) -> Option<Vec<i64>> {
        match node.input.get(1).filter(|n| !n.is_empty()) {
            Some(name) => self.ints(name),
            None => attr_ints(node, "axes"),
        }
    }

    /// What a chain of `Cast`s to float leading to `name` starts from (`name` itself without
    /// one). Every tensor the pattern reads this way is float by construction (the inverse
    /// frequencies are a float constant, and the operators between keep their input's type)
    /// except the positions, small integers that float holds exactly.
    fn through_casts_to_float(&self, name: &str) -> String {
        let float = i64::from(DataType::Float as i32);
        let mut name = name.to_string();
        while let Some(cast) = self.producer(&name, "Cast")
            && attr_int(cast, "to") == Some(float)
            && let Some(input) = cast.input.first()
        {
            name = input.clone();
        }
        name
    }
}

/// The rotation whose final `Add` is `add`, when the whole pattern of the module
/// documentation is there.
pub(crate) fn match_rotary(view: &View<'_>, add: &NodeProto) -> Option<RotaryMatch> {
    let [a, b] = add.input.as_slice() else {
        return None;
    };
    [(a, b), (b, a)].into_iter().find_map(|(direct, rotated)| {
        let direct = view.producer(direct, "Mul")?;
        let rotated = view.producer(rotated, "Mul")?;
        let (cos_name, x) = either(direct, |n| table(view, n, "Cos").is_some())?;
        let (sin_name, halves) = either(rotated, |n| table(view, n, "Sin").is_some())?;
        let cos = table(view, cos_name, "Cos")?;
        let sin = table(view, sin_name, "Sin")?;
        let [batch, Dim::Known(_), sequence, Dim::Known(head_size)] = view.shape(x)? else {
            return None;
        };
        let half = cos.inv_freq.len();
        if cos.angles != sin.angles
            || half == 0
            || i64::try_from(2 * half).ok()? != *head_size
            || cos.shape != sin.shape
        {
            return None;
        }
        let [
            table_batch,
            Dim::Known(1),
            table_sequence,
            Dim::Known(table_head),
        ] = cos.shape.as_slice()
        else {
            return None;
        };
        if !(table_batch == batch || *table_batch == Dim::Known(1))
            || table_sequence != sequence
            || table_head != head_size
            || !is_rotate_half(view, halves, x, *head_size)
        {
            return None;
        }
        Some(RotaryMatch {
            x: x.to_string(),
            angles: cos.angles,
            inv_freq: cos.inv_freq,
            cos_scale: cos.scale,
            sin_scale: sin.scale,
        })
    })
}

/// Whether `name` is `Concat(−x[..., H/2:], x[..., :H/2], last axis)`.
fn is_rotate_half(view: &View<'_>, name: &str, x: &str, head_size: i64) -> bool {
    let half = head_size / 2;
    let check = || -> Option<()> {
        let concat = view.producer(name, "Concat")?;
        let axis = attr_int(concat, "axis")?;
        let [negated, first_half] = concat.input.as_slice() else {
            return None;
        };
        let second_half = view.producer(negated, "Neg")?.input.first()?;
        ((axis == -1 || axis == 3)
            && is_last_axis_slice(view, second_half, x, half, head_size..=i64::MAX)
            && is_last_axis_slice(view, first_half, x, 0, half..=half))
        .then_some(())
    };
    check().is_some()
}

/// Whether `name` is `Slice(x, [start], [end], [last axis], [1])` with `end` in `ends`.
fn is_last_axis_slice(
    view: &View<'_>,
    name: &str,
    x: &str,
    start: i64,
    ends: std::ops::RangeInclusive<i64>,
) -> bool {
    let Some(slice) = view.producer(name, "Slice") else {
        return false;
    };
    let ints = |slot: usize| {
        slice
            .input
            .get(slot)
            .filter(|n| !n.is_empty())
            .and_then(|n| view.ints(n))
    };
    let steps_are_one = match slice.input.get(4).filter(|n| !n.is_empty()) {
        Some(_) => ints(4).as_deref() == Some(&[1]),
        None => true,
    };
    slice.input.first().map(String::as_str) == Some(x)
        && ints(1).as_deref() == Some(&[start])
        && ints(2).is_some_and(|end| matches!(end.as_slice(), [e] if ends.contains(e)))
        && matches!(ints(3).as_deref(), Some([-1] | [3]))
        && steps_are_one
}

/// The table `Unsqueeze(scale · op(angles), 1)` (`op` `Cos` or `Sin`) read as `name`, with
/// the angles as the module documentation describes them.
fn table(view: &View<'_>, name: &str, op: &str) -> Option<Table> {
    let unsqueeze = view.producer(name, "Unsqueeze")?;
    if view.axes(unsqueeze)? != [1] {
        return None;
    }
    let shape = view.shape(name)?.to_vec();
    let scaled = view.through_casts_to_float(unsqueeze.input.first()?);
    let (trig, scale) = match view.producer(&scaled, "Mul") {
        Some(mul) => {
            let (scale, trig) = either(mul, |n| view.constants.scalar(n).is_some())?;
            (trig.to_string(), view.constants.scalar(scale)?)
        }
        None => (scaled, 1.0),
    };
    if !scale.is_finite() {
        return None;
    }
    let angles = view.producer(&trig, op)?.input.first()?.clone();
    let inv_freq = angles_of(view, &angles)?;
    Some(Table {
        angles,
        inv_freq,
        scale,
        shape,
    })
}

/// The inverse frequencies when `angles` is `Concat(t, t, last axis)` of
/// `t = Transpose(MatMul(Expand(inv_freq), positions), (0,2,1))` with positions `0..S`.
fn angles_of(view: &View<'_>, angles: &str) -> Option<Vec<f32>> {
    let concat = view.producer(angles, "Concat")?;
    let axis = attr_int(concat, "axis")?;
    let [t, t2] = concat.input.as_slice() else {
        return None;
    };
    if t != t2 || !(axis == -1 || axis == 2) {
        return None;
    }
    let transpose = view.producer(t, "Transpose")?;
    if attr_ints(transpose, "perm")? != [0, 2, 1] {
        return None;
    }
    let matmul = view.producer(transpose.input.first()?, "MatMul")?;
    let [frequencies, positions] = matmul.input.as_slice() else {
        return None;
    };
    // Frequencies: the constant [1, H/2, 1] expanded along the batch only.
    let expand = view.producer(&view.through_casts_to_float(frequencies), "Expand")?;
    let inv_freq_name = expand.input.first()?;
    let inv_freq = view.constants.floats(inv_freq_name)?;
    let half = i64::try_from(inv_freq.len()).ok()?;
    if view.constants.tensor(inv_freq_name)?.dims != [1, half, 1] {
        return None;
    }
    let [_, Dim::Known(expanded_half), Dim::Known(1)] = view.shape(expand.output.first()?)? else {
        return None;
    };
    if *expanded_half != half {
        return None;
    }
    // Positions: Unsqueeze(Unsqueeze(Range(0, S, 1), 0), 1) as float, `[1, 1, S]` (that S
    // is the rotated tensor's sequence the caller checks on the table's shape).
    let positions = view.through_casts_to_float(positions);
    let outer = view.producer(&positions, "Unsqueeze")?;
    let inner = view.producer(outer.input.first()?, "Unsqueeze")?;
    if view.axes(outer)? != [1] || view.axes(inner)? != [0] {
        return None;
    }
    let range = view.producer(inner.input.first()?, "Range")?;
    let [start, _, delta] = range.input.as_slice() else {
        return None;
    };
    let [Dim::Known(1), Dim::Known(1), _] = view.shape(&positions)? else {
        return None;
    };
    (view.ints(start)? == [0] && view.ints(delta)? == [1]).then_some(inv_freq)
}

#[cfg(test)]
mod tests {
    use super::super::test_graph::{D, floats, input, ints, node, with_int};
    use super::super::{FuseRecipe, FuseStep, fuse_graph};
    use super::*;
    use crate::quantize::graph::ints_attribute;

    const INV_FREQ: [f32; 4] = [1.0, 0.1, 0.01, 0.001];

    /// What to change in the rotation [`rotary_graph`] writes.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Change {
        Nothing,
        HalvesSwapped,
        SecondHalfShort,
        PositionsFromOne,
        TableOnTheHeadAxis,
        NotNegated,
        OtherTensorRotated,
    }

    /// `x·cos + rotate_half(x)·sin` for `x` `[batch, 2, seq, 8]`, as the export writes it.
    fn rotary_graph(change: Change) -> GraphProto {
        // The name `changed` when the graph is to have `when`, else `usual`.
        let pick = |when: Change, changed: &'static str, usual: &'static str| {
            if change == when { changed } else { usual }
        };
        let table_axis = pick(Change::TableOnTheHeadAxis, "axis2", "axis1");
        let second_end = pick(Change::SecondHalfShort, "seven", "to_end");
        let negated = pick(Change::NotNegated, "x2", "neg_x2");
        let halves = if change == Change::HalvesSwapped {
            ["x1", negated]
        } else {
            [negated, "x1"]
        };
        let start = pick(Change::PositionsFromOne, "one", "zero");
        let direct = pick(Change::OtherTensorRotated, "z", "x");
        let mut transpose = node("Transpose", &["freqs"], "freqs_t");
        transpose.attribute.push(ints_attribute("perm", &[0, 2, 1]));
        GraphProto {
            node: vec![
                node("Shape", &["x"], "shape"),
                with_int(node("Gather", &["shape", "two"], "length"), "axis", 0),
                node("Range", &[start, "length", "one"], "range"),
                node("Unsqueeze", &["range", "axis0"], "positions"),
                node("Unsqueeze", &["positions", "axis1"], "positions3"),
                with_int(node("Cast", &["positions3"], "positions_f"), "to", 1),
                node("Expand", &["inv_freq", "ones3"], "frequencies"),
                node("MatMul", &["frequencies", "positions_f"], "freqs"),
                transpose,
                with_int(
                    node("Concat", &["freqs_t", "freqs_t"], "angles"),
                    "axis",
                    -1,
                ),
                node("Cos", &["angles"], "cos"),
                node("Mul", &["cos", "scale"], "cos_scaled"),
                node("Sin", &["angles"], "sin"),
                node("Mul", &["sin", "scale"], "sin_scaled"),
                node("Unsqueeze", &["cos_scaled", table_axis], "cos_table"),
                node("Unsqueeze", &["sin_scaled", table_axis], "sin_table"),
                node("Slice", &["x", "zero1", "half", "axis3", "one1"], "x1"),
                node("Slice", &["x", "half", second_end, "axis3", "one1"], "x2"),
                node("Neg", &["x2"], "neg_x2"),
                with_int(node("Concat", &halves, "rotated"), "axis", -1),
                node("Mul", &[direct, "cos_table"], "direct"),
                node("Mul", &["rotated", "sin_table"], "turned"),
                node("Add", &["direct", "turned"], "out"),
            ],
            initializer: vec![
                ints("zero", &[], &[0]),
                ints("one", &[], &[1]),
                ints("two", &[], &[2]),
                ints("axis0", &[1], &[0]),
                ints("axis1", &[1], &[1]),
                ints("axis2", &[1], &[2]),
                ints("axis3", &[1], &[3]),
                ints("zero1", &[1], &[0]),
                ints("one1", &[1], &[1]),
                ints("half", &[1], &[4]),
                ints("seven", &[1], &[7]),
                ints("to_end", &[1], &[i64::MAX]),
                ints("ones3", &[3], &[1, 1, 1]),
                floats("inv_freq", &[1, 4, 1], &INV_FREQ),
                floats("scale", &[], &[1.0]),
            ],
            input: vec![
                input("x", &[D::P("batch"), D::N(2), D::P("seq"), D::N(8)]),
                input("z", &[D::P("batch"), D::N(2), D::P("seq"), D::N(8)]),
            ],
            output: vec![input("out", &[])],
            ..Default::default()
        }
    }

    fn matched(graph: &GraphProto) -> Option<RotaryMatch> {
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let add = graph.node.iter().find(|n| n.op_type() == "Add")?;
        let view = View {
            graph,
            constants: &constants,
            facts: &facts,
            producers: &producers,
        };
        match_rotary(&view, add)
    }

    #[test]
    fn the_exported_rotation_is_matched_with_its_frequencies() {
        let found = matched(&rotary_graph(Change::Nothing)).unwrap();
        assert_eq!(
            found,
            RotaryMatch {
                x: "x".to_string(),
                angles: "angles".to_string(),
                inv_freq: INV_FREQ.to_vec(),
                cos_scale: 1.0,
                sin_scale: 1.0,
            }
        );
    }

    #[test]
    fn anything_but_the_exact_rotation_is_left_alone() {
        for change in [
            Change::HalvesSwapped,
            Change::SecondHalfShort,
            Change::PositionsFromOne,
            Change::TableOnTheHeadAxis,
            Change::NotNegated,
            Change::OtherTensorRotated,
        ] {
            assert_eq!(matched(&rotary_graph(change)), None, "{change:?}");
        }
    }

    #[test]
    fn the_rotation_becomes_one_node_reading_precomputed_tables() {
        let mut graph = rotary_graph(Change::Nothing);
        let (report, new) = fuse_graph(&mut graph, &FuseRecipe::only([FuseStep::Rotary]));
        assert_eq!(report.rewrites.get("rotary_embedding"), Some(&1));
        let [rotary] = graph.node.as_slice() else {
            panic!("{:?}", graph.node);
        };
        assert_eq!(
            (rotary.op_type(), rotary.domain()),
            ("RotaryEmbedding", MS_DOMAIN)
        );
        assert_eq!(rotary.input[0], "x");
        assert_eq!(rotary.output, ["out"]);
        let constants = Constants::of(&graph);
        assert_eq!(constants.ints(&rotary.input[1]), Some(vec![0]));
        let tables: Vec<&NewTensor> = new.iter().collect();
        assert_eq!(tables.len(), 2);
        for table in tables {
            assert_eq!(table.dims, [ROTARY_POSITIONS as i64, 4]);
        }
    }

    #[test]
    fn tables_hold_the_fp32_angles_cosine_and_sine() {
        let (cos, sin) = rotary_table_values(&[1.0, 0.5], 1.0, 2.0, 3);
        assert_eq!(cos.len(), 6);
        assert_eq!((cos[0], cos[1], sin[0], sin[1]), (1.0, 1.0, 0.0, 0.0));
        let angle = 2.0f32 * 0.5;
        assert_eq!(cos[5], f64::from(angle).cos() as f32);
        assert_eq!(sin[5], f64::from(angle).sin() as f32 * 2.0);
    }
}
