//! `Candle`: the [`nn::Backend`] over candle's autograd tensors. Parameters are `Var`s (trainable
//! leaves), so the model code in `nn` is the model that is trained: there is no second copy of any
//! architecture here.

use candle_core::{DType, Device, Tensor, Var, D};
use nn::{Backend, ConvSpec, Padding, Result};

/// Maps a candle error into the model error type.
pub fn ce(e: candle_core::Error) -> nn::Error {
    nn::Error::Backend(Box::new(e))
}

#[derive(Clone, Debug)]
pub struct Candle {
    pub device: Device,
}

impl Default for Candle {
    fn default() -> Self {
        Candle {
            device: Device::Cpu,
        }
    }
}

impl Candle {
    /// A tensor from values (used for data batches and noise).
    pub fn tensor(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Tensor::from_slice(data, shape, &self.device).map_err(ce)
    }
}

/// Explicit padding of a convolution, resolving `Same` for a given input size.
fn pads(p: Padding, (h, w): (usize, usize), k: (usize, usize), stride: usize) -> [usize; 4] {
    match p {
        Padding::Explicit {
            top,
            bottom,
            left,
            right,
        } => [top, bottom, left, right],
        Padding::Same => {
            let total = |n: usize, k: usize| {
                let out = n.div_ceil(stride);
                ((out - 1) * stride + k).saturating_sub(n)
            };
            let (th, tw) = (total(h, k.0), total(w, k.1));
            [th / 2, th - th / 2, tw / 2, tw - tw / 2]
        }
    }
}

impl Backend for Candle {
    type Tensor = Tensor;
    type Param = Var;

    fn name(&self) -> &'static str {
        "candle"
    }

    fn shape(&self, x: &Tensor) -> Vec<usize> {
        x.dims().to_vec()
    }

    fn param_shape(&self, p: &Var) -> Vec<usize> {
        p.dims().to_vec()
    }

    fn public(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        self.tensor(shape, data)
    }

    fn param_tensor(&self, p: &Var) -> Result<Tensor> {
        Ok(p.as_tensor().clone())
    }

    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        x.reshape(shape).map_err(ce)
    }

    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        x.permute(perm.to_vec()).map_err(ce)
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        Tensor::cat(xs, axis).map_err(ce)
    }

    fn narrow(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
        x.narrow(axis, start, len).map_err(ce)
    }

    fn upsample_nearest2d(&self, x: &Tensor, factor: usize) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4().map_err(ce)?;
        x.upsample_nearest2d(h * factor, w * factor).map_err(ce)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.broadcast_add(b).map_err(ce)
    }

    fn sub(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.broadcast_sub(b).map_err(ce)
    }

    fn scale(&self, x: &Tensor, c: f32) -> Result<Tensor> {
        x.affine(c as f64, 0.0).map_err(ce)
    }

    fn add_scalar(&self, x: &Tensor, c: f32) -> Result<Tensor> {
        x.affine(1.0, c as f64).map_err(ce)
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.broadcast_mul(b).map_err(ce)
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.contiguous()
            .and_then(|a| a.matmul(&b.contiguous()?))
            .map_err(ce)
    }

    fn linear(&self, x: &Tensor, w: &Var, b: Option<&Var>) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (&k, lead) = dims
            .split_last()
            .ok_or_else(|| nn::Error::shape("linear", "scalar input"))?;
        let (wk, out) = w.dims2().map_err(ce)?;
        if wk != k {
            return Err(nn::Error::shape(
                "linear",
                format!("input {dims:?} against kernel ({wk}, {out})"),
            ));
        }
        let rows: usize = lead.iter().product();
        let x2 = x
            .contiguous()
            .and_then(|x| x.reshape((rows, k)))
            .map_err(ce)?;
        let mut y = x2.matmul(w.as_tensor()).map_err(ce)?;
        if let Some(b) = b {
            y = y.broadcast_add(b.as_tensor()).map_err(ce)?;
        }
        let mut shape = lead.to_vec();
        shape.push(out);
        y.reshape(shape).map_err(ce)
    }

    fn conv2d(&self, x: &Tensor, w: &Var, b: Option<&Var>, spec: ConvSpec) -> Result<Tensor> {
        let (_, _, h, wd) = x.dims4().map_err(ce)?;
        let (_, _, kh, kw) = w.dims4().map_err(ce)?;
        let [t, bo, l, r] = pads(spec.padding, (h, wd), (kh, kw), spec.stride);
        let run = || -> candle_core::Result<Tensor> {
            let y = crate::conv::conv2d(x, w.as_tensor(), spec.stride, [t, bo, l, r])?;
            match b {
                Some(b) => {
                    let c = b.dims1()?;
                    y.broadcast_add(&b.as_tensor().reshape((1, c, 1, 1))?)
                }
                None => Ok(y),
            }
        };
        run().map_err(ce)
    }

    fn conv_transpose2d(
        &self,
        _x: &Tensor,
        _w: &Var,
        _b: Option<&Var>,
        _spec: ConvSpec,
    ) -> Result<Tensor> {
        // The Stable Diffusion family and the classifier upsample with nearest + conv; nothing
        // trained here uses a transposed convolution.
        Err(nn::Error::Config(
            "the training backend does not implement conv_transpose2d".into(),
        ))
    }

    fn silu(&self, x: &Tensor) -> Result<Tensor> {
        x.silu().map_err(ce)
    }

    fn mish(&self, x: &Tensor) -> Result<Tensor> {
        // x * tanh(softplus(x)), softplus written stably as relu(x) + log(1 + exp(-|x|)).
        let run = || -> candle_core::Result<Tensor> {
            let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            x * sp.tanh()?
        };
        run().map_err(ce)
    }

    fn gelu(&self, x: &Tensor) -> Result<Tensor> {
        x.gelu().map_err(ce)
    }

    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        };
        run().map_err(ce)
    }

    fn clamp(&self, x: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
        x.clamp(lo, hi).map_err(ce)
    }

    fn group_norm(
        &self,
        x: &Tensor,
        groups: usize,
        gamma: &Var,
        beta: &Var,
        eps: f32,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
            return Err(nn::Error::shape(
                "group_norm",
                format!("{dims:?} into {groups} groups"),
            ));
        }
        let (n, c) = (dims[0], dims[1]);
        let run = || -> candle_core::Result<Tensor> {
            let g = x.reshape((n, groups, ()))?;
            let mean = g.mean_keepdim(2)?;
            let centred = g.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(2)?;
            let normed = centred.broadcast_div(&(var + eps as f64)?.sqrt()?)?;
            let mut affine_shape = vec![1, c];
            affine_shape.extend(std::iter::repeat_n(1, dims.len() - 2));
            normed
                .reshape(dims.clone())?
                .broadcast_mul(&gamma.as_tensor().reshape(affine_shape.clone())?)?
                .broadcast_add(&beta.as_tensor().reshape(affine_shape)?)
        };
        run().map_err(ce)
    }

    fn layer_norm(&self, x: &Tensor, gamma: &Var, beta: &Var, eps: f32) -> Result<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            centred
                .broadcast_div(&(var + eps as f64)?.sqrt()?)?
                .broadcast_mul(gamma.as_tensor())?
                .broadcast_add(beta.as_tensor())
        };
        run().map_err(ce)
    }
}

/// The values of a tensor as f32 (for logs, checkpoints and images).
pub fn values(x: &Tensor) -> Result<Vec<f32>> {
    x.to_dtype(DType::F32)
        .and_then(|x| x.flatten_all()?.to_vec1::<f32>())
        .map_err(ce)
}
