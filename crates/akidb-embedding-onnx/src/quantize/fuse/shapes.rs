//! Symbolic shapes and shape values: which tensor has which dimensions, in terms of known
//! numbers and of the graph inputs' free dimensions (batch, sequence length), and which small
//! integer tensors (the export's shape arithmetic) hold which of those dimensions.
//!
//! A dimension nothing is known about gets a fresh symbol of its own, equal to no other, so
//! every equality the folding relies on is one the graph guarantees.

use crate::q8_matmul::DOMAIN;
use crate::row_ops::{ATTENTION_SOFTMAX, NORM_ADD_NORM};
use std::collections::HashMap;

use super::super::proto::{GraphProto, NodeProto, TensorProto, tensor_proto::DataType};
use super::{Constants, attr_int, attr_ints};

/// One dimension: a number, or a symbol (a graph input's free dimension, or an unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dim {
    Known(i64),
    Sym(u32),
}

impl Dim {
    pub(crate) fn known(self) -> Option<i64> {
        match self {
            Self::Known(k) => Some(k),
            Self::Sym(_) => None,
        }
    }
}

/// Whether two shapes can be one at run time: the same rank and the same known sizes, where
/// two symbolic sizes pass (a length a `Reshape` to -1 made is a new symbol, though equal at
/// run time to the one it came from). An operator relying on it checks when it runs.
pub(crate) fn may_be_equal(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Dim::Known(x), Dim::Known(y)) => x == y,
            (Dim::Sym(_), Dim::Sym(_)) => true,
            _ => false,
        })
}

/// What is known of the tensors of one graph.
#[derive(Debug, Default)]
pub(crate) struct ShapeFacts {
    /// Shapes, by tensor name.
    pub(crate) shapes: HashMap<String, Vec<Dim>>,
    /// Values of small integer tensors (rank 0 or 1), by tensor name; `scalar` tells rank 0.
    pub(crate) values: HashMap<String, IntValue>,
    /// Values of small boolean tensors (rank 0 or 1); `None` for an unknown element.
    bools: HashMap<String, Vec<Option<bool>>>,
    next_sym: u32,
    named_syms: HashMap<String, u32>,
}

/// The value of a small integer tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IntValue {
    pub(crate) elements: Vec<Dim>,
    pub(crate) scalar: bool,
}

impl IntValue {
    /// Every element as a number, when all are known.
    pub(crate) fn all_known(&self) -> Option<Vec<i64>> {
        self.elements.iter().map(|d| d.known()).collect()
    }
}

/// Integer tensors with more elements than this are not tracked as values.
const MAX_VALUE_LEN: usize = 64;

impl ShapeFacts {
    fn fresh(&mut self) -> Dim {
        self.next_sym += 1;
        Dim::Sym(self.next_sym)
    }

    fn named(&mut self, name: &str) -> Dim {
        if let Some(&sym) = self.named_syms.get(name) {
            return Dim::Sym(sym);
        }
        self.next_sym += 1;
        self.named_syms.insert(name.to_string(), self.next_sym);
        Dim::Sym(self.next_sym)
    }

    /// Works out shapes and values for every tensor of `graph`, in node order.
    pub(crate) fn infer(graph: &GraphProto, constants: &Constants) -> Self {
        let mut facts = Self::default();
        for input in &graph.input {
            let Some(shape) = input
                .r#type
                .as_ref()
                .and_then(|t| t.value.as_ref())
                .and_then(|v| match v {
                    super::super::proto::type_proto::Value::TensorType(t) => t.shape.as_ref(),
                    _ => None,
                })
            else {
                continue;
            };
            let dims = shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(super::super::proto::tensor_shape_proto::dimension::Value::DimValue(
                        v,
                    )) => Dim::Known(*v),
                    Some(super::super::proto::tensor_shape_proto::dimension::Value::DimParam(
                        p,
                    )) => facts.named(p),
                    None => facts.fresh(),
                })
                .collect();
            facts.shapes.insert(input.name().to_string(), dims);
        }
        for init in &graph.initializer {
            facts.record_constant(init.name(), init, constants);
        }
        for node in &graph.node {
            facts.visit(node, constants);
        }
        facts
    }

    fn record_constant(&mut self, name: &str, tensor: &TensorProto, constants: &Constants) {
        self.shapes.insert(
            name.to_string(),
            tensor.dims.iter().map(|&d| Dim::Known(d)).collect(),
        );
        if tensor.dims.len() <= 1
            && let Some(values) = constants.ints(name)
            && values.len() <= MAX_VALUE_LEN
        {
            self.values.insert(
                name.to_string(),
                IntValue {
                    elements: values.into_iter().map(Dim::Known).collect(),
                    scalar: tensor.dims.is_empty(),
                },
            );
        }
        if tensor.data_type == Some(DataType::Bool as i32)
            && tensor.dims.len() <= 1
            && let Some(values) = constants.ints(name)
        {
            self.bools.insert(
                name.to_string(),
                values.into_iter().map(|v| Some(v != 0)).collect(),
            );
        }
    }

    fn shape(&self, name: &str) -> Option<&Vec<Dim>> {
        self.shapes.get(name)
    }

    fn value(&self, name: &str) -> Option<&IntValue> {
        self.values.get(name)
    }

    fn input(node: &NodeProto, index: usize) -> Option<&str> {
        node.input
            .get(index)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    fn set_shape(&mut self, name: &str, dims: Vec<Dim>) {
        self.shapes.insert(name.to_string(), dims);
    }

    fn set_value(&mut self, name: &str, value: IntValue) {
        if value.elements.len() <= MAX_VALUE_LEN {
            self.set_shape(
                name,
                if value.scalar {
                    Vec::new()
                } else {
                    vec![Dim::Known(value.elements.len() as i64)]
                },
            );
            self.values.insert(name.to_string(), value);
        }
    }

    fn visit(&mut self, node: &NodeProto, constants: &Constants) {
        let Some(out) = node.output.first().cloned() else {
            return;
        };
        let op = node.op_type();
        let domain = node.domain();
        let in0 = Self::input(node, 0).and_then(|n| self.shape(n)).cloned();
        if op == "Constant" && domain.is_empty() {
            if let Some(tensor) = constants.tensor(&out) {
                let tensor = tensor.clone();
                self.record_constant(&out, &tensor, constants);
            }
            return;
        }
        // Values first: the shape arithmetic.
        if let Some(value) = self.eval_value(node, constants) {
            self.set_value(&out, value);
        }
        if let Some(bools) = self.eval_bools(node) {
            self.bools.insert(out.clone(), bools);
        }
        if self.shapes.contains_key(&out) {
            return;
        }
        let shape = match (domain, op) {
            (
                "",
                "Identity" | "Cast" | "Sqrt" | "Neg" | "Tanh" | "Erf" | "Softmax" | "Cos" | "Sin"
                | "Abs" | "Not" | "IsNaN" | "Relu" | "Sigmoid" | "Exp" | "Log" | "Reciprocal"
                | "LayerNormalization" | "Clip" | "Gelu" | "Floor" | "Ceil",
            )
            | (
                "com.microsoft",
                "FastGelu"
                | "Gelu"
                | "BiasGelu"
                | "SkipLayerNormalization"
                | "SkipSimplifiedLayerNormalization"
                | "RotaryEmbedding",
            ) => in0,
            // Output [B, S, value hidden]: the query's [B, S], the value's N·H.
            ("com.microsoft", "MultiHeadAttention") => {
                let value = Self::input(node, 2).and_then(|n| self.shape(n)).cloned();
                match (in0.as_deref(), value.as_deref()) {
                    (Some([b, s, _]), Some([_, _, hidden])) => Some(vec![*b, *s, *hidden]),
                    (Some([b, s, _]), Some([_, Dim::Known(n), _, Dim::Known(h)])) => {
                        Some(vec![*b, *s, Dim::Known(n * h)])
                    }
                    _ => None,
                }
            }
            ("", "SimplifiedLayerNormalization") => in0,
            // This library's row operators (`crate::row_ops`) that keep their input's shape.
            (DOMAIN, NORM_ADD_NORM | ATTENTION_SOFTMAX) => in0,
            (
                "",
                "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Less" | "Greater"
                | "GreaterOrEqual" | "LessOrEqual" | "And" | "Or" | "Max" | "Min" | "Where" | "Mod",
            ) => {
                let shapes: Option<Vec<Vec<Dim>>> =
                    node.input.iter().map(|n| self.shape(n).cloned()).collect();
                shapes.and_then(|s| self.broadcast_all(&s))
            }
            ("", "MatMul") => {
                let b = Self::input(node, 1).and_then(|n| self.shape(n)).cloned();
                match (in0, b) {
                    (Some(a), Some(b)) if a.len() >= 2 && b.len() >= 2 => {
                        let batch_a = &a[..a.len() - 2];
                        let batch_b = &b[..b.len() - 2];
                        self.broadcast(batch_a, batch_b).map(|mut batch| {
                            batch.push(a[a.len() - 2]);
                            batch.push(b[b.len() - 1]);
                            batch
                        })
                    }
                    _ => None,
                }
            }
            ("com.microsoft", "MatMulNBits") => in0.map(|mut a| {
                if let (Some(last), Some(n)) = (a.last_mut(), attr_int(node, "N")) {
                    *last = Dim::Known(n);
                }
                a
            }),
            ("", "Gather") => {
                let indices = Self::input(node, 1).and_then(|n| self.shape(n)).cloned();
                match (in0, indices) {
                    (Some(data), Some(indices)) => {
                        let axis = normalise_axis(attr_int(node, "axis").unwrap_or(0), data.len());
                        axis.map(|axis| {
                            let mut dims = data[..axis].to_vec();
                            dims.extend(indices);
                            dims.extend_from_slice(&data[axis + 1..]);
                            dims
                        })
                    }
                    _ => None,
                }
            }
            ("com.microsoft", "GatherBlockQuantized") => {
                let indices = Self::input(node, 1).and_then(|n| self.shape(n)).cloned();
                match (in0, indices, attr_int(node, "bits")) {
                    (Some(data), Some(mut indices), Some(8)) if data.len() == 2 => {
                        indices.push(data[1]);
                        Some(indices)
                    }
                    _ => None,
                }
            }
            ("", "Reshape") => {
                let target = Self::input(node, 1).and_then(|n| self.value(n)).cloned();
                match (in0, target) {
                    (Some(data), Some(target))
                        if attr_int(node, "allowzero") != Some(1)
                            || !target.elements.contains(&Dim::Known(0)) =>
                    {
                        self.reshape(&data, &target.elements)
                    }
                    _ => None,
                }
            }
            ("", "GatherND") => {
                let indices = Self::input(node, 1).and_then(|n| self.shape(n)).cloned();
                let batch = usize::try_from(attr_int(node, "batch_dims").unwrap_or(0)).ok();
                match (in0, indices, batch) {
                    (Some(data), Some(indices), Some(batch)) => match indices.split_last() {
                        Some((Dim::Known(depth), outer)) => {
                            let depth = usize::try_from(*depth).ok();
                            depth.and_then(|depth| {
                                let rest = data.get(batch + depth..)?;
                                let mut dims = outer.to_vec();
                                dims.extend_from_slice(rest);
                                Some(dims)
                            })
                        }
                        _ => None,
                    },
                    _ => None,
                }
            }
            ("", "Transpose") => in0.and_then(|data| {
                let perm = attr_ints(node, "perm")
                    .unwrap_or_else(|| (0..data.len() as i64).rev().collect());
                perm.iter()
                    .map(|&p| usize::try_from(p).ok().and_then(|p| data.get(p).copied()))
                    .collect()
            }),
            ("", "Unsqueeze") => {
                let axes = self.axes(node, 1);
                match (in0, axes) {
                    (Some(data), Some(axes)) => {
                        let rank = data.len() + axes.len();
                        let axes: Option<Vec<usize>> =
                            axes.iter().map(|&a| normalise_axis(a, rank)).collect();
                        axes.map(|axes| {
                            let mut rest = data.into_iter();
                            (0..rank)
                                .map(|i| {
                                    if axes.contains(&i) {
                                        Dim::Known(1)
                                    } else {
                                        rest.next().unwrap_or(Dim::Known(1))
                                    }
                                })
                                .collect()
                        })
                    }
                    _ => None,
                }
            }
            ("", "Squeeze") => {
                let axes = self.axes(node, 1);
                match (in0, axes) {
                    (Some(data), Some(axes)) => reduced(&data, &axes, false),
                    (Some(data), None) if Self::input(node, 1).is_none() => {
                        Some(data.into_iter().filter(|d| *d != Dim::Known(1)).collect())
                    }
                    _ => None,
                }
            }
            ("", "Concat") => {
                let shapes: Option<Vec<Vec<Dim>>> =
                    node.input.iter().map(|n| self.shape(n).cloned()).collect();
                shapes.and_then(|shapes| {
                    let first = shapes.first()?.clone();
                    let axis = normalise_axis(attr_int(node, "axis")?, first.len())?;
                    let mut dims = first;
                    let total: Option<i64> = shapes.iter().map(|s| s.get(axis)?.known()).sum();
                    dims[axis] = match total {
                        Some(t) => Dim::Known(t),
                        None => self.fresh(),
                    };
                    Some(dims)
                })
            }
            ("", "Slice") => self.slice_shape(node, in0),
            ("", "Expand") => {
                let target = Self::input(node, 1).and_then(|n| self.value(n)).cloned();
                match (in0, target) {
                    (Some(data), Some(target)) => self.broadcast(&data, &target.elements),
                    _ => None,
                }
            }
            ("", "ReduceMean" | "ReduceSum" | "ReduceL2" | "ReduceMax") => {
                let axes = self.axes(node, 1);
                let keep = attr_int(node, "keepdims").unwrap_or(1) == 1;
                match (in0, axes) {
                    (Some(data), Some(axes)) => reduced(&data, &axes, keep),
                    _ => None,
                }
            }
            ("", "Range") => {
                let start = Self::input(node, 0).and_then(|n| self.value(n));
                let limit = Self::input(node, 1).and_then(|n| self.value(n));
                let delta = Self::input(node, 2).and_then(|n| self.value(n));
                match (start, limit, delta) {
                    (Some(s), Some(l), Some(d))
                        if s.elements == [Dim::Known(0)] && d.elements == [Dim::Known(1)] =>
                    {
                        l.elements.first().map(|&l| vec![l])
                    }
                    _ => Some(vec![self.fresh()]),
                }
            }
            ("", "ConstantOfShape") => Self::input(node, 0)
                .and_then(|n| self.value(n))
                .map(|v| v.elements.clone()),
            ("", "Shape") => None, // set by eval_value
            _ => None,
        };
        if let Some(shape) = shape {
            // The skip norms' fourth output, the sum, has the input's shape too, as has
            // `NormAddNorm`'s second.
            let sum = match (domain, op) {
                (
                    "com.microsoft",
                    "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization",
                ) => node.output.get(3),
                (DOMAIN, NORM_ADD_NORM) => node.output.get(1),
                _ => None,
            };
            if let Some(sum) = sum.filter(|n| !n.is_empty()) {
                self.set_shape(sum, shape.clone());
            }
            self.set_shape(&out, shape);
        }
    }

    /// Axes from an input (opset 13+) or an attribute (older opsets).
    fn axes(&self, node: &NodeProto, index: usize) -> Option<Vec<i64>> {
        match Self::input(node, index) {
            Some(name) => self.value(name)?.all_known(),
            None => attr_ints(node, "axes"),
        }
    }

    fn broadcast(&mut self, a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
        let rank = a.len().max(b.len());
        let mut out = Vec::with_capacity(rank);
        for i in 0..rank {
            let da = (i + a.len())
                .checked_sub(rank)
                .and_then(|j| a.get(j))
                .copied()
                .unwrap_or(Dim::Known(1));
            let db = (i + b.len())
                .checked_sub(rank)
                .and_then(|j| b.get(j))
                .copied()
                .unwrap_or(Dim::Known(1));
            out.push(match (da, db) {
                (x, y) if x == y => x,
                (Dim::Known(1), y) => y,
                (x, Dim::Known(1)) => x,
                (Dim::Known(x), Dim::Sym(_)) => Dim::Known(x),
                (Dim::Sym(_), Dim::Known(y)) => Dim::Known(y),
                _ => self.fresh(),
            });
        }
        Some(out)
    }

    fn broadcast_all(&mut self, shapes: &[Vec<Dim>]) -> Option<Vec<Dim>> {
        let mut iter = shapes.iter();
        let mut acc = iter.next()?.clone();
        for s in iter {
            acc = self.broadcast(&acc, s)?;
        }
        Some(acc)
    }

    /// The output shape of `Reshape(data, target)`, `0` copying and `-1` inferring.
    fn reshape(&mut self, data: &[Dim], target: &[Dim]) -> Option<Vec<Dim>> {
        let mut out: Vec<Dim> = target
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Known(0) => data.get(i).copied().unwrap_or(Dim::Known(0)),
                other => *other,
            })
            .collect();
        if let Some(infer) = out.iter().position(|d| *d == Dim::Known(-1)) {
            // data's product divided by the other target dims, as far as symbols cancel.
            let mut numerator: Vec<Dim> = data.to_vec();
            let mut coefficient_num: i64 = 1;
            let mut coefficient_den: i64 = 1;
            numerator.retain(|d| match d {
                Dim::Known(k) => {
                    coefficient_num = coefficient_num.saturating_mul(*k);
                    false
                }
                Dim::Sym(_) => true,
            });
            for (i, d) in out.iter().enumerate() {
                if i == infer {
                    continue;
                }
                match d {
                    Dim::Known(k) => coefficient_den = coefficient_den.saturating_mul(*k),
                    sym => {
                        let at = numerator.iter().position(|n| n == sym)?;
                        numerator.remove(at);
                    }
                }
            }
            out[infer] = match numerator.as_slice() {
                [] if coefficient_den != 0 && coefficient_num % coefficient_den == 0 => {
                    Dim::Known(coefficient_num / coefficient_den)
                }
                [sym] if coefficient_num == coefficient_den => *sym,
                _ => self.fresh(),
            };
        }
        Some(out)
    }

    fn slice_shape(&mut self, node: &NodeProto, data: Option<Vec<Dim>>) -> Option<Vec<Dim>> {
        let mut dims = data?;
        let starts = self.value(Self::input(node, 1)?)?.clone();
        let ends = self.value(Self::input(node, 2)?)?.clone();
        let axes = match Self::input(node, 3) {
            Some(n) => self.value(n)?.all_known()?,
            None => (0..starts.elements.len() as i64).collect(),
        };
        let steps = match Self::input(node, 4) {
            Some(n) => self.value(n)?.all_known()?,
            None => vec![1; axes.len()],
        };
        for (i, &axis) in axes.iter().enumerate() {
            let axis = normalise_axis(axis, dims.len())?;
            let (start, end, step) = (
                *starts.elements.get(i)?,
                *ends.elements.get(i)?,
                *steps.get(i)?,
            );
            let dim = dims[axis];
            dims[axis] = match (dim, start, end, step) {
                (d, Dim::Known(0), e, 1) if e == d => d,
                // A prefix of a table as long as the sequence (position ids, a mask): the
                // sequence is taken to fit the table, or the graph fails at run time anyway.
                (Dim::Known(_), Dim::Known(0), Dim::Sym(e), 1) => Dim::Sym(e),
                (d, Dim::Known(0), Dim::Known(e), 1) if e >= i64::MAX / 2 => d,
                (Dim::Known(n), Dim::Known(s), Dim::Known(e), 1) => {
                    let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
                    Dim::Known((clamp(e) - clamp(s)).max(0))
                }
                _ => self.fresh(),
            };
        }
        Some(dims)
    }

    /// The value of an integer node output, when it is shape arithmetic this follows.
    fn eval_value(&mut self, node: &NodeProto, constants: &Constants) -> Option<IntValue> {
        let _ = constants;
        let op = node.op_type();
        if !node.domain().is_empty() {
            return None;
        }
        let value = |i: usize| Self::input(node, i).and_then(|n| self.value(n)).cloned();
        match op {
            "Shape" => {
                let shape = self.shape(Self::input(node, 0)?)?;
                let rank = shape.len() as i64;
                let clamp = |v: i64| {
                    if v < 0 {
                        (v + rank).max(0)
                    } else {
                        v.min(rank)
                    }
                };
                let start = clamp(attr_int(node, "start").unwrap_or(0)) as usize;
                let end = clamp(attr_int(node, "end").unwrap_or(rank)) as usize;
                Some(IntValue {
                    elements: shape.get(start..end)?.to_vec(),
                    scalar: false,
                })
            }
            "Gather" => {
                let data = value(0)?;
                let indices = value(1)?;
                if data.scalar || attr_int(node, "axis").unwrap_or(0) != 0 {
                    return None;
                }
                let len = data.elements.len() as i64;
                let elements = indices
                    .all_known()?
                    .into_iter()
                    .map(|i| {
                        let i = if i < 0 { i + len } else { i };
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| data.elements.get(i).copied())
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(IntValue {
                    elements,
                    scalar: indices.scalar,
                })
            }
            "Unsqueeze" => {
                let data = value(0)?;
                data.scalar.then_some(IntValue {
                    elements: data.elements,
                    scalar: false,
                })
            }
            "Squeeze" => {
                let data = value(0)?;
                (!data.scalar && data.elements.len() == 1).then_some(IntValue {
                    elements: data.elements,
                    scalar: true,
                })
            }
            "Concat" => {
                let mut elements = Vec::new();
                for name in &node.input {
                    let part = self.value(name)?;
                    if part.scalar {
                        return None;
                    }
                    elements.extend_from_slice(&part.elements);
                }
                Some(IntValue {
                    elements,
                    scalar: false,
                })
            }
            "Cast" => {
                let to = attr_int(node, "to")?;
                let integer = [
                    DataType::Int64 as i64,
                    DataType::Int32 as i64,
                    DataType::Int16 as i64,
                    DataType::Int8 as i64,
                ];
                if integer.contains(&to) {
                    value(0)
                } else {
                    None
                }
            }
            "Identity" => value(0),
            "Slice" => {
                let data = value(0)?;
                let start = *value(1)?.all_known()?.first()?;
                let end = *value(2)?.all_known()?.first()?;
                if let Some(axes) = value(3)
                    && axes.all_known()? != [0]
                {
                    return None;
                }
                if let Some(steps) = value(4)
                    && steps.all_known()? != [1]
                {
                    return None;
                }
                if data.scalar {
                    return None;
                }
                let len = data.elements.len() as i64;
                let clamp = |v: i64| {
                    if v < 0 {
                        v.saturating_add(len).max(0)
                    } else {
                        v.min(len)
                    }
                };
                let (start, end) = (clamp(start) as usize, clamp(end) as usize);
                Some(IntValue {
                    elements: data.elements.get(start..end.max(start))?.to_vec(),
                    scalar: false,
                })
            }
            "Reshape" => {
                let data = value(0)?;
                let target = value(1)?.all_known()?;
                match target.as_slice() {
                    [] if data.elements.len() == 1 => Some(IntValue {
                        elements: data.elements,
                        scalar: true,
                    }),
                    [n] if *n == -1 || *n == data.elements.len() as i64 => Some(IntValue {
                        elements: data.elements,
                        scalar: false,
                    }),
                    _ => None,
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let a = value(0)?;
                let b = value(1)?;
                let len = a.elements.len().max(b.elements.len());
                if (a.elements.len() != len && a.elements.len() != 1)
                    || (b.elements.len() != len && b.elements.len() != 1)
                {
                    return None;
                }
                let pick = |v: &IntValue, i: usize| {
                    v.elements
                        .get(if v.elements.len() == 1 { 0 } else { i })
                        .copied()
                };
                let mut elements = Vec::with_capacity(len);
                for i in 0..len {
                    let (x, y) = (pick(&a, i)?, pick(&b, i)?);
                    elements.push(match (op, x, y) {
                        ("Add", Dim::Known(x), Dim::Known(y)) => Dim::Known(x.checked_add(y)?),
                        ("Sub", Dim::Known(x), Dim::Known(y)) => Dim::Known(x.checked_sub(y)?),
                        ("Mul", Dim::Known(x), Dim::Known(y)) => Dim::Known(x.checked_mul(y)?),
                        ("Div", Dim::Known(x), Dim::Known(y)) if y != 0 => Dim::Known(x / y),
                        ("Add" | "Sub", s, Dim::Known(0)) | ("Mul" | "Div", s, Dim::Known(1)) => s,
                        ("Add", Dim::Known(0), s) => s,
                        ("Mul", Dim::Known(1), s) => s,
                        _ => self.fresh(),
                    });
                }
                Some(IntValue {
                    elements,
                    scalar: a.scalar && b.scalar,
                })
            }
            "Where" => {
                let cond = self.bools.get(Self::input(node, 0)?)?.clone();
                let x = value(1)?;
                let y = value(2)?;
                let len = cond.len().max(x.elements.len()).max(y.elements.len());
                let pick = |v: &[Dim], i: usize| v.get(if v.len() == 1 { 0 } else { i }).copied();
                let mut elements = Vec::with_capacity(len);
                for i in 0..len {
                    let c = cond.get(if cond.len() == 1 { 0 } else { i }).copied()??;
                    elements.push(if c {
                        pick(&x.elements, i)?
                    } else {
                        pick(&y.elements, i)?
                    });
                }
                Some(IntValue {
                    elements,
                    scalar: x.scalar && y.scalar && cond.len() == 1,
                })
            }
            "ConstantOfShape" => {
                let shape = value(0)?.all_known()?;
                let [len] = shape.as_slice() else {
                    return None;
                };
                let fill = node
                    .attribute
                    .iter()
                    .find(|a| a.name() == "value")
                    .and_then(|a| a.t.as_ref())
                    .and_then(super::tensor_ints)
                    .and_then(|v| v.first().copied())
                    .unwrap_or(0);
                let len = usize::try_from(*len).ok().filter(|&l| l <= MAX_VALUE_LEN)?;
                Some(IntValue {
                    elements: vec![Dim::Known(fill); len],
                    scalar: false,
                })
            }
            _ => None,
        }
    }

    /// Boolean results of comparisons of shape values (`Equal` only).
    fn eval_bools(&self, node: &NodeProto) -> Option<Vec<Option<bool>>> {
        if node.op_type() != "Equal" || !node.domain().is_empty() {
            return None;
        }
        let a = self.value(Self::input(node, 0)?)?;
        let b = self.value(Self::input(node, 1)?)?;
        let len = a.elements.len().max(b.elements.len());
        let pick = |v: &IntValue, i: usize| {
            v.elements
                .get(if v.elements.len() == 1 { 0 } else { i })
                .copied()
        };
        (0..len)
            .map(|i| {
                let (x, y) = (pick(a, i)?, pick(b, i)?);
                Some(match (x, y) {
                    (Dim::Known(x), Dim::Known(y)) => Some(x == y),
                    (x, y) if x == y => Some(true),
                    // A tensor's dimension is never negative.
                    (Dim::Sym(_), Dim::Known(k)) | (Dim::Known(k), Dim::Sym(_)) if k < 0 => {
                        Some(false)
                    }
                    _ => None,
                })
            })
            .collect()
    }
}

/// `axis` in `0..rank`, negative axes counted from the end.
/// `data` with the dimensions at `axes` reduced: kept as 1 (`keep`) or removed (a
/// reduction without `keepdims`, a `Squeeze`).
fn reduced(data: &[Dim], axes: &[i64], keep: bool) -> Option<Vec<Dim>> {
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| normalise_axis(a, data.len()))
        .collect::<Option<_>>()?;
    Some(
        data.iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), keep) {
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
                (false, _) => Some(*d),
            })
            .collect(),
    )
}

pub(crate) fn normalise_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    (0..rank)
        .contains(&axis)
        .then(|| usize::try_from(axis).ok())
        .flatten()
}
