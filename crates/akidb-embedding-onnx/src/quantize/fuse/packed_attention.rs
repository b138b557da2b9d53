//! Attention with its three projections in one GEMM ([`super::FuseStep::PackedAttention`]):
//! a `MultiHeadAttention` whose query, key and value are each `MatMul(x, W) + b` of the same
//! `x` (BERT's, MiniLM's) becomes `com.microsoft::Attention`:
//!
//! ```text
//! Attention(x, Concat(Wq, Wk, Wv, axis 1), Concat(bq, bk, bv), bias = the attention bias)
//! ```
//!
//! The operator runs the three projections as one GEMM over `[hidden, 3·hidden]` weights
//! (ONNX Runtime packs them once, at load, when they are constant, as the dequantised int8
//! weights of MiniLM become) and writes its result straight into its own head layout, where
//! `MultiHeadAttention` reads three separate `[B, S, hidden]` tensors and moves each into
//! heads. Same products, summed in another order: the outputs differ from the unpacked
//! graph's by float rounding (about 1e-6).
//!
//! Matched only where the whole pattern is there: no packed bias, key padding mask or past
//! state, one output, the three projections of one 3-D `x` with 2-D weights of one width
//! (a multiple of the head count) and 1-D biases, each projection read only by the attention.
//! The weights stay as the graph has them (an int8 table and its dequantisation, say): the
//! `Concat` nodes are folded by ONNX Runtime when their inputs are constant.

use std::collections::HashMap;

use super::super::proto::{GraphProto, NodeProto};
use super::shapes::{Dim, ShapeFacts};
use super::{
    Constants, Fuser, MS_DOMAIN, attr_int, consumers, either, producer, producers,
    remove_dead_nodes,
};
use crate::quantize::graph::{float_attribute, int_attribute};

/// One projection `MatMul(x, weight) + bias` the attention reads.
struct Projection {
    x: String,
    weight: String,
    bias: String,
}

impl Fuser<'_> {
    /// Rewrites each `MultiHeadAttention` over three projections of one input as the module
    /// documentation describes.
    pub(super) fn fuse_packed_attention(&mut self, graph: &mut GraphProto) {
        // The nodes the attention step replaced still read the projections until dead nodes
        // go; the match counts readers.
        remove_dead_nodes(graph);
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let consumers = consumers(graph);
        let mut edits = Vec::new();
        for (index, mha) in graph.node.iter().enumerate() {
            if mha.op_type() != "MultiHeadAttention" || mha.domain() != MS_DOMAIN {
                continue;
            }
            if let Some(projections) =
                match_packed_attention(graph, mha, &facts, &producers, &consumers)
            {
                edits.push((index, self.packed_attention_nodes(mha, projections)));
            }
        }
        self.splice_nodes(graph, edits, "packed_attention");
    }

    /// The `Concat`s and the `Attention` standing for `mha`.
    fn packed_attention_nodes(
        &mut self,
        mha: &NodeProto,
        projections: [Projection; 3],
    ) -> Vec<NodeProto> {
        let weights = self.fresh_name("packed_weights");
        let biases = self.fresh_name("packed_biases");
        let concat = |inputs: Vec<String>, output: &str, axis: i64| NodeProto {
            name: Some(format!("{output}/Concat")),
            op_type: Some("Concat".to_string()),
            input: inputs,
            output: vec![output.to_string()],
            attribute: vec![int_attribute("axis", axis)],
            ..Default::default()
        };
        let [q, k, v] = projections;
        let weight_concat = concat(
            vec![q.weight.clone(), k.weight.clone(), v.weight.clone()],
            &weights,
            1,
        );
        let bias_concat = concat(vec![q.bias, k.bias, v.bias], &biases, 0);
        // Attention: input, weights, bias, mask_index, past, attention_bias.
        let attention_bias = mha.input.get(5).cloned().unwrap_or_default();
        let mut input = vec![q.x, weights, biases];
        if !attention_bias.is_empty() {
            input.extend([String::new(), String::new(), attention_bias]);
        }
        let mut attribute = Vec::new();
        for name in ["num_heads", "unidirectional"] {
            if let Some(value) = attr_int(mha, name) {
                attribute.push(int_attribute(name, value));
            }
        }
        for name in ["scale", "mask_filter_value"] {
            if let Some(value) = mha
                .attribute
                .iter()
                .find(|a| a.name() == name)
                .and_then(|a| a.f)
            {
                attribute.push(float_attribute(name, value));
            }
        }
        let attention = NodeProto {
            name: Some(format!("{}/akidb_packed", mha.name())),
            op_type: Some("Attention".to_string()),
            domain: Some(MS_DOMAIN.to_string()),
            input,
            output: vec![mha.output[0].clone()],
            attribute,
            ..Default::default()
        };
        vec![weight_concat, bias_concat, attention]
    }
}

/// The three projections `mha` reads, when the whole pattern is there.
fn match_packed_attention(
    graph: &GraphProto,
    mha: &NodeProto,
    facts: &ShapeFacts,
    producers: &HashMap<String, usize>,
    consumers: &HashMap<String, Vec<usize>>,
) -> Option<[Projection; 3]> {
    let input = |i: usize| mha.input.get(i).filter(|n| !n.is_empty());
    // No packed bias, key padding mask or past state; one output.
    if input(3).is_some() || input(4).is_some() || mha.input.len() > 6 {
        return None;
    }
    if mha.output.is_empty() || mha.output.iter().skip(1).any(|o| !o.is_empty()) {
        return None;
    }
    let heads = attr_int(mha, "num_heads").filter(|&h| h > 0)?;
    let shape = |name: &str| facts.shapes.get(name).map(Vec::as_slice);
    let read_once = |name: &str| consumers.get(name).is_some_and(|c| c.len() == 1);
    let projection = |name: &str| -> Option<(Projection, i64)> {
        if !read_once(name) {
            return None;
        }
        let add = producer(graph, producers, name, "Add")?;
        let (product, bias) = either(add, |n| producer(graph, producers, n, "MatMul").is_some())?;
        let matmul = producer(graph, producers, product, "MatMul")?;
        if !read_once(product) {
            return None;
        }
        let [x, weight] = matmul.input.as_slice() else {
            return None;
        };
        let [_, Dim::Known(width)] = shape(weight)? else {
            return None;
        };
        let [_, _, Dim::Known(_)] = shape(x)? else {
            return None;
        };
        (shape(bias)? == [Dim::Known(*width)]).then(|| {
            (
                Projection {
                    x: x.clone(),
                    weight: weight.clone(),
                    bias: bias.to_string(),
                },
                *width,
            )
        })
    };
    let (q, q_width) = projection(input(0)?)?;
    let (k, k_width) = projection(input(1)?)?;
    let (v, v_width) = projection(input(2)?)?;
    let same_input = q.x == k.x && k.x == v.x;
    let same_width = q_width == k_width && k_width == v_width;
    (same_input && same_width && q_width % heads == 0).then_some([q, k, v])
}

#[cfg(test)]
mod tests {
    use super::super::test_graph::{D, floats, input, multi_head_attention, node};
    use super::super::{FuseRecipe, FuseStep, fuse_graph};
    use super::*;

    /// One BERT attention: `x [B, S, 4]`, three projections to 4 (two heads of 2), and a
    /// `MultiHeadAttention` with an attention bias as the attention step writes it. `key_x`
    /// is the input the key projection reads.
    fn graph(key_x: &str) -> GraphProto {
        let mut nodes = Vec::new();
        for (p, x) in [("q", "x"), ("k", key_x), ("v", "x")] {
            nodes.push(node("MatMul", &[x, &format!("w{p}")], &format!("{p}_mm")));
            nodes.push(node(
                "Add",
                &[&format!("{p}_mm"), &format!("b{p}")],
                &format!("{p}_proj"),
            ));
        }
        nodes.push(multi_head_attention("q_proj", "k_proj", "v_proj"));
        let mut initializer = Vec::new();
        for p in ["q", "k", "v"] {
            initializer.push(floats(&format!("w{p}"), &[4, 4], &[0.1; 16]));
            initializer.push(floats(&format!("b{p}"), &[4], &[0.2; 4]));
        }
        let x = |name: &str| input(name, &[D::P("batch"), D::P("seq"), D::N(4)]);
        GraphProto {
            node: nodes,
            initializer,
            input: vec![
                x("x"),
                x("y"),
                input("bias", &[D::P("batch"), D::N(1), D::P("seq"), D::P("seq")]),
            ],
            output: vec![input("out", &[])],
            ..Default::default()
        }
    }

    #[test]
    fn three_projections_of_one_input_become_one_attention() {
        let mut graph = graph("x");
        let (report, _) = fuse_graph(&mut graph, &FuseRecipe::only([FuseStep::PackedAttention]));
        assert_eq!(report.rewrites.get("packed_attention"), Some(&1));
        let ops: Vec<&str> = graph.node.iter().map(NodeProto::op_type).collect();
        assert_eq!(ops, ["Concat", "Concat", "Attention"]);
        let attention = &graph.node[2];
        assert_eq!(attention.domain(), MS_DOMAIN);
        assert_eq!(
            attention.input,
            [
                "x",
                &graph.node[0].output[0],
                &graph.node[1].output[0],
                "",
                "",
                "bias"
            ]
        );
        assert_eq!(attention.output, ["out"]);
        assert_eq!(graph.node[0].input, ["wq", "wk", "wv"]);
        assert_eq!(attr_int(&graph.node[0], "axis"), Some(1));
        assert_eq!(graph.node[1].input, ["bq", "bk", "bv"]);
        assert_eq!(attr_int(&graph.node[1], "axis"), Some(0));
        assert_eq!(attr_int(attention, "num_heads"), Some(2));
        let scale = attention.attribute.iter().find(|a| a.name() == "scale");
        assert_eq!(scale.and_then(|a| a.f), Some(0.5));
    }

    #[test]
    fn projections_of_different_inputs_are_left_to_multi_head_attention() {
        // Cross attention: the key projects another tensor.
        let mut graph = graph("y");
        let before = graph.node.clone();
        let (report, _) = fuse_graph(&mut graph, &FuseRecipe::only([FuseStep::PackedAttention]));
        assert_eq!(report.rewrites.get("packed_attention"), None);
        assert_eq!(graph.node, before);
    }
}
