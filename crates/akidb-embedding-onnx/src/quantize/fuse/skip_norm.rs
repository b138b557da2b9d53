//! Residual sums and the RMSNorm that reads them ([`super::FuseStep::SkipRmsNorm`]):
//! `h = x + y` followed by `SimplifiedLayerNormalization(h, γ)` becomes one
//! `com.microsoft::SkipSimplifiedLayerNormalization(x, y, γ)`, whose output 0 is the norm and
//! output 3 the sum `h` (given the `Add`'s name, so its other readers, the next residual,
//! read it unchanged).
//!
//! In EmbeddingGemma each layer has two: the sum after attention read by the pre-feedforward
//! norm, and the sum after the feedforward read by the next layer's input norm (the last
//! layer's by the final norm). Matched only where both addends have the same shape
//! `[…, D]` (no broadcasting), `γ` is a 1-D weight of length `D`, the norm is over the last
//! axis in fp32 and nothing reads its other outputs.

use std::collections::{HashMap, HashSet};

use super::super::proto::{GraphProto, NodeProto};
use super::shapes::{Dim, ShapeFacts, may_be_equal};
use super::{
    Constants, Fuser, MS_DOMAIN, attr_int, consumers, float_attribute, norm_epsilon, producer,
    producers, vector_length,
};
use crate::q8_matmul::DOMAIN;
use crate::row_ops::NORM_ADD_NORM;

/// One residual sum and the norm reading it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SkipNormMatch {
    /// Index of the `Add`.
    pub(crate) add: usize,
    /// Index of the `SimplifiedLayerNormalization`.
    pub(crate) norm: usize,
    /// The fused node, to stand where the `Add` stood.
    pub(crate) node: NodeProto,
}

impl Fuser<'_> {
    /// `SkipSimplifiedLayerNormalization` for each sum-then-RMSNorm the module documentation
    /// describes.
    pub(super) fn fuse_skip_rms_norm(&mut self, graph: &mut GraphProto) {
        let matches = match_skip_norms(graph);
        let removed: HashSet<usize> = matches.iter().map(|m| m.norm).collect();
        self.replace_nodes(
            graph,
            matches
                .into_iter()
                .map(|m| (m.add, m.node, "skip_simplified_layer_normalization"))
                .collect(),
        );
        let mut index = 0;
        graph.node.retain(|_| {
            index += 1;
            !removed.contains(&(index - 1))
        });
    }
}

impl Fuser<'_> {
    /// [`FuseStep::RowOps`](super::FuseStep::RowOps)' `ai.akidb::NormAddNorm` for each
    /// `SkipSimplifiedLayerNormalization(r, SimplifiedLayerNormalization(x, w₁), w₂)` whose
    /// inner norm nothing else reads: `sum = r + rmsnorm(x)·w₁`, `out = rmsnorm(sum)·w₂` in
    /// one node (EmbeddingGemma's post-attention and post-feedforward norms with the residual
    /// sum and the next norm). Matched only where `x` and `r` have one shape `[…, D]`, both
    /// weights are `D` values, both norms are over the last axis in fp32 with no bias, and
    /// the outer one's only outputs are the norm and the sum.
    pub(super) fn fuse_norm_add_norm(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let consumers = consumers(graph);
        let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();
        let mut rewrites = Vec::new();
        let mut removed = HashSet::new();
        for (index, skip) in graph.node.iter().enumerate() {
            let Some((inner, node)) =
                match_norm_add_norm(graph, skip, &facts, &producers, &consumers, &outputs)
            else {
                continue;
            };
            if removed.insert(inner) {
                rewrites.push((index, node, "norm_add_norm"));
            }
        }
        self.replace_nodes(graph, rewrites);
        let mut index = 0;
        graph.node.retain(|_| {
            index += 1;
            !removed.contains(&(index - 1))
        });
    }
}

/// The inner norm's index and the `NormAddNorm` standing for `skip` with it, when the whole
/// pattern [`Fuser::fuse_norm_add_norm`] describes is there.
fn match_norm_add_norm(
    graph: &GraphProto,
    skip: &NodeProto,
    facts: &ShapeFacts,
    producers: &HashMap<String, usize>,
    consumers: &HashMap<String, Vec<usize>>,
    outputs: &HashSet<&str>,
) -> Option<(usize, NodeProto)> {
    if skip.op_type() != "SkipSimplifiedLayerNormalization" || skip.domain() != MS_DOMAIN {
        return None;
    }
    // Input, skip, gamma; no bias. Outputs: the norm and, if read, the sum (no statistics).
    if skip.input.len() != 3 || skip.output.len() > 4 {
        return None;
    }
    if skip.output.iter().skip(1).take(2).any(|o| !o.is_empty())
        || skip.attribute.iter().any(|a| a.name() != "epsilon")
    {
        return None;
    }
    let (residual, normed, second) = (&skip.input[0], &skip.input[1], &skip.input[2]);
    let inner_index = *producers.get(normed.as_str())?;
    let inner = graph.node.get(inner_index)?;
    if inner.op_type() != "SimplifiedLayerNormalization"
        || !inner.domain().is_empty()
        || inner.input.len() != 2
        || inner.output.len() != 1
        || attr_int(inner, "axis").unwrap_or(-1) != -1
        || attr_int(inner, "stash_type").unwrap_or(1) != 1
        || inner
            .attribute
            .iter()
            .any(|a| !["axis", "epsilon", "stash_type"].contains(&a.name()))
        || consumers.get(normed.as_str()).map(Vec::len) != Some(1)
        || outputs.contains(normed.as_str())
    {
        return None;
    }
    let (x, first) = (&inner.input[0], &inner.input[1]);
    let shape = facts.shapes.get(x.as_str())?;
    let Some(Dim::Known(hidden)) = shape.last() else {
        return None;
    };
    if !may_be_equal(facts.shapes.get(residual.as_str())?, shape)
        || vector_length(graph, producers, first)? != *hidden
        || vector_length(graph, producers, second)? != *hidden
    {
        return None;
    }
    let mut output = vec![skip.output[0].clone()];
    if let Some(sum) = skip.output.get(3).filter(|o| !o.is_empty()) {
        output.push(sum.clone());
    }
    Some((
        inner_index,
        NodeProto {
            name: Some(format!("{}/NormAddNorm", skip.name())),
            op_type: Some(NORM_ADD_NORM.to_string()),
            domain: Some(DOMAIN.to_string()),
            input: vec![x.clone(), residual.clone(), first.clone(), second.clone()],
            output,
            attribute: vec![
                float_attribute("epsilon", norm_epsilon(inner)),
                float_attribute("second_epsilon", norm_epsilon(skip)),
            ],
            ..Default::default()
        },
    ))
}

/// Every sum-then-RMSNorm of `graph` that matches, each `Add` at most once.
pub(crate) fn match_skip_norms(graph: &GraphProto) -> Vec<SkipNormMatch> {
    let constants = Constants::of(graph);
    let facts = ShapeFacts::infer(graph, &constants);
    let producers = producers(graph);
    let consumers = consumers(graph);
    let mut taken = HashSet::new();
    let mut matches = Vec::new();
    for (index, norm) in graph.node.iter().enumerate() {
        if let Some(m) = match_skip_norm(graph, index, norm, &facts, &producers, &consumers)
            && taken.insert(m.add)
        {
            matches.push(m);
        }
    }
    matches
}

/// The fused node for the `SimplifiedLayerNormalization` `norm` (at `index`) and the sum it
/// reads, when the pattern matches.
fn match_skip_norm(
    graph: &GraphProto,
    index: usize,
    norm: &NodeProto,
    facts: &ShapeFacts,
    producers: &HashMap<String, usize>,
    consumers: &HashMap<String, Vec<usize>>,
) -> Option<SkipNormMatch> {
    if norm.op_type() != "SimplifiedLayerNormalization" || !norm.domain().is_empty() {
        return None;
    }
    let [sum, gamma] = norm.input.as_slice() else {
        return None;
    };
    let [normed] = norm.output.as_slice() else {
        return None;
    };
    let epsilon = norm
        .attribute
        .iter()
        .find(|a| a.name() == "epsilon")
        .and_then(|a| a.f)?;
    // The fused kernel works in fp32 over the last axis, as `stash_type` 1 does.
    if attr_int(norm, "axis").unwrap_or(-1) != -1 || attr_int(norm, "stash_type").unwrap_or(1) != 1
    {
        return None;
    }
    let add_index = *producers.get(sum)?;
    let add = producer(graph, producers, sum, "Add")?;
    let [x, y] = add.input.as_slice() else {
        return None;
    };
    let x_shape = facts.shapes.get(x)?;
    let Some(Dim::Known(hidden)) = x_shape.last() else {
        return None;
    };
    if facts.shapes.get(y)? != x_shape || vector_length(graph, producers, gamma)? != *hidden {
        return None;
    }
    // The weight must exist where the fused node stands (the `Add`'s place).
    if producers.get(gamma).is_some_and(|&p| p > add_index) {
        return None;
    }
    // The sum as output 3 only when something besides this norm reads it.
    let read_elsewhere = consumers
        .get(sum)
        .is_some_and(|readers| readers.iter().any(|&r| r != index));
    let mut output = vec![normed.clone()];
    if read_elsewhere {
        output.extend([String::new(), String::new(), sum.clone()]);
    }
    Some(SkipNormMatch {
        add: add_index,
        norm: index,
        node: NodeProto {
            name: Some(format!("{}/SkipSimplifiedLayerNormalization", norm.name())),
            op_type: Some("SkipSimplifiedLayerNormalization".to_string()),
            domain: Some(MS_DOMAIN.to_string()),
            input: vec![x.clone(), y.clone(), gamma.clone()],
            output,
            attribute: vec![float_attribute("epsilon", epsilon)],
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_graph::{D, floats, input, node, with_int};
    use super::super::{FuseRecipe, FuseStep, float_attribute, fuse_graph};
    use super::*;

    /// What to change in the sum-then-norm [`skip_norm_graph`] writes.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Change {
        Nothing,
        SumReadByTheNormOnly,
        AddendBroadcast,
        WeightOfOtherLength,
        NormInDoubles,
    }

    /// `h = x + y; n = RMSNorm(h, γ); out = h · n` over `[batch, seq, 4]`.
    fn skip_norm_graph(change: Change) -> GraphProto {
        let y = if change == Change::AddendBroadcast {
            input("y", &[D::N(4)])
        } else {
            input("y", &[D::P("batch"), D::P("seq"), D::N(4)])
        };
        let gamma_length = if change == Change::WeightOfOtherLength {
            3
        } else {
            4
        };
        let stash_type = if change == Change::NormInDoubles {
            11
        } else {
            1
        };
        let mut norm = with_int(
            with_int(
                node("SimplifiedLayerNormalization", &["h", "gamma"], "n"),
                "axis",
                -1,
            ),
            "stash_type",
            stash_type,
        );
        norm.attribute.push(float_attribute("epsilon", 1e-6));
        let last = if change == Change::SumReadByTheNormOnly {
            node("Mul", &["n", "n"], "out")
        } else {
            node("Mul", &["h", "n"], "out")
        };
        GraphProto {
            node: vec![node("Add", &["x", "y"], "h"), norm, last],
            initializer: vec![floats(
                "gamma",
                &[gamma_length],
                &vec![1.0; gamma_length as usize],
            )],
            input: vec![input("x", &[D::P("batch"), D::P("seq"), D::N(4)]), y],
            output: vec![input("out", &[])],
            ..Default::default()
        }
    }

    #[test]
    fn the_sum_and_its_norm_become_one_node_that_also_gives_the_sum() {
        let mut graph = skip_norm_graph(Change::Nothing);
        let (report, _) = fuse_graph(&mut graph, &FuseRecipe::only([FuseStep::SkipRmsNorm]));
        assert_eq!(
            report.rewrites.get("skip_simplified_layer_normalization"),
            Some(&1)
        );
        let [fused, last] = graph.node.as_slice() else {
            panic!("{:?}", graph.node);
        };
        assert_eq!(fused.op_type(), "SkipSimplifiedLayerNormalization");
        assert_eq!(fused.input, ["x", "y", "gamma"]);
        assert_eq!(fused.output, ["n", "", "", "h"]);
        assert_eq!(last.input, ["h", "n"]);
    }

    #[test]
    fn a_sum_only_the_norm_reads_is_not_an_output() {
        let graph = skip_norm_graph(Change::SumReadByTheNormOnly);
        let [found] = match_skip_norms(&graph).try_into().unwrap();
        assert_eq!(found.node.output, ["n"]);
    }

    #[test]
    fn anything_but_the_exact_pattern_is_left_alone() {
        for change in [
            Change::AddendBroadcast,
            Change::WeightOfOtherLength,
            Change::NormInDoubles,
        ] {
            assert_eq!(match_skip_norms(&skip_norm_graph(change)), [], "{change:?}");
        }
    }

    /// `r + RMSNorm(x, w₁)` then its norm: `SimplifiedLayerNormalization(x, w₁)` feeding a
    /// residual sum and the norm of it, over `[batch, seq, 4]`; `inner_read_twice` also
    /// sends the inner norm to the output.
    fn norm_add_norm_graph(inner_read_twice: bool) -> GraphProto {
        let mut inner = with_int(
            node("SimplifiedLayerNormalization", &["x", "w1"], "a"),
            "axis",
            -1,
        );
        inner.attribute.push(float_attribute("epsilon", 1e-6));
        let mut nodes = vec![inner, node("Add", &["r", "a"], "h")];
        let mut outer = node("SimplifiedLayerNormalization", &["h", "w2"], "n");
        outer.attribute.push(float_attribute("epsilon", 1e-5));
        nodes.push(outer);
        nodes.push(node("Mul", &["h", "n"], "out"));
        let three = |name: &str| input(name, &[D::P("batch"), D::P("seq"), D::N(4)]);
        let mut output = vec![input("out", &[])];
        if inner_read_twice {
            output.push(input("a", &[]));
        }
        GraphProto {
            node: nodes,
            initializer: vec![floats("w1", &[4], &[1.0; 4]), floats("w2", &[4], &[2.0; 4])],
            input: vec![three("x"), three("r")],
            output,
            ..Default::default()
        }
    }

    #[test]
    fn a_norm_the_residual_adds_and_the_sums_norm_become_one_node() {
        let mut graph = norm_add_norm_graph(false);
        let recipe = FuseRecipe::only([FuseStep::SkipRmsNorm, FuseStep::RowOps]);
        let (report, _) = fuse_graph(&mut graph, &recipe);
        assert_eq!(report.rewrites.get("norm_add_norm"), Some(&1), "{report:?}");
        let [fused, last] = graph.node.as_slice() else {
            panic!("{:?}", graph.node);
        };
        assert_eq!((fused.domain(), fused.op_type()), (DOMAIN, NORM_ADD_NORM));
        assert_eq!(fused.input, ["x", "r", "w1", "w2"]);
        assert_eq!(fused.output, ["n", "h"]);
        let epsilons: Vec<(&str, Option<f32>)> =
            fused.attribute.iter().map(|a| (a.name(), a.f)).collect();
        assert_eq!(
            epsilons,
            [("epsilon", Some(1e-6)), ("second_epsilon", Some(1e-5))]
        );
        assert_eq!(last.input, ["h", "n"]);
    }

    #[test]
    fn an_inner_norm_read_elsewhere_or_without_row_ops_is_left_alone() {
        let mut graph = norm_add_norm_graph(true);
        let recipe = FuseRecipe::only([FuseStep::SkipRmsNorm, FuseStep::RowOps]);
        let (report, _) = fuse_graph(&mut graph, &recipe);
        assert_eq!(report.rewrites.get("norm_add_norm"), None);
        assert!(
            graph
                .node
                .iter()
                .any(|n| n.op_type() == "SkipSimplifiedLayerNormalization")
        );
        let mut graph = norm_add_norm_graph(false);
        let (report, _) = fuse_graph(&mut graph, &FuseRecipe::only([FuseStep::SkipRmsNorm]));
        assert_eq!(report.rewrites.get("norm_add_norm"), None);
        assert_eq!(
            report.rewrites.get("skip_simplified_layer_normalization"),
            Some(&1)
        );
    }
}
