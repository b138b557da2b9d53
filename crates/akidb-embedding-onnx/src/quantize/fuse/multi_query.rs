//! Attention with one key/value head ([`super::FuseStep::MultiQuery`]): a
//! `MultiHeadAttention` whose key and value are one head repeated for all `N` query heads
//! (EmbeddingGemma's `repeat_kv`) becomes two plain GEMMs over that single head.
//!
//! With one key/value head, every query head multiplies the same `K` and `V`, so the queries
//! of all heads can be rows of one matrix. Kept in the order the query projection writes them
//! (`[B, S, N, H]`, row `s·N + n`), they need no transpose on the way in or out:
//!
//! ```text
//! q = Reshape(Q [B, S, N, H] after its per-head norm and rotation, [B, 1, S·N, H])
//! k = Reshape(K [B, L, 1, H] after its norm and rotation, [B, 1, L, H])   v likewise
//! p = Softmax(Reshape(FusedMatMul(q, k, transB, alpha = scale), [B, S, N, L]) + bias [B, S, 1, L])
//! out = Reshape(MatMul(Reshape(p, [B, 1, S·N, L]), v), [B, S, N·H])
//! ```
//!
//! Each product is one GEMM of `S·N` rows that ONNX Runtime spreads over all its threads,
//! where the operator runs one GEMM per head, a head per thread (three heads on two
//! threads leave one idle half the time), and the repeated `K`/`V` and the four transposes
//! around it are gone. The per-head ops between a projection and the attention
//! (`SimplifiedLayerNormalization` over the head, `RotaryEmbedding`) are re-emitted on the
//! projection's own layout: the norm on `[B, S, N, H]` (on the projection itself for the one
//! key/value head), the rotation on `[B, S, N·H]` (its 3-D form), so each projection is split
//! and merged only where an op needs it. The arithmetic is the operator's: same products,
//! same softmax, bit for bit.
//!
//! Matched only where the whole pattern is there: no key padding mask or past state, not
//! unidirectional, the bias (if any) `[B or 1, 1, S or 1, L]`, the key and value each
//! `Reshape(Expand(Unsqueeze(x [B, 1, L, H])))` to `[B, N, L, H]`, and each of `Q`, `K`, `V`
//! reached from its heads' split `Transpose(x, (0,2,1,3))` through only those per-head ops.

use std::collections::HashMap;

use super::super::proto::{AttributeProto, GraphProto, NodeProto};
use super::shapes::{Dim, ShapeFacts};
use super::{Constants, Fuser, MS_DOMAIN, attr_int, attr_ints, norm_epsilon, producer, producers};
use crate::q8_matmul::DOMAIN;
use crate::quantize::graph::{float_attribute, int_attribute};
use crate::row_ops::{ATTENTION_SOFTMAX, NORM_ROTARY};

/// A tensor of heads `[B, S, N, H]` or `[B, S, N·H]` and the per-head ops that follow it.
struct HeadChain {
    /// The heads' split as the projection wrote it, before the transpose to `[B, N, S, H]`.
    source: String,
    /// Whether `source` is `[B, S, N·H]` (else `[B, S, N, H]`).
    merged: bool,
    /// The `[B, S, N·H]` tensor a split `source` is a `Reshape` of (the projection), if any.
    unsplit: Option<String>,
    /// The per-head ops, first to last, each reading the one before as its input 0.
    ops: Vec<NodeProto>,
}

/// What one rewrite reads, found in the graph.
struct MultiQueryMatch {
    heads: i64,
    head_size: i64,
    scale: f32,
    query: HeadChain,
    key: HeadChain,
    value: HeadChain,
    bias: Option<String>,
    output: String,
    name: String,
    /// Whether the query's and key's per-head ops are exactly what `NormRotary` computes
    /// (see [`norm_rotary_form`]).
    norm_rotary: bool,
}

impl Fuser<'_> {
    /// Rewrites each `MultiHeadAttention` with one key/value head as the module
    /// documentation describes.
    pub(super) fn fuse_multi_query(&mut self, graph: &mut GraphProto) {
        let constants = Constants::of(graph);
        let facts = ShapeFacts::infer(graph, &constants);
        let producers = producers(graph);
        let matches: Vec<(usize, MultiQueryMatch)> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type() == "MultiHeadAttention" && n.domain() == MS_DOMAIN)
            .filter_map(|(i, n)| Some((i, match_multi_query(graph, n, &facts, &producers)?)))
            .map(|(i, mut m)| {
                m.norm_rotary = norm_rotary_form(&m, &constants);
                (i, m)
            })
            .collect();
        let mut targets = HashMap::new();
        let edits = matches
            .into_iter()
            .map(|(index, m)| (index, self.multi_query_nodes(&m, &mut targets)))
            .collect();
        self.splice_nodes(graph, edits, "multi_query_attention");
    }

    /// The nodes standing for the attention `m`. `targets` shares the `Reshape` targets
    /// between rewrites.
    fn multi_query_nodes(
        &mut self,
        m: &MultiQueryMatch,
        targets: &mut HashMap<Vec<i64>, String>,
    ) -> Vec<NodeProto> {
        let mut out = Emitter {
            fuser: self,
            targets,
            nodes: Vec::new(),
        };
        let (n, h) = (m.heads, m.head_size);
        if out.fuser.row_ops
            && m.norm_rotary
            && let Some(nodes) = out.with_row_ops(m)
        {
            return nodes;
        }
        let q = out.rows(&m.query, n, h, "query");
        let k = out.rows(&m.key, 1, h, "key");
        let v = out.rows(&m.value, 1, h, "value");
        let scores = out.scores(q, k, m.scale);
        let probabilities = match &m.bias {
            Some(bias) => {
                let by_head = out.reshape(scores, &[0, -1, n, 0], "scores_by_head");
                let bias = out.reshape(bias.clone(), &[0, -1, 1, 0], "bias_by_query");
                let biased = out.node("Add", "", vec![by_head, bias], "biased", Vec::new());
                let p = out.node(
                    "Softmax",
                    "",
                    vec![biased],
                    "probabilities_by_head",
                    vec![int_attribute("axis", -1)],
                );
                out.reshape(p, &[0, 1, -1, 0], "probabilities")
            }
            None => out.node(
                "Softmax",
                "",
                vec![scores],
                "probabilities",
                vec![int_attribute("axis", -1)],
            ),
        };
        out.context(probabilities, v, m, "akidb_multi_query");
        out.nodes
    }
}

/// Builds one rewrite's nodes.
struct Emitter<'f, 'a, 't> {
    fuser: &'f mut Fuser<'a>,
    targets: &'t mut HashMap<Vec<i64>, String>,
    nodes: Vec<NodeProto>,
}

impl Emitter<'_, '_, '_> {
    /// Adds a node with one fresh output (named after `what`); returns that name.
    fn node(
        &mut self,
        op: &str,
        domain: &str,
        input: Vec<String>,
        what: &str,
        attribute: Vec<AttributeProto>,
    ) -> String {
        let output = self.fuser.fresh_name(what);
        self.nodes.push(NodeProto {
            name: Some(format!("{output}/{op}")),
            op_type: Some(op.to_string()),
            domain: (!domain.is_empty()).then(|| domain.to_string()),
            input,
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    /// The int64 constant `values`, one per distinct target.
    fn target(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.targets.get(values) {
            return name.clone();
        }
        let name = self
            .fuser
            .int64_constant("multi_query_shape", values, false);
        self.targets.insert(values.to_vec(), name.clone());
        name
    }

    /// The scores `FusedMatMul(q, k, transB, alpha = scale)`.
    fn scores(&mut self, q: String, k: String, scale: f32) -> String {
        self.node(
            "FusedMatMul",
            MS_DOMAIN,
            vec![q, k],
            "scores",
            vec![float_attribute("alpha", scale), int_attribute("transB", 1)],
        )
    }

    /// The context `MatMul(probabilities, value)`, reshaped to `[B, S, N·H]` as `m`'s output
    /// (the node named after `m` and `suffix`).
    fn context(&mut self, probabilities: String, value: String, m: &MultiQueryMatch, suffix: &str) {
        let context = self.node(
            "MatMul",
            "",
            vec![probabilities, value],
            "context",
            Vec::new(),
        );
        let target = self.target(&[0, -1, m.heads * m.head_size]);
        self.nodes.push(NodeProto {
            name: Some(format!("{}/{suffix}", m.name)),
            op_type: Some("Reshape".to_string()),
            input: vec![context, target],
            output: vec![m.output.clone()],
            ..Default::default()
        });
    }

    fn reshape(&mut self, data: String, target: &[i64], what: &str) -> String {
        let target = self.target(target);
        self.node("Reshape", "", vec![data, target], what, Vec::new())
    }

    /// `chain`'s heads as the rows `[B, 1, S·heads, H]`: its per-head ops re-emitted on the
    /// projection's layout (the norm per head, the rotation on the merged heads).
    fn rows(&mut self, chain: &HeadChain, heads: i64, head_size: i64, what: &str) -> String {
        // A norm over one head needs the heads split, unless there is only one; the rotation
        // needs them merged. The projection itself is the merged form.
        let split_for_norm = heads > 1;
        let starts_merged = chain
            .ops
            .first()
            .is_none_or(|op| is_rotary(op) || !split_for_norm);
        let (mut current, mut merged) = match &chain.unsplit {
            Some(unsplit) if starts_merged => (unsplit.clone(), true),
            _ => (chain.source.clone(), chain.merged),
        };
        for op in &chain.ops {
            let rotary = is_rotary(op);
            if rotary && !merged {
                current = self.reshape(current, &[0, 0, heads * head_size], what);
                merged = true;
            } else if !rotary && merged && split_for_norm {
                current = self.reshape(current, &[0, 0, heads, head_size], what);
                merged = false;
            }
            let mut attribute = op.attribute.clone();
            // The norm was matched over the last axis of a 4-D tensor (`-1` or `3`); it may now
            // read the 3-D projection, so it says `-1`. The rotation is told its head count.
            let (name, value) = if rotary {
                ("num_heads", heads)
            } else {
                ("axis", -1)
            };
            attribute.retain(|a| a.name() != name);
            attribute.push(int_attribute(name, value));
            let mut input = op.input.clone();
            input[0] = current;
            current = self.node(op.op_type(), op.domain(), input, what, attribute);
        }
        self.reshape(current, &[0, 1, -1, head_size], &format!("{what}_rows"))
    }
}

impl Emitter<'_, '_, '_> {
    /// The attention on [`FuseStep::RowOps`](super::FuseStep::RowOps)'
    /// operators: `NormRotary` for the query and the key (rows `[B, S·N, H]` and
    /// `[B, L, H]`), the scores' `FusedMatMul`, `AttentionSoftmax` with the bias, the
    /// context's `MatMul` with the value projection itself, and the `Reshape` to
    /// `[B, S, N·H]`. `None` (nothing emitted) when a projection is not read whole.
    fn with_row_ops(&mut self, m: &MultiQueryMatch) -> Option<Vec<NodeProto>> {
        let n = m.heads;
        let (query, key, value) = (
            m.query.unsplit.clone()?,
            m.key.unsplit.clone()?,
            m.value.unsplit.clone()?,
        );
        let bias = m.bias.clone()?;
        let mut norm_rotary = |chain: &HeadChain, x: String, heads: i64, what: &str| {
            let (norm, rotary) = (&chain.ops[0], &chain.ops[1]);
            let epsilon = norm_epsilon(norm);
            let input = vec![
                x,
                norm.input[1].clone(),
                rotary.input[2].clone(),
                rotary.input[3].clone(),
            ];
            self.node(
                NORM_ROTARY,
                DOMAIN,
                input,
                what,
                vec![
                    int_attribute("num_heads", heads),
                    float_attribute("epsilon", epsilon),
                ],
            )
        };
        let q = norm_rotary(&m.query, query, n, "query_rows");
        let k = norm_rotary(&m.key, key, 1, "key_rows");
        let scores = self.scores(q, k, m.scale);
        let probabilities = self.node(
            ATTENTION_SOFTMAX,
            DOMAIN,
            vec![scores, bias],
            "probabilities",
            vec![int_attribute("num_heads", n)],
        );
        self.context(probabilities, value, m, "akidb_row_ops");
        self.fuser.count("attention_row_ops");
        Some(std::mem::take(&mut self.nodes))
    }
}

/// Whether the query's and the key's per-head ops are what `NormRotary` computes: a
/// `SimplifiedLayerNormalization` over the head (fp32 statistics, a weight, no other
/// outputs), then a `RotaryEmbedding` of halves (not interleaved) over the whole head, at
/// positions from the constant offset 0, with two-dimensional tables; and the value has none.
fn norm_rotary_form(m: &MultiQueryMatch, constants: &Constants) -> bool {
    let chain_fits = |chain: &HeadChain| match chain.ops.as_slice() {
        [norm, rotary] => {
            norm.op_type() == "SimplifiedLayerNormalization"
                && norm.input.len() == 2
                && attr_int(norm, "stash_type").unwrap_or(1) == 1
                && norm
                    .attribute
                    .iter()
                    .all(|a| ["axis", "epsilon", "stash_type"].contains(&a.name()))
                && is_rotary(rotary)
                && rotary.input.len() == 4
                && attr_int(rotary, "interleaved").unwrap_or(0) == 0
                && attr_int(rotary, "is_packed_batching").unwrap_or(0) == 0
                && attr_int(rotary, "rotary_embedding_dim")
                    .is_none_or(|d| d == 0 || d == m.head_size)
                && rotary.attribute.iter().all(|a| {
                    [
                        "interleaved",
                        "is_packed_batching",
                        "num_heads",
                        "rotary_embedding_dim",
                    ]
                    .contains(&a.name())
                })
                && constants.ints(&rotary.input[1]).is_some_and(|p| p == [0])
        }
        _ => false,
    };
    chain_fits(&m.query) && chain_fits(&m.key) && m.value.ops.is_empty()
}

fn is_rotary(op: &NodeProto) -> bool {
    op.op_type() == "RotaryEmbedding"
}

/// The match for the `MultiHeadAttention` `mha`, when its whole pattern is there.
fn match_multi_query(
    graph: &GraphProto,
    mha: &NodeProto,
    facts: &ShapeFacts,
    producers: &HashMap<String, usize>,
) -> Option<MultiQueryMatch> {
    let input = |i: usize| mha.input.get(i).filter(|n| !n.is_empty());
    // No packed bias, key padding mask or past state; one output.
    if input(3).is_some() || input(4).is_some() || mha.input.len() > 6 {
        return None;
    }
    if mha.output.iter().skip(1).any(|o| !o.is_empty())
        || attr_int(mha, "unidirectional").unwrap_or(0) != 0
    {
        return None;
    }
    let heads = attr_int(mha, "num_heads")?;
    let (key, key_heads) = single_head(graph, producers, facts, input(1)?, heads)?;
    let (value, value_heads) = single_head(graph, producers, facts, input(2)?, heads)?;
    let head_size = match (key_heads.as_slice(), value_heads.as_slice()) {
        ([_, Dim::Known(1), _, Dim::Known(h)], [_, Dim::Known(1), _, Dim::Known(hv)])
            if h == hv =>
        {
            *h
        }
        _ => return None,
    };
    let key = head_chain(graph, producers, facts, &key, 1, head_size)?;
    let value = head_chain(graph, producers, facts, &value, 1, head_size)?;
    let query = query_chain(graph, producers, facts, input(0)?, heads, head_size)?;
    let bias = match input(5) {
        Some(bias) => {
            let shape = facts.shapes.get(bias.as_str())?;
            if shape.len() != 4 || shape[1] != Dim::Known(1) {
                return None;
            }
            Some(bias.clone())
        }
        None => None,
    };
    let scale = mha
        .attribute
        .iter()
        .find(|a| a.name() == "scale")
        .and_then(|a| a.f)
        .filter(|s| *s != 0.0)
        .unwrap_or(1.0 / (head_size as f32).sqrt());
    Some(MultiQueryMatch {
        heads,
        head_size,
        scale,
        query,
        key,
        value,
        bias,
        output: mha.output.first()?.clone(),
        name: mha.name().to_string(),
        norm_rotary: false,
    })
}

/// The one head `x` `[B, 1, L, H]` that `repeated` `[B, heads, L, H]` repeats
/// (`Reshape(Expand(Unsqueeze(x)))`, the copies on a new axis after the head axis), and its
/// shape.
fn single_head(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    facts: &ShapeFacts,
    repeated: &str,
    heads: i64,
) -> Option<(String, Vec<Dim>)> {
    let reshape = producer(graph, producers, repeated, "Reshape")?;
    let expand = producer(graph, producers, reshape.input.first()?, "Expand")?;
    let unsqueeze = producer(graph, producers, expand.input.first()?, "Unsqueeze")?;
    let x = unsqueeze.input.first()?;
    let shape = |name: &str| facts.shapes.get(name).map(Vec::as_slice);
    let x_shape = shape(x)?;
    let [b, Dim::Known(1), l, h] = x_shape else {
        return None;
    };
    let one = Dim::Known(1);
    let n = Dim::Known(heads);
    (shape(unsqueeze.output.first()?)? == [*b, one, one, *l, *h]
        && shape(expand.output.first()?)? == [*b, one, n, *l, *h]
        && shape(repeated)? == [*b, n, *l, *h])
    .then(|| (x.clone(), x_shape.to_vec()))
}

/// The query `[B, S, N·H]` the attention reads: the projection itself, or the merge
/// (`Reshape(Transpose(q, (0,2,1,3)))`) of heads `q` `[B, N, S, H]`.
fn query_chain(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    facts: &ShapeFacts,
    query: &str,
    heads: i64,
    head_size: i64,
) -> Option<HeadChain> {
    if let Some(merge) = producer(graph, producers, query, "Reshape")
        && let Some(transpose) = producer(graph, producers, merge.input.first()?, "Transpose")
        && attr_ints(transpose, "perm")? == [0, 2, 1, 3]
    {
        return head_chain(
            graph,
            producers,
            facts,
            transpose.input.first()?,
            heads,
            head_size,
        );
    }
    let [_, _, Dim::Known(hidden)] = facts.shapes.get(query)?.as_slice() else {
        return None;
    };
    (*hidden == heads * head_size).then(|| HeadChain {
        source: query.to_string(),
        merged: true,
        unsplit: None,
        ops: Vec::new(),
    })
}

/// The chain from the heads' split `Transpose(x [B, S, heads, H], (0,2,1,3))` through
/// per-head norms and rotations to `bnsh`.
fn head_chain(
    graph: &GraphProto,
    producers: &HashMap<String, usize>,
    facts: &ShapeFacts,
    bnsh: &str,
    heads: i64,
    head_size: i64,
) -> Option<HeadChain> {
    let mut ops = Vec::new();
    let mut current = bnsh;
    loop {
        // Any domain: the rotation is ONNX Runtime's own operator.
        let node = graph.node.get(*producers.get(current)?)?;
        match (node.domain(), node.op_type()) {
            ("", "SimplifiedLayerNormalization")
                if matches!(attr_int(node, "axis").unwrap_or(-1), -1 | 3)
                    && node.output.iter().skip(1).all(String::is_empty) =>
            {
                ops.push(node.clone());
            }
            (MS_DOMAIN, "RotaryEmbedding")
                if attr_int(node, "is_packed_batching").unwrap_or(0) == 0 =>
            {
                ops.push(node.clone());
            }
            ("", "Transpose") if attr_ints(node, "perm")? == [0, 2, 1, 3] => {
                let source = node.input.first()?;
                let split_dims = facts.shapes.get(source.as_str())?.as_slice();
                let [_, _, Dim::Known(n), Dim::Known(h)] = split_dims else {
                    return None;
                };
                if *n != heads || *h != head_size {
                    return None;
                }
                ops.reverse();
                let unsplit = producer(graph, producers, source, "Reshape")
                    .and_then(|split| split.input.first())
                    .filter(|x| {
                        facts.shapes.get(x.as_str()).is_some_and(|shape| {
                            let [b, s, Dim::Known(hidden)] = shape.as_slice() else {
                                return false;
                            };
                            split_dims[..2] == [*b, *s] && *hidden == heads * head_size
                        })
                    })
                    .cloned();
                return Some(HeadChain {
                    source: source.clone(),
                    merged: false,
                    unsplit,
                    ops,
                });
            }
            _ => return None,
        }
        current = node.input.first()?;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_graph::{D, floats, input, ints, multi_head_attention, node, with_int};
    use super::super::{FuseRecipe, FuseStep, fuse_graph};
    use super::*;
    use crate::quantize::graph::ints_attribute;

    /// How the key/value head is made `[B, 2, S, 4]` from `[B, 1, S, 4]`.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Repeat {
        /// `Unsqueeze` after the head axis: each query head reads the one head.
        Heads,
        /// `Unsqueeze` after the sequence axis: rows of positions interleaved, not a repeat.
        Interleaved,
    }

    fn transpose(from: &str, to: &str) -> NodeProto {
        let mut t = node("Transpose", &[from], to);
        t.attribute.push(ints_attribute("perm", &[0, 2, 1, 3]));
        t
    }

    /// One layer's attention: two query heads of 4 and one key/value head, repeated by
    /// `repeat`, under a `MultiHeadAttention` as the attention step writes it.
    fn graph(repeat: Repeat) -> GraphProto {
        let (axis, expanded) = match repeat {
            Repeat::Heads => (2, [1, 1, 2, 1, 1]),
            Repeat::Interleaved => (3, [1, 1, 1, 2, 1]),
        };
        let mut nodes = vec![transpose("q", "q_bnsh"), transpose("q_bnsh", "q_bsnh")];
        nodes.push(node("Reshape", &["q_bsnh", "merged"], "query"));
        for x in ["k", "v"] {
            nodes.push(transpose(x, &format!("{x}1")));
            let mut head = format!("{x}1");
            if x == "k" {
                // The key's norm, over the last axis of `[B, 1, S, 4]` spelled `3`.
                nodes.push(with_int(
                    node("SimplifiedLayerNormalization", &["k1", "gamma"], "k_norm"),
                    "axis",
                    3,
                ));
                head = "k_norm".to_string();
            }
            nodes.push(node("Unsqueeze", &[&head, "axis"], &format!("{x}5")));
            nodes.push(node(
                "Expand",
                &[&format!("{x}5"), "expanded"],
                &format!("{x}e"),
            ));
            nodes.push(node(
                "Reshape",
                &[&format!("{x}e"), "heads"],
                &format!("{x}_heads"),
            ));
        }
        nodes.push(multi_head_attention("query", "k_heads", "v_heads"));
        let split = |name: &str, heads: i64| {
            input(name, &[D::P("batch"), D::P("seq"), D::N(heads), D::N(4)])
        };
        GraphProto {
            node: nodes,
            initializer: vec![
                ints("merged", &[3], &[0, 0, 8]),
                ints("axis", &[1], &[axis]),
                ints("expanded", &[5], &expanded),
                ints("heads", &[4], &[0, 2, -1, 4]),
                floats("gamma", &[4], &[1.0; 4]),
            ],
            input: vec![
                split("q", 2),
                split("k", 1),
                split("v", 1),
                input("bias", &[D::P("batch"), D::N(1), D::P("seq"), D::P("seq")]),
            ],
            output: vec![input("out", &[])],
            ..Default::default()
        }
    }

    #[test]
    fn one_key_value_head_becomes_two_gemms_without_transposes_or_repeats() {
        let mut graph = graph(Repeat::Heads);
        let (report, _) = fuse_graph(&mut graph, &FuseRecipe::only([FuseStep::MultiQuery]));
        assert_eq!(report.rewrites.get("multi_query_attention"), Some(&1));
        let ops: Vec<&str> = graph.node.iter().map(NodeProto::op_type).collect();
        for gone in ["MultiHeadAttention", "Transpose", "Unsqueeze", "Expand"] {
            assert!(!ops.contains(&gone), "{gone} left in {ops:?}");
        }
        let scores = graph
            .node
            .iter()
            .find(|n| n.op_type() == "FusedMatMul")
            .unwrap();
        assert_eq!(
            scores
                .attribute
                .iter()
                .find(|a| a.name() == "alpha")
                .unwrap()
                .f,
            Some(0.5)
        );
        // The key and value are read from the graph inputs themselves, one head each.
        let reads: Vec<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        for x in ["q", "k", "v", "bias"] {
            assert!(reads.contains(&x), "{x} not read: {reads:?}");
        }
        assert_eq!(graph.node.last().unwrap().output, ["out"]);
        // The one key head's norm reads the 3-D projection now: its axis says the last one.
        let norm = graph
            .node
            .iter()
            .find(|n| n.op_type() == "SimplifiedLayerNormalization")
            .unwrap();
        assert_eq!(norm.input[0], "k");
        assert_eq!(attr_int(norm, "axis"), Some(-1));
    }

    #[test]
    fn heads_interleaved_by_the_repeat_are_left_to_multi_head_attention() {
        let mut graph = graph(Repeat::Interleaved);
        let before = graph.node.clone();
        let (report, _) = fuse_graph(&mut graph, &FuseRecipe::only([FuseStep::MultiQuery]));
        assert_eq!(report.rewrites.get("multi_query_attention"), None);
        assert_eq!(graph.node, before);
    }
}
