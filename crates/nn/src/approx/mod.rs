//! `Approx`: plaintext f64 that reproduces what the `Mpc` backend computes, without the
//! protocols. Used to evaluate the sample quality of the secure approximations over many images
//! (`secdiff eval --mode approx`) and to predict an MPC run.
//!
//! How it matches `Mpc` (same [`Methods`]):
//! - Values live on the fixed-point grid (multiples of 2^-f): inputs and weights are rounded to
//!   it, and every product (mul, matmul, linear, conv, non-integer scale) is computed exactly in
//!   f64 and rounded back to it, as the secure truncation does (which rounds down or up at
//!   random: a difference of at most 1 ulp per product).
//! - SiLU, Mish, GeLU, softmax, GroupNorm, LayerNorm and clamp run the very kernels the secure
//!   engine runs, on the nonlinear library's plaintext twin (same polynomials, comparisons,
//!   truncations and evaluation order).
//! - Attention scales q before the score product, as `Mpc` does.
//!
//! Not reproduced: the fast truncation's rare catastrophic failures (`--truncation fast`), and
//! values beyond the ring's range (|x| >= 2^(63 - f)), which MPC would wrap.
//!
//! With a [`Ledger`] (`Approx::with_ledger`) it is also the dry run of an MPC run: every op adds
//! the stated communication of the protocols `Mpc` would run for it (bytes summed over the three
//! parties, from the protocol core's and the nonlinear library's cost statements), without any
//! cryptography. Tests check this statement against the bytes metered in a real MPC run.

mod tensor;

pub use tensor::ApproxTensor;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mpc::nonlinear::cost::{stated_cost, Stated};
use mpc::{product_cost, trunc_cost, TruncMethod};

use mpc::nonlinear::activations::{gelu, mish, silu};
use mpc::nonlinear::norm::{group_norm, layer_norm, NormAffine};
use mpc::nonlinear::softmax::softmax;
use mpc::nonlinear::{Fma, FxpOps, Twin};
use ring::{ConvGeometry, ConvPadding};

use crate::backend::{Backend, ConvSpec, Padding};
use crate::mpc::{causal_mask, kernels, Methods, Silu, Softmax, CLAMP_RESOLUTION};
use crate::weights::FlaxParams;
use crate::{Error, ParamSource, Result};

use tensor::gemm_f64;

/// Stated MPC communication per op (see the module docs).
#[derive(Debug)]
pub struct Ledger {
    trunc: TruncMethod,
    public_weights: bool,
    by_op: Mutex<BTreeMap<&'static str, Stated>>,
    fast_failures: Mutex<f64>,
}

impl Ledger {
    /// Bytes (summed over the three parties) and protocol invocations per op so far.
    pub fn by_op(&self) -> BTreeMap<&'static str, Stated> {
        self.by_op.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn total(&self) -> Stated {
        let mut t = Stated::default();
        for s in self.by_op().into_values() {
            t += s;
        }
        t
    }

    /// The expected number of catastrophic failures (an error of 2^(64-2f) real units) that the
    /// fast truncation would make on the products of the model's linear layers, scalings and
    /// elementwise products so far: the sum of (|z| + 1) / 2^64 over their un-truncated values z.
    /// The products inside the nonlinear kernels are not counted, so this is a lower bound.
    pub fn expected_fast_failures(&self) -> f64 {
        *self.fast_failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, op: &'static str, s: Stated) {
        *self
            .by_op
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += s;
    }
}

/// The approximation backend: its settings, and optionally a cost ledger.
#[derive(Clone, Debug)]
pub struct Approx {
    methods: Methods,
    frac_bits: u32,
    ledger: Option<Arc<Ledger>>,
}

impl Default for Approx {
    fn default() -> Self {
        Approx::new(Methods::default(), ring::DEFAULT_FRAC_BITS)
    }
}

fn nl_err(e: mpc::nonlinear::NonlinearError) -> Error {
    Error::Backend(Box::new(e))
}

fn ring_err(e: ring::RingError) -> Error {
    Error::Backend(Box::new(e))
}

impl Approx {
    pub fn new(methods: Methods, frac_bits: u32) -> Self {
        Approx {
            methods,
            frac_bits,
            ledger: None,
        }
    }

    /// An `Approx` that also states what each op would cost under MPC with truncation `trunc`
    /// and secret (or public) weights.
    pub fn with_ledger(
        methods: Methods,
        frac_bits: u32,
        trunc: TruncMethod,
        public_weights: bool,
    ) -> Self {
        Approx {
            methods,
            frac_bits,
            ledger: Some(Arc::new(Ledger {
                trunc,
                public_weights,
                by_op: Mutex::new(BTreeMap::new()),
                fast_failures: Mutex::new(0.0),
            })),
        }
    }

    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_deref()
    }

    /// Records a fused product-and-truncation of `n` output elements (secret by secret).
    fn charge_product(&self, op: &'static str, n: usize) {
        if let Some(l) = &self.ledger {
            let c = product_cost(n, Some((l.trunc, self.frac_bits)));
            l.add(
                op,
                Stated {
                    bytes: c.total_bytes(),
                    invocations: 1,
                },
            );
        }
    }

    /// Records a product by a parameter: fused with the truncation for secret weights, a
    /// truncation alone for public ones.
    fn charge_weights(&self, op: &'static str, n: usize) {
        match &self.ledger {
            Some(l) if l.public_weights => self.charge_trunc(op, n),
            Some(_) => self.charge_product(op, n),
            None => {}
        }
    }

    /// Adds the fast truncation's failure probability for products with real values `v`.
    fn risk(&self, v: &[f64]) {
        if let Some(l) = &self.ledger {
            let scale = (2.0 * self.frac_bits as f64 - 64.0).exp2();
            let p: f64 = v.iter().map(|x| x.abs() * scale + 2f64.powi(-64)).sum();
            *l.fast_failures.lock().unwrap_or_else(|e| e.into_inner()) += p;
        }
    }

    fn public_weights(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| l.public_weights)
    }

    /// Records a truncation of `n` elements (products by public values).
    fn charge_trunc(&self, op: &'static str, n: usize) {
        if let Some(l) = &self.ledger {
            let c = trunc_cost(n, l.trunc, self.frac_bits);
            l.add(
                op,
                Stated {
                    bytes: c.total_bytes(),
                    invocations: 1,
                },
            );
        }
    }

    pub fn methods(&self) -> &Methods {
        &self.methods
    }

    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    fn scale_factor(&self) -> f64 {
        (self.frac_bits as f64).exp2()
    }

    /// Rounds to the grid (what a truncation does, up to its +-1 ulp).
    fn grid(&self, v: f64) -> f64 {
        let s = self.scale_factor();
        (v * s).round() / s
    }

    fn on_grid(&self, shape: &[usize], values: impl Iterator<Item = f64>) -> Result<ApproxTensor> {
        ApproxTensor::new(shape, values.map(|v| self.grid(v)).collect())
    }

    /// Runs a twin kernel of several outputs on `x`'s values and charges its stated cost.
    fn twin_parts(
        &self,
        op: &'static str,
        x: &ApproxTensor,
        kernel: impl FnOnce(&Twin, &Vec<i64>) -> mpc::nonlinear::ops::Result<Vec<Vec<i64>>>,
    ) -> Result<Vec<Vec<f64>>> {
        let tw = Twin::new(self.frac_bits);
        let ys = kernel(&tw, &tw.encode(x.data())).map_err(nl_err)?;
        if let Some(l) = &self.ledger {
            let stated = stated_cost(&tw.take_log(), self.frac_bits, l.trunc).map_err(nl_err)?;
            l.add(op, stated);
        }
        Ok(ys.iter().map(|y| tw.decode(y)).collect())
    }

    /// Runs a twin kernel on the flattened tensor.
    fn twin(
        &self,
        op: &'static str,
        x: &ApproxTensor,
        kernel: impl FnOnce(&Twin, &Vec<i64>) -> mpc::nonlinear::ops::Result<Vec<i64>>,
    ) -> Result<ApproxTensor> {
        let tw = Twin::new(self.frac_bits);
        let y = kernel(&tw, &tw.encode(x.data())).map_err(nl_err)?;
        if let Some(l) = &self.ledger {
            let stated = stated_cost(&tw.take_log(), self.frac_bits, l.trunc).map_err(nl_err)?;
            l.add(op, stated);
        }
        ApproxTensor::new(x.shape(), tw.decode(&y))
    }

    fn add_bias(
        &self,
        y: ApproxTensor,
        bias: Option<&ApproxTensor>,
        axis: usize,
    ) -> Result<ApproxTensor> {
        let Some(b) = bias else { return Ok(y) };
        let c = y.shape()[axis];
        if b.numel() != c {
            return Err(Error::shape(
                "bias",
                format!("bias {:?} for {c} channels", b.shape()),
            ));
        }
        let mut shape = vec![1; y.shape().len()];
        shape[axis] = c;
        y.zip("bias", &b.reshape(&shape)?, |a, b| a + b)
    }

    fn conv(
        &self,
        transposed: bool,
        x: &ApproxTensor,
        w: &ApproxTensor,
        b: Option<&ApproxTensor>,
        spec: ConvSpec,
    ) -> Result<ApproxTensor> {
        let padding = match spec.padding {
            Padding::Same => ConvPadding::Same,
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => ConvPadding::Explicit([top, bottom, left, right]),
        };
        let geo = if transposed {
            ConvGeometry::conv_transpose2d(x.shape(), w.shape(), spec.stride, padding)
        } else {
            ConvGeometry::conv2d(x.shape(), w.shape(), spec.stride, padding)
        }
        .map_err(ring_err)?;
        // im2col, the kernel matrix and the output layout are pure data movement: run the ring
        // crate's versions on the f64 bit patterns (zero padding is +0.0).
        let cols = ring::conv::im2col(&x.to_bits()?, &geo);
        let kernel = ring::conv::kernel_matrix(&w.to_bits()?, &geo).map_err(ring_err)?;
        let (o, p, n) = (geo.out_channels, geo.patch_len(), geo.columns());
        let y = gemm_f64(
            &ApproxTensor::bits_to_f64(kernel.data()),
            &ApproxTensor::bits_to_f64(cols.data()),
            o,
            p,
            n,
        );
        self.risk(&y);
        let y_bits: Vec<u64> = y.iter().map(|v| self.grid(*v).to_bits()).collect();
        let out = ApproxTensor::from_bits(&ring::conv::col2out(&y_bits, &geo));
        self.charge_weights(
            if transposed {
                "conv_transpose2d"
            } else {
                "conv2d"
            },
            out.numel(),
        );
        self.add_bias(out, b, 1)
    }

    fn batched_matmul(&self, a: &ApproxTensor, b: &ApproxTensor) -> Result<ApproxTensor> {
        let (batch, m, k, n, b_batched) =
            ring::matmul_dims(a.shape(), b.shape()).map_err(ring_err)?;
        let mut out = Vec::with_capacity(batch * m * n);
        for i in 0..batch {
            let bi = if b_batched { i } else { 0 };
            out.extend(gemm_f64(
                &a.data()[i * m * k..(i + 1) * m * k],
                &b.data()[bi * k * n..(bi + 1) * k * n],
                m,
                k,
                n,
            ));
        }
        let mut shape = a.shape()[..a.shape().len() - 1].to_vec();
        shape.push(n);
        self.risk(&out);
        self.on_grid(&shape, out.into_iter())
    }

    fn scale_values(&self, op: &'static str, x: &ApproxTensor, c: f32) -> Result<ApproxTensor> {
        let c = c as f64;
        if c.fract() == 0.0 {
            return ApproxTensor::new(x.shape(), x.data().iter().map(|v| v * c).collect());
        }
        self.charge_trunc(op, x.numel());
        let cq = self.grid(c);
        self.risk(&x.data().iter().map(|v| v * cq).collect::<Vec<_>>());
        self.on_grid(x.shape(), x.data().iter().map(|v| v * cq))
    }
}

impl Backend for Approx {
    type Tensor = ApproxTensor;
    type Param = ApproxTensor;

    fn name(&self) -> &'static str {
        "approx"
    }

    fn shape(&self, x: &ApproxTensor) -> Vec<usize> {
        x.shape().to_vec()
    }

    fn param_shape(&self, p: &ApproxTensor) -> Vec<usize> {
        p.shape().to_vec()
    }

    fn public(&self, shape: &[usize], data: &[f32]) -> Result<ApproxTensor> {
        self.on_grid(shape, data.iter().map(|&v| v as f64))
    }

    fn param_tensor(&self, p: &ApproxTensor) -> Result<ApproxTensor> {
        Ok(p.clone())
    }

    fn reshape(&self, x: &ApproxTensor, shape: &[usize]) -> Result<ApproxTensor> {
        x.reshape(shape)
    }

    fn permute(&self, x: &ApproxTensor, perm: &[usize]) -> Result<ApproxTensor> {
        x.via_bits(|t| t.permute(perm))
    }

    fn concat(&self, xs: &[&ApproxTensor], axis: usize) -> Result<ApproxTensor> {
        if xs.is_empty() {
            return Err(Error::shape("concat", "no tensors"));
        }
        let bits = xs.iter().map(|x| x.to_bits()).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&ring::RingTensor> = bits.iter().collect();
        Ok(ApproxTensor::from_bits(
            &ring::RingTensor::concat(&refs, axis).map_err(ring_err)?,
        ))
    }

    fn narrow(
        &self,
        x: &ApproxTensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<ApproxTensor> {
        x.via_bits(|t| t.narrow(axis, start, len))
    }

    fn upsample_nearest2d(&self, x: &ApproxTensor, factor: usize) -> Result<ApproxTensor> {
        x.via_bits(|t| t.upsample_nearest2d(factor))
    }

    fn add(&self, a: &ApproxTensor, b: &ApproxTensor) -> Result<ApproxTensor> {
        a.zip("add", b, |x, y| x + y)
    }

    fn sub(&self, a: &ApproxTensor, b: &ApproxTensor) -> Result<ApproxTensor> {
        a.zip("sub", b, |x, y| x - y)
    }

    fn scale(&self, x: &ApproxTensor, c: f32) -> Result<ApproxTensor> {
        self.scale_values("scale", x, c)
    }

    fn add_scalar(&self, x: &ApproxTensor, c: f32) -> Result<ApproxTensor> {
        let c = self.grid(c as f64);
        ApproxTensor::new(x.shape(), x.data().iter().map(|v| v + c).collect())
    }

    fn mul(&self, a: &ApproxTensor, b: &ApproxTensor) -> Result<ApproxTensor> {
        let p = a.zip("mul", b, |x, y| x * y)?;
        self.charge_product("mul", p.numel());
        self.risk(p.data());
        self.on_grid(p.shape(), p.data().iter().copied())
    }

    fn matmul(&self, a: &ApproxTensor, b: &ApproxTensor) -> Result<ApproxTensor> {
        let y = self.batched_matmul(a, b)?;
        self.charge_product("matmul", y.numel());
        Ok(y)
    }

    fn linear(
        &self,
        x: &ApproxTensor,
        w: &ApproxTensor,
        b: Option<&ApproxTensor>,
    ) -> Result<ApproxTensor> {
        let (din, dout) = match w.shape() {
            [i, o] => (*i, *o),
            s => return Err(Error::shape("linear", format!("weight {s:?} is not 2-D"))),
        };
        let shape = x.shape().to_vec();
        if shape.last() != Some(&din) {
            return Err(Error::shape(
                "linear",
                format!("input {shape:?} for a ({din}, {dout}) weight"),
            ));
        }
        let rows = x.numel() / din.max(1);
        let y = self.batched_matmul(&x.reshape(&[rows, din])?, w)?;
        self.charge_weights("linear", y.numel());
        let mut out_shape = shape[..shape.len() - 1].to_vec();
        out_shape.push(dout);
        let axis = out_shape.len() - 1;
        self.add_bias(y.reshape(&out_shape)?, b, axis)
    }

    fn conv2d(
        &self,
        x: &ApproxTensor,
        w: &ApproxTensor,
        b: Option<&ApproxTensor>,
        spec: ConvSpec,
    ) -> Result<ApproxTensor> {
        self.conv(false, x, w, b, spec)
    }

    fn conv_transpose2d(
        &self,
        x: &ApproxTensor,
        w: &ApproxTensor,
        b: Option<&ApproxTensor>,
        spec: ConvSpec,
    ) -> Result<ApproxTensor> {
        self.conv(true, x, w, b, spec)
    }

    fn silu(&self, x: &ApproxTensor) -> Result<ApproxTensor> {
        let (m, bound) = (self.methods.silu, self.methods.activation_bound);
        self.twin("silu", x, |e, x| match m {
            Silu::Fine => kernels::silu_fine(e, x, bound),
            Silu::Library(m) => silu(e, x, m, bound),
        })
    }

    fn mish(&self, x: &ApproxTensor) -> Result<ApproxTensor> {
        let (m, bound) = (self.methods.mish, self.methods.activation_bound);
        self.twin("mish", x, |e, x| mish(e, x, m, bound))
    }

    fn gelu(&self, x: &ApproxTensor) -> Result<ApproxTensor> {
        let (m, bound) = (self.methods.gelu, self.methods.activation_bound);
        self.twin("gelu", x, |e, x| gelu(e, x, m, bound))
    }

    fn softmax(&self, x: &ApproxTensor) -> Result<ApproxTensor> {
        let (m, bound) = (self.methods.softmax, self.methods.score_bound);
        let row = *x
            .shape()
            .last()
            .ok_or_else(|| Error::shape("softmax", "scalar input"))?;
        match m {
            Softmax::Bounded => self.twin("softmax", x, |e, x| {
                let (num, inv) = kernels::softmax_bounded(e, x, row)?;
                let inv = e.repeat_each(&inv, row);
                Ok(e.fma(&[Fma::mul(&num, &inv)])?.remove(0))
            }),
            Softmax::Library(m) => {
                self.twin("softmax", x, |e, x| softmax(e, x, row, None, m, bound))
            }
        }
    }

    fn clamp(&self, x: &ApproxTensor, lo: f32, hi: f32) -> Result<ApproxTensor> {
        let bound = self.methods.clamp_bound;
        self.twin("clamp", x, |e, x| {
            kernels::clamp(e, x, lo as f64, hi as f64, bound, CLAMP_RESOLUTION)
        })
    }

    fn group_norm(
        &self,
        x: &ApproxTensor,
        groups: usize,
        gamma: &ApproxTensor,
        beta: &ApproxTensor,
        eps: f32,
    ) -> Result<ApproxTensor> {
        let dims: [usize; 4] = x.shape().try_into().map_err(|_| {
            Error::shape("group_norm", format!("input {:?} is not NCHW", x.shape()))
        })?;
        let method = self.methods.norm;
        // The weights are secret-shared in a normal MPC run (the `Shared` form); the ledger may
        // say they are public.
        let public = self.public_weights();
        self.twin("group_norm", x, |e, x| {
            let (g, b) = (e.encode(gamma.data()), e.encode(beta.data()));
            let affine = if public {
                NormAffine::Public {
                    gamma: gamma.data(),
                    beta: beta.data(),
                }
            } else {
                NormAffine::Shared {
                    gamma: &g,
                    beta: &b,
                }
            };
            group_norm(e, x, dims, groups, affine, eps as f64, method)
        })
    }

    fn layer_norm(
        &self,
        x: &ApproxTensor,
        gamma: &ApproxTensor,
        beta: &ApproxTensor,
        eps: f32,
    ) -> Result<ApproxTensor> {
        let row = *x
            .shape()
            .last()
            .ok_or_else(|| Error::shape("layer_norm", "scalar input"))?;
        let method = self.methods.norm;
        // The weights are secret-shared in a normal MPC run (the `Shared` form); the ledger may
        // say they are public.
        let public = self.public_weights();
        self.twin("layer_norm", x, |e, x| {
            let (g, b) = (e.encode(gamma.data()), e.encode(beta.data()));
            let affine = if public {
                NormAffine::Public {
                    gamma: gamma.data(),
                    beta: beta.data(),
                }
            } else {
                NormAffine::Shared {
                    gamma: &g,
                    beta: &b,
                }
            };
            layer_norm(e, x, row, affine, eps as f64, method)
        })
    }

    fn attention(
        &self,
        q: &ApproxTensor,
        k: &ApproxTensor,
        v: &ApproxTensor,
        scale: f32,
        causal: bool,
    ) -> Result<ApproxTensor> {
        let q = self.scale_values("attention", q, scale)?;
        let kt = self.permute(k, &[0, 2, 1])?;
        let scores = self.batched_matmul(&q, &kt)?;
        self.charge_product("attention", scores.numel());
        let scores = if causal {
            let (l, s) = (q.shape()[1], k.shape()[1]);
            let mask = self.public(&[1, l, s], &causal_mask(l, s))?;
            self.add(&scores, &mask)?
        } else {
            scores
        };
        let row = scores.shape()[2];
        if causal || self.methods.softmax != Softmax::Bounded {
            let (m, bound) = (self.methods.library_softmax(), self.methods.score_bound);
            let p = self.twin("attention", &scores, |e, x| {
                softmax(e, x, row, None, m, bound)
            })?;
            let out = self.batched_matmul(&p, v)?;
            self.charge_product("attention", out.numel());
            return Ok(out);
        }
        let mut parts = self.twin_parts("attention", &scores, |e, x| {
            let (num, inv) = kernels::softmax_bounded(e, x, row)?;
            Ok(vec![num, inv])
        })?;
        let inv = parts.pop().unwrap_or_default();
        let num = ApproxTensor::new(scores.shape(), parts.pop().unwrap_or_default())?;
        let y = self.batched_matmul(&num, v)?;
        self.charge_product("attention", y.numel());
        let d = v.shape()[2];
        let prod: Vec<f64> = y
            .data()
            .iter()
            .enumerate()
            .map(|(i, a)| a * inv[i / d])
            .collect();
        self.charge_product("attention", prod.len());
        self.risk(&prod);
        self.on_grid(y.shape(), prod.into_iter())
    }
}

/// Weights from a flax-layout file, rounded to the grid.
impl ParamSource<Approx> for FlaxParams {
    fn param(&mut self, b: &Approx, name: &str, shape: &[usize]) -> Result<ApproxTensor> {
        let values = self.values(name, shape)?;
        b.public(shape, &values)
    }
}
