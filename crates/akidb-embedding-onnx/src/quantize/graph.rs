//! What the quantiser ([`super::rewrite`]) and the fusion ([`super::fuse`]) both read from
//! and build into an ONNX graph: who produces and who reads each tensor, which names are
//! used, node attributes, and fp32 tensor bytes.

use std::collections::{HashMap, HashSet};

use super::proto::{AttributeProto, GraphProto, attribute_proto::AttributeType};

/// Producer node index of each tensor of `graph` (its top level).
pub(crate) fn producers(graph: &GraphProto) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for out in &node.output {
            map.insert(out.clone(), i);
        }
    }
    map
}

/// Consumer node indices of each tensor of `graph` (its top level); a graph output is read
/// by `usize::MAX`.
pub(crate) fn consumers(graph: &GraphProto) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            map.entry(input.clone()).or_default().push(i);
        }
    }
    for output in &graph.output {
        map.entry(output.name().to_string())
            .or_default()
            .push(usize::MAX);
    }
    map
}

/// Adds to `used` the names read by `graph`'s nodes (subgraphs included) or listed as its
/// outputs.
pub(crate) fn collect_uses(graph: &GraphProto, used: &mut HashSet<String>) {
    for node in &graph.node {
        used.extend(node.input.iter().cloned());
        for attribute in &node.attribute {
            if let Some(g) = &attribute.g {
                collect_uses(g, used);
            }
            for g in &attribute.graphs {
                collect_uses(g, used);
            }
        }
    }
    used.extend(graph.output.iter().map(|o| o.name().to_string()));
}

/// An integer node attribute.
pub(crate) fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

/// An integer list node attribute.
pub(crate) fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A float node attribute.
pub(crate) fn float_attribute(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

/// fp32 values as the little-endian bytes ONNX stores them in.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// fp32 values from little-endian bytes (a trailing partial value is ignored).
pub(crate) fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
