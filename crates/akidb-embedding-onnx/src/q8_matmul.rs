//! `ai.akidb::MatMulQ8`: the `q8` weight products as an ONNX Runtime custom operator, on
//! the AVX-512 VNNI kernel of `akidb_q8_kernel`.
//!
//! The operator computes what `com.microsoft::MatMulNBits` computes for 8 bits, no zero
//! points and accuracy level 4 (the `q8` recipe's products), with the same inputs (`X`, `B`,
//! `scales`) and attributes (`K`, `N`, `block_size`). Its kernel repacks `B` when the session
//! creates it and shares the products out over ONNX Runtime's intra-op threads. On a short
//! text (6 to 12 rows) ONNX Runtime's own kernel for 8 bits takes about twice as long on 2
//! threads (`benches/q8_products.py`, `docs/q8.md`). The fusion's
//! [`FuseStep::Q8Matmul`](crate::quantize::fuse::FuseStep::Q8Matmul) writes the operator,
//! by default only where [`supported`] holds; every session registers the operator's domain.

use std::sync::{Mutex, PoisonError};

use akidb_q8_kernel::{PackedWeights, QuantisedRows, multiply};
pub use akidb_q8_kernel::{fits, supported};
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput,
    ShapeInferenceContext,
};
use ort::value::{DynTensorValueType, Shape, SymbolicDimensions, TensorElementType, ValueType};

/// The domain of this library's operators.
pub const DOMAIN: &str = "ai.akidb";
/// The operator's name.
pub const OP_TYPE: &str = "MatMulQ8";

/// The operator domain sessions register so that graphs holding this library's operators
/// load: `MatMulQ8`, and the attention steps of [`crate::row_ops`].
pub(crate) fn operator_domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?
        .add(MatMulQ8)?
        .add(crate::row_ops::NormRotary)?
        .add(crate::row_ops::AttentionSoftmax)?
        .add(crate::row_ops::NormAddNorm)
}

/// Creates a session registering [`operator_domain`] with `create`.
///
/// ONNX Runtime adds a custom domain to a process-wide registry when the first session that
/// holds it is created, checking and then adding without a lock: two such sessions created
/// at once can both add it, and one fails ("the domain is already exist"). So the first
/// creation runs alone; once one has succeeded the domain is registered and the rest run
/// freely, side by side.
pub(crate) fn create_session<T, E>(create: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    static REGISTERED: Mutex<bool> = Mutex::new(false);
    let mut registered = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    if *registered {
        drop(registered);
        return create();
    }
    let session = create()?;
    *registered = true;
    Ok(session)
}

/// The custom operator ONNX Runtime calls.
struct MatMulQ8;

impl Operator for MatMulQ8 {
    type Kernel<'attr> = Q8Kernel;

    fn name(&self) -> &str {
        OP_TYPE
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
            OperatorInput::required(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<Q8Kernel> {
        let attribute = |name: &str| -> ort::Result<usize> {
            info.get::<i64>(name)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| ort::Error::new(format!("MatMulQ8 needs a positive `{name}`")))
        };
        let (k, n, block) = (attribute("K")?, attribute("N")?, attribute("block_size")?);
        let b = info
            .constant_input::<DynTensorValueType>(1)
            .map_err(|e| ort::Error::new(format!("MatMulQ8's weights must be constant: {e}")))?;
        let scales = info
            .constant_input::<DynTensorValueType>(2)
            .map_err(|e| ort::Error::new(format!("MatMulQ8's scales must be constant: {e}")))?;
        let (_, b) = b.try_extract_tensor::<u8>()?;
        let (_, scales) = scales.try_extract_tensor::<f32>()?;
        let weights = PackedWeights::new(b, scales, k, n, block).map_err(ort::Error::new)?;
        Ok(Q8Kernel {
            weights,
            simd: supported(),
        })
    }

    fn infer_shape(&self, ctx: &mut ShapeInferenceContext) -> ort::Result<()> {
        let n: i64 = ctx.attr("N")?;
        let Some(ValueType::Tensor {
            shape,
            dimension_symbols,
            ..
        }) = ctx.inputs().into_iter().next()
        else {
            return Err(ort::Error::new("MatMulQ8's input is not a tensor"));
        };
        // No dimensions: the input's shape is not known (an operator before it infers none);
        // the output's is not either. (A scalar is no input of a product.)
        if shape.is_empty() {
            return Ok(());
        }
        let mut dims: Vec<i64> = shape.to_vec();
        let mut symbols: Vec<String> = dimension_symbols.to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        if let Some(last) = symbols.last_mut() {
            last.clear();
        }
        ctx.set_output(
            0,
            &ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape: Shape::new(dims),
                dimension_symbols: SymbolicDimensions::new(symbols),
            },
        )
    }
}

thread_local! {
    /// The quantised rows of the `MatMulQ8` running on this thread: one scratch per thread
    /// that runs sessions, not one per node (169 nodes each holding their largest input's
    /// rows held 136 MB more after a run of long texts and batches).
    static SCRATCH: std::cell::RefCell<QuantisedRows> = std::cell::RefCell::default();
}

/// One `MatMulQ8` node's kernel: its repacked weights.
struct Q8Kernel {
    weights: PackedWeights,
    simd: bool,
}

impl Kernel for Q8Kernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = ctx
            .input(0)?
            .ok_or_else(|| ort::Error::new("MatMulQ8 has no input"))?;
        let (shape, x) = input.try_extract_tensor::<f32>()?;
        let k = self.weights.k();
        if shape.last().copied() != Some(k as i64) {
            return Err(ort::Error::new(format!(
                "MatMulQ8: the input's last dimension is {:?}, not K = {k}",
                shape.last()
            )));
        }
        let rows = x.len() / k;
        let mut dims = shape.to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.weights.n() as i64;
        }
        let mut output = ctx
            .output(0, dims)?
            .ok_or_else(|| ort::Error::new("MatMulQ8 has no output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        if rows == 0 {
            return Ok(());
        }
        let failed = std::sync::Mutex::new(None);
        let parallel = |count: usize, f: &(dyn Fn(usize) + Sync)| {
            // One batch per item (a pair of tiles, a chunk of rows): the pool's threads claim
            // them one at a time, so the calling thread, which starts first, takes more while
            // the others wake, and none waits at the end for a share fixed in advance (on
            // EmbeddingGemma q8 this cut the short text's P50 by about a tenth against one
            // contiguous share per thread; see docs/q8.md).
            if let Err(e) = ctx.par_for(count, count, f) {
                // Fall back to this thread: the result is the same.
                if let Ok(mut slot) = failed.lock() {
                    slot.get_or_insert(e);
                }
                (0..count).for_each(f);
            }
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => multiply(
                &self.weights,
                x,
                rows,
                &mut scratch,
                out,
                self.simd,
                &parallel,
            ),
            // Not reached (a kernel does not run inside another on one thread); a scratch of
            // its own keeps it correct if it ever is.
            Err(_) => multiply(
                &self.weights,
                x,
                rows,
                &mut QuantisedRows::default(),
                out,
                self.simd,
                &parallel,
            ),
        });
        if let Ok(Some(error)) = failed.into_inner() {
            tracing::debug!(%error, "MatMulQ8 ran on one thread: the pool refused the work");
        }
        Ok(())
    }
}
