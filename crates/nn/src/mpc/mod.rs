//! `Mpc`: the backend of one computing party. A tensor is this party's replicated shares of a
//! fixed-point tensor; every op is this party's side of a three-party protocol (the other two
//! parties run the same model code on their shares at the same time, so the op sequences match).
//!
//! - Layout ops, sums and public shifts are local.
//! - Products (mul, matmul, linear, conv2d, conv_transpose2d) are the core's fused
//!   multiply-and-truncate with secret weights, or a local product plus a truncation with
//!   public weights ([`MpcParam::Public`]). The truncation method is the party's session setting.
//! - SiLU, Mish, GeLU, softmax, GroupNorm and LayerNorm are the nonlinear library's kernels on
//!   the secure engine, with the methods of [`Methods`]; clamp is [`kernels::clamp`].
//! - `scale` by a public constant is local when the constant is an integer, else a truncation.
//!
//! Errors from the protocols (a dead or misbehaving peer, named in the message) come back as
//! `nn::Error::Backend`.

pub mod kernels;
mod methods;
mod params;
mod stats;

pub use methods::{
    MethodNames, Methods, Silu, Softmax, BOUNDED_SOFTMAX_MODELS, CLAMP_BOUND, CLAMP_RESOLUTION,
};
pub use params::SharedParams;
pub use stats::{OpCost, OpStats};

use mpc::nonlinear::activations::{gelu, mish, silu};
use mpc::nonlinear::norm::{group_norm, layer_norm, NormAffine};
use mpc::nonlinear::secure::Secure;
use mpc::nonlinear::softmax::softmax;
use mpc::nonlinear::{Fma, FxpOps};
use mpc::{AShare, Party};
use ring::{ConvPadding, FixedPoint, RingTensor};

use crate::backend::{Backend, ConvSpec, Padding};
use crate::{Error, Result};

/// A parameter at one party: its shares (weights secret-shared by the model owner) or its public
/// value (the `--public-weights` option), kept both encoded and as reals (the nonlinear
/// library's public affine maps take reals).
#[derive(Clone, Debug)]
pub enum MpcParam {
    Secret(AShare),
    Public { ring: RingTensor, values: Vec<f64> },
}

impl MpcParam {
    pub fn shape(&self) -> &[usize] {
        match self {
            MpcParam::Secret(s) => s.shape(),
            MpcParam::Public { ring, .. } => ring.shape(),
        }
    }
}

/// Wraps a protocol-layer error as a backend error (the message keeps the peer's name).
pub fn backend_err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Backend(Box::new(e))
}

/// One party's backend: a borrowed party context plus the run's methods and op accounting.
pub struct Mpc<'p> {
    party: &'p Party,
    methods: Methods,
    fp: FixedPoint,
    stats: OpStats,
}

impl<'p> Mpc<'p> {
    pub fn new(party: &'p Party, methods: Methods) -> Self {
        Mpc {
            party,
            methods,
            fp: party.config().fixed_point(),
            stats: OpStats::default(),
        }
    }

    pub fn party(&self) -> &'p Party {
        self.party
    }

    pub fn methods(&self) -> &Methods {
        &self.methods
    }

    /// Time, bytes and rounds per op so far.
    pub fn stats(&self) -> &OpStats {
        &self.stats
    }

    /// A public parameter from real values (encoded on this session's grid).
    pub fn public_param(&self, shape: &[usize], values: &[f32]) -> Result<MpcParam> {
        let ring = RingTensor::new(shape, self.fp.encode_f32(values).map_err(backend_err)?)
            .map_err(backend_err)?;
        Ok(MpcParam::Public {
            ring,
            values: values.iter().map(|&v| v as f64).collect(),
        })
    }

    fn track<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.stats.track(op, self.party.meter(), f)
    }

    fn secure(&self) -> Secure<'p> {
        Secure::new(self.party)
    }

    /// Runs a flat nonlinear kernel on `x` and gives the result `x`'s shape back.
    fn flat_kernel(
        &self,
        x: &AShare,
        kernel: impl FnOnce(&Secure<'p>, &AShare) -> mpc::nonlinear::ops::Result<AShare>,
    ) -> Result<AShare> {
        let flat = x.reshape(&[x.len()]).map_err(backend_err)?;
        let y = kernel(&self.secure(), &flat).map_err(backend_err)?;
        y.reshape(x.shape()).map_err(backend_err)
    }

    /// Runs a norm kernel with its affine parameters as the kernels take them: public values
    /// when both are public, otherwise both as flat shares.
    fn with_norm_affine(
        &self,
        gamma: &MpcParam,
        beta: &MpcParam,
        kernel: impl FnOnce(NormAffine<'_, AShare>) -> mpc::nonlinear::ops::Result<AShare>,
    ) -> mpc::nonlinear::ops::Result<AShare> {
        if let (MpcParam::Public { values: g, .. }, MpcParam::Public { values: b, .. }) =
            (gamma, beta)
        {
            return kernel(NormAffine::Public { gamma: g, beta: b });
        }
        let flat = |p: &MpcParam| {
            let s = self.as_share(p);
            s.reshape(&[s.len()])
        };
        let (g, b) = (flat(gamma)?, flat(beta)?);
        kernel(NormAffine::Shared {
            gamma: &g,
            beta: &b,
        })
    }

    fn as_share(&self, p: &MpcParam) -> AShare {
        match p {
            MpcParam::Secret(s) => s.clone(),
            MpcParam::Public { ring, .. } => AShare::public(self.party.id(), ring),
        }
    }

    /// x + bias broadcast along `axis` of x (bias has x.shape[axis] entries).
    fn add_bias(&self, x: AShare, bias: Option<&MpcParam>, axis: usize) -> Result<AShare> {
        let Some(bias) = bias else { return Ok(x) };
        let mut shape = vec![1; x.shape().len()];
        let channels = x.shape()[axis];
        if bias.shape().iter().product::<usize>() != channels {
            return Err(Error::shape(
                "bias",
                format!("bias {:?} for {channels} channels", bias.shape()),
            ));
        }
        shape[axis] = channels;
        match bias {
            MpcParam::Secret(b) => x.add(&b.reshape(&shape).map_err(backend_err)?),
            MpcParam::Public { ring, .. } => {
                x.add_public(&ring.reshape(&shape).map_err(backend_err)?)
            }
        }
        .map_err(backend_err)
    }

    fn conv(
        &self,
        transposed: bool,
        x: &AShare,
        w: &MpcParam,
        b: Option<&MpcParam>,
        spec: ConvSpec,
    ) -> Result<AShare> {
        let padding = match spec.padding {
            Padding::Same => ConvPadding::Same,
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => ConvPadding::Explicit([top, bottom, left, right]),
        };
        let p = self.party;
        let y = match (w, transposed) {
            (MpcParam::Secret(w), false) => p.conv2d(x, w, spec.stride, padding),
            (MpcParam::Secret(w), true) => p.conv_transpose2d(x, w, spec.stride, padding),
            (MpcParam::Public { ring, .. }, false) => {
                p.conv2d_public(x, ring, spec.stride, padding)
            }
            (MpcParam::Public { ring, .. }, true) => {
                p.conv_transpose2d_public(x, ring, spec.stride, padding)
            }
        }
        .map_err(backend_err)?;
        self.add_bias(y, b, 1)
    }

    /// Multiplication by a public real: local for integers, a truncation otherwise.
    fn scale_share(&self, x: &AShare, c: f32) -> Result<AShare> {
        let c = c as f64;
        if c.fract() == 0.0 && c.abs() < 2f64.powi(62) {
            return Ok(x.scale_int(c as i64));
        }
        self.party.scale(x, c).map_err(backend_err)
    }
}

impl Backend for Mpc<'_> {
    type Tensor = AShare;
    type Param = MpcParam;

    fn name(&self) -> &'static str {
        "mpc"
    }

    fn shape(&self, x: &AShare) -> Vec<usize> {
        x.shape().to_vec()
    }

    fn param_shape(&self, p: &MpcParam) -> Vec<usize> {
        p.shape().to_vec()
    }

    fn public(&self, shape: &[usize], data: &[f32]) -> Result<AShare> {
        let ring = RingTensor::new(shape, self.fp.encode_f32(data).map_err(backend_err)?)
            .map_err(backend_err)?;
        Ok(AShare::public(self.party.id(), &ring))
    }

    fn param_tensor(&self, p: &MpcParam) -> Result<AShare> {
        Ok(self.as_share(p))
    }

    fn reshape(&self, x: &AShare, shape: &[usize]) -> Result<AShare> {
        x.reshape(shape).map_err(backend_err)
    }

    fn permute(&self, x: &AShare, perm: &[usize]) -> Result<AShare> {
        x.permute(perm).map_err(backend_err)
    }

    fn concat(&self, xs: &[&AShare], axis: usize) -> Result<AShare> {
        if xs.is_empty() {
            return Err(Error::shape("concat", "no tensors"));
        }
        AShare::concat(xs, axis).map_err(backend_err)
    }

    fn narrow(&self, x: &AShare, axis: usize, start: usize, len: usize) -> Result<AShare> {
        x.narrow(axis, start, len).map_err(backend_err)
    }

    fn upsample_nearest2d(&self, x: &AShare, factor: usize) -> Result<AShare> {
        x.upsample_nearest2d(factor).map_err(backend_err)
    }

    fn add(&self, a: &AShare, b: &AShare) -> Result<AShare> {
        a.add(b).map_err(backend_err)
    }

    fn sub(&self, a: &AShare, b: &AShare) -> Result<AShare> {
        a.sub(b).map_err(backend_err)
    }

    fn scale(&self, x: &AShare, c: f32) -> Result<AShare> {
        self.track("scale", || self.scale_share(x, c))
    }

    fn add_scalar(&self, x: &AShare, c: f32) -> Result<AShare> {
        Ok(x.add_scalar(self.fp.encode(c as f64).map_err(backend_err)?))
    }

    fn mul(&self, a: &AShare, b: &AShare) -> Result<AShare> {
        self.track("mul", || self.party.mul(a, b).map_err(backend_err))
    }

    fn matmul(&self, a: &AShare, b: &AShare) -> Result<AShare> {
        self.track("matmul", || self.party.matmul(a, b).map_err(backend_err))
    }

    fn linear(&self, x: &AShare, w: &MpcParam, b: Option<&MpcParam>) -> Result<AShare> {
        self.track("linear", || {
            let shape = x.shape();
            let (din, dout) = match w.shape() {
                [i, o] => (*i, *o),
                s => return Err(Error::shape("linear", format!("weight {s:?} is not 2-D"))),
            };
            if shape.last() != Some(&din) {
                return Err(Error::shape(
                    "linear",
                    format!("input {shape:?} for a ({din}, {dout}) weight"),
                ));
            }
            let rows = x.len() / din.max(1);
            let x2 = x.reshape(&[rows, din]).map_err(backend_err)?;
            let y = match w {
                MpcParam::Secret(w) => self.party.matmul(&x2, w),
                MpcParam::Public { ring, .. } => self.party.matmul_public(&x2, ring),
            }
            .map_err(backend_err)?;
            let mut out_shape = shape[..shape.len() - 1].to_vec();
            out_shape.push(dout);
            let y = y.reshape(&out_shape).map_err(backend_err)?;
            let axis = out_shape.len() - 1;
            self.add_bias(y, b, axis)
        })
    }

    fn conv2d(
        &self,
        x: &AShare,
        w: &MpcParam,
        b: Option<&MpcParam>,
        spec: ConvSpec,
    ) -> Result<AShare> {
        self.track("conv2d", || self.conv(false, x, w, b, spec))
    }

    fn conv_transpose2d(
        &self,
        x: &AShare,
        w: &MpcParam,
        b: Option<&MpcParam>,
        spec: ConvSpec,
    ) -> Result<AShare> {
        self.track("conv_transpose2d", || self.conv(true, x, w, b, spec))
    }

    fn silu(&self, x: &AShare) -> Result<AShare> {
        let (m, bound) = (self.methods.silu, self.methods.activation_bound);
        self.track("silu", || {
            self.flat_kernel(x, |e, x| match m {
                Silu::Fine => kernels::silu_fine(e, x, bound),
                Silu::Library(m) => silu(e, x, m, bound),
            })
        })
    }

    fn mish(&self, x: &AShare) -> Result<AShare> {
        let (m, bound) = (self.methods.mish, self.methods.activation_bound);
        self.track("mish", || self.flat_kernel(x, |e, x| mish(e, x, m, bound)))
    }

    fn gelu(&self, x: &AShare) -> Result<AShare> {
        let (m, bound) = (self.methods.gelu, self.methods.activation_bound);
        self.track("gelu", || self.flat_kernel(x, |e, x| gelu(e, x, m, bound)))
    }

    fn softmax(&self, x: &AShare) -> Result<AShare> {
        let (m, bound) = (self.methods.softmax, self.methods.score_bound);
        let row = *x
            .shape()
            .last()
            .ok_or_else(|| Error::shape("softmax", "scalar input"))?;
        self.track("softmax", || {
            self.flat_kernel(x, |e, x| match m {
                Softmax::Bounded => {
                    let (num, inv) = kernels::softmax_bounded(e, x, row)?;
                    let inv = e.repeat_each(&inv, row);
                    Ok(e.fma(&[Fma::mul(&num, &inv)])?.remove(0))
                }
                Softmax::Library(m) => softmax(e, x, row, None, m, bound),
            })
        })
    }

    fn clamp(&self, x: &AShare, lo: f32, hi: f32) -> Result<AShare> {
        let bound = self.methods.clamp_bound;
        self.track("clamp", || {
            self.flat_kernel(x, |e, x| {
                kernels::clamp(e, x, lo as f64, hi as f64, bound, CLAMP_RESOLUTION)
            })
        })
    }

    fn group_norm(
        &self,
        x: &AShare,
        groups: usize,
        gamma: &MpcParam,
        beta: &MpcParam,
        eps: f32,
    ) -> Result<AShare> {
        let dims: [usize; 4] = x.shape().try_into().map_err(|_| {
            Error::shape("group_norm", format!("input {:?} is not NCHW", x.shape()))
        })?;
        let method = self.methods.norm;
        self.track("group_norm", || {
            self.flat_kernel(x, |e, x| {
                self.with_norm_affine(gamma, beta, |affine| {
                    group_norm(e, x, dims, groups, affine, eps as f64, method)
                })
            })
        })
    }

    fn layer_norm(
        &self,
        x: &AShare,
        gamma: &MpcParam,
        beta: &MpcParam,
        eps: f32,
    ) -> Result<AShare> {
        let row = *x
            .shape()
            .last()
            .ok_or_else(|| Error::shape("layer_norm", "scalar input"))?;
        let method = self.methods.norm;
        self.track("layer_norm", || {
            self.flat_kernel(x, |e, x| {
                self.with_norm_affine(gamma, beta, |affine| {
                    layer_norm(e, x, row, affine, eps as f64, method)
                })
            })
        })
    }

    /// softmax((q * scale) k^T) v: the scale is applied to q (L x D values) rather than to the
    /// scores (L x S), which saves a truncation of the larger tensor.
    fn attention(
        &self,
        q: &AShare,
        k: &AShare,
        v: &AShare,
        scale: f32,
        causal: bool,
    ) -> Result<AShare> {
        self.track("attention", || {
            let q = self.scale_share(q, scale)?;
            let kt = k.permute(&[0, 2, 1]).map_err(backend_err)?;
            let scores = self.party.matmul(&q, &kt).map_err(backend_err)?;
            let scores = if causal {
                let (l, s) = (q.shape()[1], k.shape()[1]);
                let mask = self
                    .fp
                    .encode_f32(&causal_mask(l, s))
                    .map_err(backend_err)?;
                let mask = RingTensor::new(&[1, l, s], mask).map_err(backend_err)?;
                scores.add_public(&mask).map_err(backend_err)?
            } else {
                scores
            };
            if causal || self.methods.softmax != Softmax::Bounded {
                // A causal mask puts -1e4 in the scores: outside `bounded`'s promise.
                let m = self.methods.library_softmax();
                let bound = self.methods.score_bound;
                let p = self.track("softmax", || {
                    self.flat_kernel(&scores, |e, x| softmax(e, x, l_s(&scores), None, m, bound))
                })?;
                return self.party.matmul(&p, v).map_err(backend_err);
            }
            // `bounded`: (e v) / sum(e), the division on the (L x D) product.
            let [_, _, s] = scores.shape() else {
                return Err(Error::shape("attention", "scores are not 3-D"));
            };
            let (s, d) = (*s, v.shape()[2]);
            let e = self.secure();
            let flat = scores.reshape(&[scores.len()]).map_err(backend_err)?;
            let (num, inv) = kernels::softmax_bounded(&e, &flat, s).map_err(backend_err)?;
            let num = num.reshape(scores.shape()).map_err(backend_err)?;
            let y = self.party.matmul(&num, v).map_err(backend_err)?;
            let inv = e
                .repeat_each(&inv, d)
                .reshape(y.shape())
                .map_err(backend_err)?;
            self.party.mul(&y, &inv).map_err(backend_err)
        })
    }
}

/// The row length of scores (their last axis).
fn l_s(scores: &AShare) -> usize {
    scores.shape().last().copied().unwrap_or(1)
}

/// The additive causal mask of `Backend::attention`'s default.
pub(crate) fn causal_mask(l: usize, s: usize) -> Vec<f32> {
    (0..l * s)
        .map(|i| {
            if i % s > i / s + (s - l.min(s)) {
                -1e4
            } else {
                0.0
            }
        })
        .collect()
}
