//! The `Backend` trait: the tensor operations a diffusion model needs, and nothing more.
//!
//! Layers and architectures are written once against this trait. Each backend decides what a
//! tensor is (f32 values, f64 values that reproduce the secure approximations, replicated secret
//! shares on one party, an autograd framework's tensor) and how each op is computed. Keeping the op
//! set small keeps every backend honest: an MPC backend must implement each op as a protocol, so
//! an op that exists only for convenience would cost a protocol.
//!
//! Conventions shared by all backends:
//! - Row-major shapes. Images are NCHW; token sequences are (N, L, C).
//! - Parameters are handed out in the internal layout below by a [`ParamSource`]; loaders convert
//!   from flax (HWIO, (in, out)) or diffusers/PyTorch (OIHW, (out, in)) layouts on load.
//!   - conv2d kernel: (out, in, kh, kw).
//!   - conv_transpose2d kernel: (out, in, kh, kw), applied *unflipped* as a direct convolution over
//!     the input dilated by the stride (flax `ConvTranspose`, `transpose_kernel=False`).
//!   - dense kernel: (in, out); bias (out,). Embedding tables are dense kernels applied to one-hot
//!     rows (a secret label stays secret that way).
//!   - norm scale and bias: (channels,).
//! - Every op returns `Result`: shapes come from files and the network, and an MPC op can fail
//!   because a peer died. Backends never panic on a shape they were given.

use crate::Result;

/// Padding of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// XLA/flax `SAME`: output size ceil(in / stride); the extra pad (if odd) goes after.
    Same,
    /// Explicit (top, bottom, left, right) zero padding.
    Explicit {
        top: usize,
        bottom: usize,
        left: usize,
        right: usize,
    },
}

impl Padding {
    /// Symmetric explicit padding on all four sides (PyTorch's `padding=p`).
    pub fn symmetric(p: usize) -> Self {
        Padding::Explicit {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

/// Geometry of a convolution or transposed convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub stride: usize,
    pub padding: Padding,
}

impl ConvSpec {
    pub fn same(stride: usize) -> Self {
        ConvSpec {
            stride,
            padding: Padding::Same,
        }
    }
}

pub trait Backend {
    /// An activation.
    type Tensor: Clone;
    /// A learned parameter: the same as `Tensor` in plaintext; secret-shared or public weights
    /// under MPC; a trainable leaf under autograd.
    type Param: Clone;

    /// A short name for reports ("plain", "approx", "mpc", ...).
    fn name(&self) -> &'static str;

    fn shape(&self, x: &Self::Tensor) -> Vec<usize>;
    fn param_shape(&self, p: &Self::Param) -> Vec<usize>;

    // ---- data in ---------------------------------------------------------------------------
    /// A tensor whose value every party may know (timestep features, masks, constants).
    fn public(&self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor>;
    /// A parameter used as an activation (e.g. a position-embedding table added to tokens).
    fn param_tensor(&self, p: &Self::Param) -> Result<Self::Tensor>;

    // ---- layout (free in every backend) -----------------------------------------------------
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    fn permute(&self, x: &Self::Tensor, perm: &[usize]) -> Result<Self::Tensor>;
    fn concat(&self, xs: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor>;
    /// `len` entries of `axis` starting at `start`.
    fn narrow(
        &self,
        x: &Self::Tensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Tensor>;
    /// Nearest-neighbour upsampling of an NCHW tensor by an integer factor.
    fn upsample_nearest2d(&self, x: &Self::Tensor, factor: usize) -> Result<Self::Tensor>;

    // ---- linear in the secrets (local under MPC) --------------------------------------------
    /// Elementwise sum with numpy broadcasting.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    fn sub(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Multiply by a public scalar.
    fn scale(&self, x: &Self::Tensor, c: f32) -> Result<Self::Tensor>;
    fn add_scalar(&self, x: &Self::Tensor, c: f32) -> Result<Self::Tensor>;

    // ---- products ---------------------------------------------------------------------------
    /// Elementwise product of two activations, numpy broadcasting.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Batched matrix product: (..., m, k) x (..., k, n) -> (..., m, n), equal batch dims.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `x @ w + b` over the last axis; `w` is (in, out).
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Param,
        b: Option<&Self::Param>,
    ) -> Result<Self::Tensor>;
    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Param,
        b: Option<&Self::Param>,
        spec: ConvSpec,
    ) -> Result<Self::Tensor>;
    fn conv_transpose2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Param,
        b: Option<&Self::Param>,
        spec: ConvSpec,
    ) -> Result<Self::Tensor>;

    // ---- nonlinear (secure approximations under MPC and Approx) -------------------------------
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    fn mish(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// GeLU, tanh form (what SD and CLIP use).
    fn gelu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// Softmax over the last axis.
    fn softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// Clamp to [lo, hi] (DDIM's x0 clipping).
    fn clamp(&self, x: &Self::Tensor, lo: f32, hi: f32) -> Result<Self::Tensor>;
    /// GroupNorm over an NCHW tensor: statistics over (C/groups, H, W) per sample and group.
    fn group_norm(
        &self,
        x: &Self::Tensor,
        groups: usize,
        gamma: &Self::Param,
        beta: &Self::Param,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// LayerNorm over the last axis.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Param,
        beta: &Self::Param,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Scaled dot-product attention on (N, L, D) queries and (N, S, D) keys and values:
    /// softmax(q k^T * scale [+ causal mask]) v. Backends may override it with a fused protocol.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        scale: f32,
        causal: bool,
    ) -> Result<Self::Tensor> {
        let kt = self.permute(k, &[0, 2, 1])?;
        let scores = self.scale(&self.matmul(q, &kt)?, scale)?;
        let scores = if causal {
            let (l, s) = (self.shape(q)[1], self.shape(k)[1]);
            // A large negative public bias; every secure softmax maps it to (at most) 2^-f.
            let mask: Vec<f32> = (0..l * s)
                .map(|i| {
                    if i % s > i / s + (s - l.min(s)) {
                        -1e4
                    } else {
                        0.0
                    }
                })
                .collect();
            self.add(&scores, &self.public(&[1, l, s], &mask)?)?
        } else {
            scores
        };
        self.matmul(&self.softmax(&scores)?, v)
    }
}

/// Hands out a model's parameters by name, in the internal layout of the module docs. The plain
/// loader reads them from a weights file; the MPC backend receives them as shares from the model
/// owner; the trainer hands out trainable leaves.
pub trait ParamSource<B: Backend> {
    /// The parameter `name` (a dotted path such as `downs_3.AttentionBlock_0.to_qkv.kernel`),
    /// which must have `shape` (internal layout).
    fn param(&mut self, backend: &B, name: &str, shape: &[usize]) -> Result<B::Param>;
}
