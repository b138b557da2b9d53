//! `ai.akidb::NormRotary`, `ai.akidb::AttentionSoftmax` and `ai.akidb::NormAddNorm`: ONNX
//! Runtime custom operators on the row kernels of [`akidb_q8_kernel::rows`], each standing
//! for a chain of ONNX Runtime nodes with the same arithmetic.
//!
//! In EmbeddingGemma's fused graph each layer spells the steps of its attention between the
//! projections and the two GEMMs as 14 nodes (the query's and key's
//! `SimplifiedLayerNormalization` and `RotaryEmbedding`, the bias's `Add`, the `Softmax`,
//! and the `Reshape`s between the layouts each wants), and each of its two post-norms as a
//! `SimplifiedLayerNormalization` feeding a `SkipSimplifiedLayerNormalization`. On a short
//! text a node costs about as much as its arithmetic, and each norm wakes the thread pool for
//! a few rows. The operators here do the same work in 3 nodes and 1 node, in the layouts the
//! GEMMs read, on the pool only when the rows are many (on EmbeddingGemma `q8`, short text:
//! about 0.9 ms less per call; docs/q8.md). The fusion's
//! [`FuseStep::RowOps`](crate::quantize::fuse::FuseStep::RowOps) writes them.
//!
//! - `NormRotary(x [B, S, N·H], weight [H], cos [P, H/2], sin [P, H/2])`, attributes
//!   `num_heads` (N) and `epsilon`: each head of each position RMS-normalised (times
//!   `weight`) and rotated for its position `s` (halves not interleaved), written as rows
//!   `[B, S·N, H]` (row `s·N + n`, the order the projection wrote them in). `S` may not
//!   exceed the tables' `P` positions.
//! - `AttentionSoftmax(scores [B, S·N, L], bias [B or 1, 1, S or 1, L])`, attribute
//!   `num_heads` (N): `softmax(scores[b, s·N + n] + bias[b, 0, s])` over the keys.
//! - `NormAddNorm(x, r, w₁, w₂)`, `x` and `r` of one shape `[…, D]`, attributes `epsilon`
//!   and `second_epsilon`: `sum = r + rmsnorm(x)·w₁` (output 1, optional) and
//!   `rmsnorm(sum)·w₂` (output 0).
//!
//! Shapes that do not fit are errors of the run, never a crash.

use std::sync::Mutex;

use akidb_q8_kernel::rows::{
    NormAddNorm as NormAddNormSettings, NormRotate, bias_softmax_rows, norm_add_norm_rows,
    norm_rotate_rows,
};
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
    ShapeInferenceContext,
};
use ort::value::{Shape, SymbolicDimensions, TensorElementType, ValueRef, ValueType};

/// `NormRotary`'s operator type.
pub const NORM_ROTARY: &str = "NormRotary";
/// `AttentionSoftmax`'s operator type.
pub const ATTENTION_SOFTMAX: &str = "AttentionSoftmax";
/// `NormAddNorm`'s operator type.
pub const NORM_ADD_NORM: &str = "NormAddNorm";

/// Below this many values an operator runs on the calling thread: waking the pool costs more
/// than the arithmetic (a short text's heads: 18 rows of 256).
const PARALLEL_VALUES: usize = 32 * 1024;
/// Rows per item of the pool's work.
const ROWS_PER_ITEM: usize = 16;

/// The `NormRotary` operator.
pub(crate) struct NormRotary;

/// The `AttentionSoftmax` operator.
pub(crate) struct AttentionSoftmax;

/// The `NormAddNorm` operator.
pub(crate) struct NormAddNorm;

fn float_inputs(count: usize) -> Vec<OperatorInput> {
    (0..count)
        .map(|_| OperatorInput::required(TensorElementType::Float32))
        .collect()
}

fn heads_attribute(info: &KernelContext<'_>, op: &str) -> ort::Result<usize> {
    info.get::<i64>("num_heads")
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| ort::Error::new(format!("{op} needs a positive `num_heads`")))
}

impl Operator for NormRotary {
    type Kernel<'attr> = NormRotaryKernel;

    fn name(&self) -> &str {
        NORM_ROTARY
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        float_inputs(4)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        // [B, S, N·H] → [B, S·N, H], H the weight's length.
        let heads: i64 = ctx.attr("num_heads")?;
        let inputs = ctx.inputs();
        let (
            Some(ValueType::Tensor {
                shape,
                dimension_symbols,
                ..
            }),
            Some(ValueType::Tensor { shape: weight, .. }),
        ) = (inputs.first(), inputs.get(1))
        else {
            return Ok(());
        };
        let (&[batch, positions, _], &[head]) = (&shape[..], &weight[..]) else {
            return Ok(());
        };
        if !described(shape, dimension_symbols) || head < 0 {
            return Ok(());
        }
        let symbol = |i: usize| dimension_symbols.get(i).cloned().unwrap_or_default();
        // The rows: S·N, a size or a symbol named after the sequence's.
        let (rows, rows_symbol) = if positions >= 0 {
            (positions * heads, String::new())
        } else if heads == 1 {
            (-1, symbol(1))
        } else {
            (-1, format!("{}*{heads}", symbol(1)))
        };
        ctx.set_output(
            0,
            &ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape: Shape::new([batch, rows, head]),
                dimension_symbols: SymbolicDimensions::new([symbol(0), rows_symbol, String::new()]),
            },
        )
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<NormRotaryKernel> {
        Ok(NormRotaryKernel {
            heads: heads_attribute(info, NORM_ROTARY)?,
            epsilon: info
                .get::<f32>("epsilon")
                .ok_or_else(|| ort::Error::new("NormRotary needs `epsilon`"))?,
        })
    }
}

/// One `NormRotary` node's kernel.
pub(crate) struct NormRotaryKernel {
    heads: usize,
    epsilon: f32,
}

/// Whether every dimension is a size or a named symbol. (Shape inference reports a dimension
/// it knows nothing of as -1 without a name, and one set so would read as the size -1; no
/// dimensions at all is a shape it does not know.)
fn described(shape: &[i64], symbols: &SymbolicDimensions) -> bool {
    !shape.is_empty()
        && shape
            .iter()
            .zip(symbols.iter())
            .all(|(size, symbol)| *size >= 0 || !symbol.is_empty())
}

/// Gives `outputs` input 0's type and shape, when that shape is described (see
/// [`described`]); else leaves them unknown.
fn keep_input_shape(ctx: &mut ShapeInferenceContext, outputs: &[usize]) -> ort::Result<()> {
    let Some(input) = ctx.inputs().into_iter().next() else {
        return Ok(());
    };
    if !matches!(&input, ValueType::Tensor { shape, dimension_symbols, .. }
        if described(shape, dimension_symbols))
    {
        return Ok(());
    }
    for &output in outputs {
        ctx.set_output(output, &input)?;
    }
    Ok(())
}

fn bad_shape(op: &str, what: String) -> ort::Error {
    ort::Error::new(format!("{op}: {what}"))
}

/// Runs `f(first_row, rows)` over the rows of `row_len` values of `outputs` (each holding
/// the same rows): on the calling thread when they are few, else in items of
/// [`ROWS_PER_ITEM`] rows claimed by the pool's threads one at a time (on this thread if the
/// pool refuses the work: same results).
fn for_rows<const N: usize>(
    ctx: &ComputeContext,
    outputs: [&mut [f32]; N],
    row_len: usize,
    f: &(dyn Fn(usize, [&mut [f32]; N]) + Sync),
) {
    if outputs.first().is_none_or(|o| o.len() < PARALLEL_VALUES) || row_len == 0 {
        f(0, outputs);
        return;
    }
    let mut chunks = outputs.map(|o| o.chunks_mut(ROWS_PER_ITEM * row_len));
    let mut items: Vec<Mutex<[&mut [f32]; N]>> = Vec::new();
    while let Ok(item) = <[&mut [f32]; N]>::try_from(
        chunks
            .each_mut()
            .into_iter()
            .map_while(Iterator::next)
            .collect::<Vec<_>>(),
    ) {
        items.push(Mutex::new(item));
    }
    let run = |item: usize| {
        // Each item is claimed once: the lock is never contended.
        if let Some(Ok(mut rows)) = items.get(item).map(Mutex::lock) {
            f(item * ROWS_PER_ITEM, rows.each_mut().map(|r| &mut **r));
        }
    };
    if let Err(error) = ctx.par_for(items.len(), items.len(), run) {
        tracing::debug!(%error, "row operator ran on one thread: the pool refused the work");
        (0..items.len()).for_each(run);
    }
}

/// `op`'s first `N` inputs, each required.
fn required_inputs<'c, const N: usize>(
    ctx: &'c ComputeContext,
    op: &str,
) -> ort::Result<[ValueRef<'c>; N]> {
    let inputs = (0..N)
        .map(|i| {
            ctx.input(i)?
                .ok_or_else(|| ort::Error::new(format!("{op} lacks input {i}")))
        })
        .collect::<ort::Result<Vec<_>>>()?;
    <[ValueRef<'c>; N]>::try_from(inputs).map_err(|_| ort::Error::new(format!("{op}: inputs")))
}

impl Kernel for NormRotaryKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let [x, weight, cos, sin] = required_inputs(ctx, NORM_ROTARY)?;
        let (shape, x) = x.try_extract_tensor::<f32>()?;
        let (_, weight) = weight.try_extract_tensor::<f32>()?;
        let (cos_shape, cos) = cos.try_extract_tensor::<f32>()?;
        let (_, sin) = sin.try_extract_tensor::<f32>()?;
        let head = weight.len();
        let heads = self.heads;
        let &[batch, positions, width] = &shape[..] else {
            return Err(bad_shape(
                NORM_ROTARY,
                format!("the input is {shape:?}, not [B, S, N·H]"),
            ));
        };
        if head == 0 || head % 2 != 0 || width != (heads * head) as i64 {
            return Err(bad_shape(
                NORM_ROTARY,
                format!(
                    "the input's rows hold {width} values, not {heads} heads of the weight's {head} (even)"
                ),
            ));
        }
        let table_positions = match &cos_shape[..] {
            [p, half] if *half == (head / 2) as i64 && sin.len() == cos.len() => *p,
            _ => {
                return Err(bad_shape(
                    NORM_ROTARY,
                    format!("the rotary tables are {cos_shape:?}, not [P, {}]", head / 2),
                ));
            }
        };
        if positions > table_positions {
            return Err(bad_shape(
                NORM_ROTARY,
                format!("{positions} positions exceed the rotary tables' {table_positions}"),
            ));
        }
        let mut output = ctx
            .output(0, vec![batch, positions * heads as i64, head as i64])?
            .ok_or_else(|| ort::Error::new("NormRotary has no output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let settings = NormRotate {
            head_size: head,
            heads,
            positions: usize::try_from(positions).unwrap_or(0),
            weight,
            epsilon: self.epsilon,
            cos,
            sin,
        };
        for_rows(ctx, [out], head, &|first_row, [rows]| {
            let input = &x[first_row * head..][..rows.len()];
            norm_rotate_rows(input, rows, first_row, &settings);
        });
        Ok(())
    }
}

impl Operator for AttentionSoftmax {
    type Kernel<'attr> = AttentionSoftmaxKernel;

    fn name(&self) -> &str {
        ATTENTION_SOFTMAX
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        float_inputs(2)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        keep_input_shape(ctx, &[0])
    }

    fn create_kernel<'attr>(
        &self,
        info: &KernelContext<'attr>,
    ) -> ort::Result<AttentionSoftmaxKernel> {
        Ok(AttentionSoftmaxKernel {
            heads: heads_attribute(info, ATTENTION_SOFTMAX)?,
        })
    }
}

/// One `AttentionSoftmax` node's kernel.
pub(crate) struct AttentionSoftmaxKernel {
    heads: usize,
}

impl Kernel for AttentionSoftmaxKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let [scores, bias] = required_inputs(ctx, ATTENTION_SOFTMAX)?;
        let (shape, scores) = scores.try_extract_tensor::<f32>()?;
        let (bias_shape, bias) = bias.try_extract_tensor::<f32>()?;
        let heads = self.heads as i64;
        let (&[batch, rows, keys], &[bias_batch, 1, bias_rows, bias_keys]) =
            (&shape[..], &bias_shape[..])
        else {
            return Err(bad_shape(
                ATTENTION_SOFTMAX,
                format!(
                    "the scores are {shape:?} and the bias {bias_shape:?}, not [B, S·N, L] and [B or 1, 1, S or 1, L]"
                ),
            ));
        };
        let positions = rows / heads;
        if rows % heads != 0
            || bias_keys != keys
            || !(bias_batch == 1 || bias_batch == batch)
            || !(bias_rows == 1 || bias_rows == positions)
        {
            return Err(bad_shape(
                ATTENTION_SOFTMAX,
                format!(
                    "the scores {shape:?} of {heads} heads do not match the bias {bias_shape:?}"
                ),
            ));
        }
        let mut output = ctx
            .output(0, shape.to_vec())?
            .ok_or_else(|| ort::Error::new("AttentionSoftmax has no output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let to_usize = |v: i64| usize::try_from(v).unwrap_or(0);
        let (rows, keys, heads) = (to_usize(rows), to_usize(keys), self.heads);
        let (bias_batch, bias_rows) = (to_usize(bias_batch), to_usize(bias_rows));
        let bias_of = |row: usize| -> &[f32] {
            let (b, s) = (row / rows, row % rows / heads);
            let b = if bias_batch == 1 { 0 } else { b };
            let s = if bias_rows == 1 { 0 } else { s };
            &bias[(b * bias_rows + s) * keys..][..keys]
        };
        for_rows(ctx, [out], keys, &|first_row, [part]| {
            let input = &scores[first_row * keys..][..part.len()];
            bias_softmax_rows(input, part, keys, first_row, &bias_of);
        });
        Ok(())
    }
}

impl Operator for NormAddNorm {
    type Kernel<'attr> = NormAddNormKernel;

    fn name(&self) -> &str {
        NORM_ADD_NORM
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        float_inputs(4)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [
            OperatorOutput::required(TensorElementType::Float32),
            OperatorOutput::optional(TensorElementType::Float32),
        ]
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        keep_input_shape(ctx, &[0, 1])
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<NormAddNormKernel> {
        let epsilon = |name: &str| {
            info.get::<f32>(name)
                .ok_or_else(|| ort::Error::new(format!("NormAddNorm needs `{name}`")))
        };
        Ok(NormAddNormKernel {
            first_epsilon: epsilon("epsilon")?,
            second_epsilon: epsilon("second_epsilon")?,
        })
    }
}

/// One `NormAddNorm` node's kernel.
pub(crate) struct NormAddNormKernel {
    first_epsilon: f32,
    second_epsilon: f32,
}

impl Kernel for NormAddNormKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let [x, residual, first, second] = required_inputs(ctx, NORM_ADD_NORM)?;
        let (shape, x) = x.try_extract_tensor::<f32>()?;
        let (residual_shape, residual) = residual.try_extract_tensor::<f32>()?;
        let (_, first) = first.try_extract_tensor::<f32>()?;
        let (_, second) = second.try_extract_tensor::<f32>()?;
        let d = first.len();
        if shape != residual_shape
            || d == 0
            || second.len() != d
            || shape.last().copied() != Some(d as i64)
        {
            return Err(bad_shape(
                NORM_ADD_NORM,
                format!(
                    "the input {shape:?} and residual {residual_shape:?} must be equal, with rows of the weights' {d} and {} values",
                    second.len()
                ),
            ));
        }
        let settings = NormAddNormSettings {
            first_weight: first,
            first_epsilon: self.first_epsilon,
            second_weight: second,
            second_epsilon: self.second_epsilon,
        };
        let mut output = ctx
            .output(0, shape.to_vec())?
            .ok_or_else(|| ort::Error::new("NormAddNorm has no output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let mut sum_output = ctx.output(1, shape.to_vec())?;
        let mut scratch = Vec::new();
        let sum: &mut [f32] = match sum_output.as_mut() {
            Some(value) => value.try_extract_tensor_mut::<f32>()?.1,
            None => {
                scratch.resize(x.len(), 0.0);
                &mut scratch
            }
        };
        for_rows(ctx, [out, sum], d, &|first_row, [out, sum]| {
            let start = first_row * d;
            let (x, residual) = (&x[start..][..out.len()], &residual[start..][..out.len()]);
            norm_add_norm_rows(x, residual, out, sum, &settings);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ort::session::Session;
    use ort::value::Tensor;
    use prost::Message;

    use super::*;
    use crate::q8_matmul::{DOMAIN, create_session, operator_domain};
    use crate::quantize::fuse::test_graph::{any_float_input, node, with_float, with_int};
    use crate::quantize::proto::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
    };
    use crate::runtime::{RuntimeSearch, environment};

    /// A session running `op` alone, its inputs named `names` (float, of any shape) and its
    /// outputs `outputs`. Needs ONNX Runtime: `ORT_DYLIB_PATH`, else the `runtime/` folder
    /// `scripts/setup.sh` fills (in `AKIDB_HOME`, else the workspace's `.akidb`).
    fn session_of(op: NodeProto, names: &[&str], outputs: &[&str]) -> Session {
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let candidates: Vec<std::path::PathBuf> = std::env::var_os("AKIDB_HOME")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain([workspace.join(".akidb")])
            .map(|home| home.join("runtime"))
            .collect();
        let search = RuntimeSearch {
            library: None,
            candidates: &candidates,
        };
        let env = environment(search).expect("ONNX Runtime: run scripts/setup.sh");
        let model = ModelProto {
            ir_version: Some(8),
            opset_import: [("", 18), (DOMAIN, 1)]
                .map(|(domain, version)| OperatorSetIdProto {
                    domain: Some(domain.to_string()),
                    version: Some(version),
                })
                .to_vec(),
            graph: Some(GraphProto {
                name: Some("row_op".to_string()),
                node: vec![op],
                input: names.iter().map(|n| any_float_input(n)).collect(),
                output: outputs
                    .iter()
                    .map(|n| ValueInfoProto {
                        name: Some(n.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut builder = Session::builder(&env)
            .unwrap()
            .with_operators(operator_domain().unwrap())
            .unwrap();
        create_session(|| builder.commit_from_memory(&model.encode_to_vec())).unwrap()
    }

    fn ours(op_type: &str, inputs: &[&str], output: &str) -> NodeProto {
        let mut op = node(op_type, inputs, output);
        op.domain = Some(DOMAIN.to_string());
        op
    }

    fn tensor(shape: &[i64], fill: f32) -> Tensor<f32> {
        let count = shape.iter().product::<i64>() as usize;
        Tensor::from_array((shape.to_vec(), vec![fill; count])).unwrap()
    }

    /// A run's inputs by name.
    type Inputs = Vec<(&'static str, Tensor<f32>)>;

    /// Runs `session` on `inputs`: its outputs in the graph's order, or the run's error message.
    fn run(session: &mut Session, inputs: Inputs) -> Result<Vec<Vec<f32>>, String> {
        let inputs: Vec<_> = inputs
            .into_iter()
            .map(|(name, t)| {
                (
                    std::borrow::Cow::from(name),
                    ort::session::SessionInputValue::from(t),
                )
            })
            .collect();
        let outputs = session.run(inputs).map_err(|e| e.to_string())?;
        Ok(outputs
            .values()
            .map(|v| v.try_extract_tensor::<f32>().unwrap().1.to_vec())
            .collect())
    }

    /// Runs each case's inputs on `session` and checks that the run fails with `op`'s name
    /// and the case's reason.
    fn assert_refused(session: &mut Session, op: &str, cases: Vec<(Inputs, &str)>) {
        for (inputs, expected) in cases {
            let error = run(session, inputs).unwrap_err();
            assert!(error.contains(op) && error.contains(expected), "{error}");
        }
    }

    /// `NormRotary`'s inputs: `x` of ones, a weight of ones, rotary tables at angle 0.
    fn rotary_inputs(x: &[i64], head: i64, table: &[i64]) -> Inputs {
        vec![
            ("x", tensor(x, 1.0)),
            ("w", tensor(&[head], 1.0)),
            ("cos", tensor(table, 1.0)),
            ("sin", tensor(table, 0.0)),
        ]
    }

    #[test]
    fn norm_rotary_runs_and_refuses_shapes_that_do_not_fit() {
        let op = with_int(
            ours(NORM_ROTARY, &["x", "w", "cos", "sin"], "y"),
            "num_heads",
            2,
        );
        let op = with_float(op, "epsilon", 1e-6);
        let mut session = session_of(op, &["x", "w", "cos", "sin"], &["y"]);
        let cases = [
            (rotary_inputs(&[3, 8], 4, &[3, 2]), "not [B, S, N·H]"),
            (
                rotary_inputs(&[1, 3, 6], 4, &[3, 2]),
                "not 2 heads of the weight's 4",
            ),
            (rotary_inputs(&[1, 3, 8], 4, &[3, 3]), "not [P, 2]"),
            (
                rotary_inputs(&[1, 5, 8], 4, &[3, 2]),
                "5 positions exceed the rotary tables' 3",
            ),
        ];
        assert_refused(&mut session, NORM_ROTARY, cases.into());
        // Two heads of 4 at 3 positions, tables for 3, in the same session: the norm of ones
        // with weight 1, rotated by angle 0, is ones.
        let y = run(&mut session, rotary_inputs(&[1, 3, 8], 4, &[3, 2])).unwrap();
        assert_eq!(y[0].len(), 24);
        assert!(y[0].iter().all(|v| (v - 1.0).abs() < 1e-5), "{y:?}");
    }

    /// `AttentionSoftmax`'s inputs: scores of `score` and a bias of zeros.
    fn softmax_inputs(scores: &[i64], score: f32, bias: &[i64]) -> Inputs {
        vec![
            ("scores", tensor(scores, score)),
            ("bias", tensor(bias, 0.0)),
        ]
    }

    #[test]
    fn attention_softmax_refuses_a_bias_that_does_not_fit_the_scores() {
        let op = with_int(
            ours(ATTENTION_SOFTMAX, &["scores", "bias"], "p"),
            "num_heads",
            2,
        );
        let mut session = session_of(op, &["scores", "bias"], &["p"]);
        let cases = [
            // Scores of rank 2.
            (
                softmax_inputs(&[6, 3], 0.0, &[1, 1, 3, 3]),
                "not [B, S·N, L]",
            ),
            // 5 rows are not whole positions of 2 heads.
            (
                softmax_inputs(&[1, 5, 3], 0.0, &[1, 1, 1, 3]),
                "do not match the bias",
            ),
            // The bias covers 4 keys, the scores 3.
            (
                softmax_inputs(&[1, 6, 3], 0.0, &[1, 1, 3, 4]),
                "do not match the bias",
            ),
        ];
        assert_refused(&mut session, ATTENTION_SOFTMAX, cases.into());
        // The same session still runs a bias that fits: equal scores, equal weights.
        let p = run(&mut session, softmax_inputs(&[1, 6, 3], 0.5, &[1, 1, 3, 3])).unwrap();
        assert_eq!(p[0].len(), 18);
        assert!(p[0].iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6), "{p:?}");
    }

    /// `NormAddNorm`'s inputs, each of ones.
    fn norm_add_norm_inputs(x: &[i64], residual: &[i64], first: i64, second: i64) -> Inputs {
        vec![
            ("x", tensor(x, 1.0)),
            ("r", tensor(residual, 1.0)),
            ("w1", tensor(&[first], 1.0)),
            ("w2", tensor(&[second], 1.0)),
        ]
    }

    #[test]
    fn norm_add_norm_refuses_inputs_of_different_shapes_or_widths() {
        let mut op = ours(NORM_ADD_NORM, &["x", "r", "w1", "w2"], "y");
        op.output.push("sum".to_string());
        let op = with_float(with_float(op, "epsilon", 1e-6), "second_epsilon", 1e-6);
        let mut session = session_of(op, &["x", "r", "w1", "w2"], &["y", "sum"]);
        let cases = [
            // The residual's shape differs from the input's.
            norm_add_norm_inputs(&[1, 2, 4], &[1, 3, 4], 4, 4),
            // Rows of 4 against weights of 3.
            norm_add_norm_inputs(&[1, 2, 4], &[1, 2, 4], 3, 3),
            // The two weights differ in length.
            norm_add_norm_inputs(&[1, 2, 4], &[1, 2, 4], 4, 2),
        ];
        let cases = cases.map(|inputs| (inputs, "must be equal"));
        assert_refused(&mut session, NORM_ADD_NORM, cases.into());
        // Inputs that fit: the norm of ones is ones, the sum with the residual twos, and its
        // norm ones again.
        let [y, sum] = <[Vec<f32>; 2]>::try_from(
            run(
                &mut session,
                norm_add_norm_inputs(&[1, 2, 4], &[1, 2, 4], 4, 4),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(sum.iter().all(|v| (v - 2.0).abs() < 1e-5), "{sum:?}");
        assert!(y.iter().all(|v| (v - 1.0).abs() < 1e-5), "{y:?}");
    }
}
