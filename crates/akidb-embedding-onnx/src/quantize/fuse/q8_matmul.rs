//! The `q8` products on this library's kernel ([`super::FuseStep::Q8Matmul`]): each
//! `com.microsoft::MatMulNBits` of 8 bits, accuracy level 4 and no zero points, group index or
//! bias, whose weights and scales are constants of shapes the kernel takes
//! ([`crate::q8_matmul::fits`]), becomes `ai.akidb::MatMulQ8` with the same inputs and the
//! attributes `K`, `N`, `block_size`: the same arithmetic on an AVX-512 VNNI kernel (see
//! [`crate::q8_matmul`]). Every other node is left as it is.
//!
//! A graph holding `MatMulQ8` loads only in a session that registers the operator (this
//! library's sessions do), so the step is on by default only where the CPU runs the kernel.

use std::collections::HashSet;

use super::super::proto::{GraphProto, NodeProto};
use super::{MS_DOMAIN, attr_int};
use crate::q8_matmul::{DOMAIN, OP_TYPE, fits};
use crate::quantize::graph::int_attribute;

/// Rewrites every qualifying `MatMulNBits` of `graph` into `MatMulQ8`; returns how many.
/// `more_constants`: initializers about to be added (a quantisation's weights).
pub(crate) fn use_q8_matmul(graph: &mut GraphProto, more_constants: &HashSet<&str>) -> usize {
    // Names that are not constants: the graph's inputs and every node's outputs.
    let computed: HashSet<String> = graph
        .input
        .iter()
        .map(|i| i.name().to_string())
        .chain(graph.node.iter().flat_map(|n| n.output.iter().cloned()))
        .collect();
    let constants: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name())
        .chain(more_constants.iter().copied())
        .collect();
    let mut rewrites = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        if let Some(q8) = rewrite(node, &constants, &computed) {
            rewrites.push((index, q8));
        }
    }
    let count = rewrites.len();
    for (index, q8) in rewrites {
        graph.node[index] = q8;
    }
    count
}

fn rewrite(
    node: &NodeProto,
    constants: &HashSet<&str>,
    computed: &HashSet<String>,
) -> Option<NodeProto> {
    if node.op_type() != "MatMulNBits" || node.domain() != MS_DOMAIN {
        return None;
    }
    // X, B, scales and nothing else (no zero points, group index or bias, even empty).
    if node.input.len() != 3 || node.output.len() != 1 {
        return None;
    }
    let known = ["K", "N", "bits", "block_size", "accuracy_level"];
    if node.attribute.iter().any(|a| !known.contains(&a.name())) {
        return None;
    }
    let positive = |name: &str| attr_int(node, name).and_then(|v| usize::try_from(v).ok());
    let (k, n, bits, block) = (
        positive("K")?,
        positive("N")?,
        positive("bits")?,
        positive("block_size")?,
    );
    if attr_int(node, "accuracy_level") != Some(4) || !fits(k, n, bits, block) {
        return None;
    }
    let constant =
        |name: &str| constants.contains(name) && !computed.contains(name) && !name.is_empty();
    if !constant(&node.input[1]) || !constant(&node.input[2]) {
        return None;
    }
    Some(NodeProto {
        input: node.input.clone(),
        output: node.output.clone(),
        name: node.name.clone(),
        op_type: Some(OP_TYPE.to_string()),
        domain: Some(DOMAIN.to_string()),
        attribute: vec![
            int_attribute("K", k as i64),
            int_attribute("N", n as i64),
            int_attribute("block_size", block as i64),
        ],
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::fuse::test_graph::{input, with_int};
    use crate::quantize::proto::TensorProto;
    use crate::quantize::proto::tensor_proto::DataType;

    fn nbits(inputs: &[&str], bits: i64, level: i64, n: i64) -> NodeProto {
        let mut node = NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".to_string()],
            name: Some("proj".to_string()),
            op_type: Some("MatMulNBits".to_string()),
            domain: Some(MS_DOMAIN.to_string()),
            ..Default::default()
        };
        node = with_int(node, "K", 64);
        node = with_int(node, "N", n);
        node = with_int(node, "bits", bits);
        node = with_int(node, "block_size", 32);
        with_int(node, "accuracy_level", level)
    }

    fn graph(node: NodeProto) -> GraphProto {
        let constant = |name: &str, data_type: DataType| TensorProto {
            name: Some(name.to_string()),
            data_type: Some(data_type as i32),
            ..Default::default()
        };
        GraphProto {
            node: vec![node],
            input: vec![input("x", &[])],
            initializer: vec![
                constant("b", DataType::Uint8),
                constant("s", DataType::Float),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn an_8_bit_level_4_product_of_constants_becomes_matmul_q8() {
        let mut g = graph(nbits(&["x", "b", "s"], 8, 4, 64));
        assert_eq!(use_q8_matmul(&mut g, &HashSet::new()), 1);
        let node = &g.node[0];
        assert_eq!((node.op_type(), node.domain()), (OP_TYPE, DOMAIN));
        assert_eq!(node.input, ["x", "b", "s"]);
        assert_eq!(node.output, ["y"]);
        assert_eq!(node.name(), "proj");
        assert_eq!(
            (
                attr_int(node, "K"),
                attr_int(node, "N"),
                attr_int(node, "block_size")
            ),
            (Some(64), Some(64), Some(32))
        );
        assert_eq!(node.attribute.len(), 3);
    }

    #[test]
    fn other_products_are_left_alone() {
        for (why, node) in [
            ("4 bits", nbits(&["x", "b", "s"], 4, 4, 64)),
            ("level 0", nbits(&["x", "b", "s"], 8, 0, 64)),
            ("N not a multiple of 32", nbits(&["x", "b", "s"], 8, 4, 48)),
            ("zero points", nbits(&["x", "b", "s", "zp"], 8, 4, 64)),
            ("weights computed", nbits(&["x", "x", "s"], 8, 4, 64)),
            ("scales not constant", nbits(&["x", "b", "t"], 8, 4, 64)),
        ] {
            let mut g = graph(node);
            assert_eq!(use_q8_matmul(&mut g, &HashSet::new()), 0, "{why}");
            assert_eq!(g.node[0].op_type(), "MatMulNBits", "{why}");
        }
    }
}
