//! The HE-Diffusion protocol between one client and one server, over a [`FramedStream`]:
//!
//! ```text
//! client                                   server
//!   Hello(params, model, split, shape, labels) ->
//!                                          <- Ready            (or Error: unknown model, ...)
//!   per step:
//!   Step(t, a, b, features, Enc(y)+idx, z) ->
//!                                          <- StepResult(a*Enc(y) + (b*eps)[idx], a*z + b*eps)
//!   Bye ->
//! ```
//!
//! The client runs the model's first layers ([`ClientModel`]) on x_t and sends their output (for
//! a U-Net: every activation the rest of the network reads, i.e. the skip connections made so
//! far); the server runs the rest ([`ServerModel`]) in plaintext to get eps and applies the
//! HE-Diffusion update ([`crate::step`]). What the server sees each step is exactly a
//! [`ServerView`]; an observer can record it (the leakage audit does).

use std::io::{Read, Write};
use std::sync::Arc;

use crate::ckks::{CkksContext, CkksParams, ClientKeys, Packing};
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::split::min_distortion_split;
use crate::step::{client_encrypt, client_merge, server_update, EncryptedLatent, StepCoefficients};
use crate::wire::{FramedStream, Kind};

/// A dense f32 tensor as it travels in a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::shape("tensor", format!("shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(Error::shape(
                "tensor",
                format!("shape {shape:?} holds {n} values, got {}", data.len()),
            ));
        }
        Ok(Tensor { shape, data })
    }
}

/// What a session is about; sent in `Hello`, checked by the server's model.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    pub model: String,
    /// SHA-256 (hex) of the model's weights file: both sides must run the same weights.
    pub weights_sha256: String,
    /// The split point's name (e.g. "conv_in").
    pub split: String,
    /// NCHW shape of the latent.
    pub latent_shape: Vec<usize>,
    /// Class labels, one per sample (the U-Net's conditioning; the server learns them).
    pub labels: Vec<usize>,
}

/// The client's part of the model: the layers before the split point.
pub trait ClientModel {
    fn session(&self) -> &SessionInfo;
    /// The activations at the split point for x_t (shape `session().latent_shape`).
    fn features(&self, x: &[f32], t: usize) -> Result<Vec<Tensor>>;
}

/// The server's part of the model: the layers after the split point.
pub trait ServerModel: Send + Sync {
    /// Accepts or refuses a session (unknown model or split point, a latent shape or labels the
    /// model cannot take) with an error the client will see.
    fn check(&self, session: &SessionInfo) -> Result<()>;
    /// The predicted noise (latent-shaped) from the split point's activations.
    fn eps(&self, session: &SessionInfo, features: &[Tensor], t: usize) -> Result<Vec<f32>>;
}

/// Everything the server has seen in one step.
pub struct ServerView<'a> {
    pub step: u32,
    pub t: usize,
    pub coeff: StepCoefficients,
    pub features: &'a [Tensor],
    /// Positions of the encrypted part (public).
    pub encrypted_indices: &'a [u32],
    /// The plaintext part, at the remaining positions in increasing order.
    pub plain_part: &'a [f32],
    /// The noise prediction it computed.
    pub eps: &'a [f32],
}

fn write_session(w: &mut Writer, params: &CkksParams, s: &SessionInfo) {
    w.bytes(&params.to_bytes())
        .bytes(s.model.as_bytes())
        .bytes(s.weights_sha256.as_bytes())
        .bytes(s.split.as_bytes())
        .usizes(&s.latent_shape)
        .usizes(&s.labels);
}

fn read_string(r: &mut Reader, what: &str) -> Result<String> {
    let b = r.bytes()?;
    String::from_utf8(b.to_vec()).map_err(|_| r.corrupt(format!("{what} is not UTF-8")))
}

fn read_session(bytes: &[u8]) -> Result<(CkksParams, SessionInfo)> {
    let mut r = Reader::new(bytes, "Hello message");
    let params = CkksParams::from_bytes(r.bytes()?)?;
    let model = read_string(&mut r, "model name")?;
    let weights_sha256 = read_string(&mut r, "weights digest")?;
    let split = read_string(&mut r, "split point")?;
    let latent_shape = r.usizes()?;
    let labels = r.usizes()?;
    r.finish()?;
    let session = SessionInfo {
        model,
        weights_sha256,
        split,
        latent_shape,
        labels,
    };
    match session.latent_shape[..] {
        [n, c, h, w] if n > 0 && c > 0 && h > 0 && w > 0 => {}
        _ => {
            return Err(Error::shape(
                "Hello",
                format!("latent shape {:?}: need NCHW", session.latent_shape),
            ))
        }
    }
    Ok((params, session))
}

fn write_step(
    w: &mut Writer,
    step: u32,
    t: usize,
    coeff: StepCoefficients,
    features: &[Tensor],
    latent: &[u8],
) {
    w.u32(step)
        .u64(t as u64)
        .f64(coeff.a)
        .f64(coeff.b)
        .u32(features.len() as u32);
    for f in features {
        w.usizes(&f.shape).f32s(&f.data);
    }
    w.bytes(latent);
}

struct StepMessage {
    step: u32,
    t: usize,
    coeff: StepCoefficients,
    features: Vec<Tensor>,
    latent: EncryptedLatent,
}

fn read_step(ctx: &CkksContext, bytes: &[u8]) -> Result<StepMessage> {
    let mut r = Reader::new(bytes, "Step message");
    let step = r.u32()?;
    let t = r.u64()? as usize;
    let coeff = StepCoefficients {
        a: r.f64()?,
        b: r.f64()?,
    };
    if !coeff.a.is_finite() || !coeff.b.is_finite() {
        return Err(r.corrupt("non-finite step coefficients"));
    }
    let count = r.u32()? as usize;
    if count > 256 {
        return Err(r.corrupt(format!("{count} feature tensors")));
    }
    let mut features = Vec::with_capacity(count);
    for _ in 0..count {
        let shape = r.usizes()?;
        let data = r.f32s()?;
        features.push(Tensor::new(shape, data)?);
    }
    let latent = EncryptedLatent::from_bytes(ctx, r.bytes()?)?;
    r.finish()?;
    Ok(StepMessage {
        step,
        t,
        coeff,
        features,
        latent,
    })
}

/// Called with everything the server sees in a step (the leakage audit records it).
pub type Observer<'o> = &'o mut dyn FnMut(&SessionInfo, &ServerView);

/// Serves one client session to its end (Bye) or to the first error, which is also reported to
/// the client when the link still works.
pub fn serve_session<S: Read + Write>(
    stream: &mut FramedStream<S>,
    model: &dyn ServerModel,
    mut observer: Option<Observer>,
) -> Result<()> {
    let result = (|| -> Result<()> {
        let (params, session) = read_session(&stream.expect(Kind::Hello)?)?;
        let ctx = CkksContext::new(params)?;
        model.check(&session)?;
        stream.send(Kind::Ready, &[])?;
        let mut expected_step = 0u32;
        loop {
            let (kind, payload) = stream.recv()?;
            match kind {
                Kind::Bye => return Ok(()),
                Kind::Step => {}
                other => {
                    return Err(Error::Protocol(format!(
                        "from {}: expected Step or Bye, got {other:?}",
                        stream.peer()
                    )))
                }
            }
            let msg = read_step(&ctx, &payload)?;
            if msg.step != expected_step {
                return Err(Error::Protocol(format!(
                    "step {} arrived, expected step {expected_step}",
                    msg.step
                )));
            }
            if msg.latent.y.shape() != session.latent_shape {
                return Err(Error::shape(
                    "Step",
                    format!(
                        "latent of shape {:?} in a session for {:?}",
                        msg.latent.y.shape(),
                        session.latent_shape
                    ),
                ));
            }
            let eps = model.eps(&session, &msg.features, msg.t)?;
            if let Some(obs) = observer.as_deref_mut() {
                obs(
                    &session,
                    &ServerView {
                        step: msg.step,
                        t: msg.t,
                        coeff: msg.coeff,
                        features: &msg.features,
                        encrypted_indices: msg.latent.y.indices(),
                        plain_part: &msg.latent.z,
                        eps: &eps,
                    },
                );
            }
            let updated = server_update(&ctx, msg.coeff, &msg.latent, &eps)?;
            let mut w = Writer::new();
            w.u32(msg.step).bytes(&updated.to_bytes()?);
            stream.send(Kind::StepResult, &w.finish())?;
            expected_step += 1;
        }
    })();
    if let Err(e) = &result {
        if !matches!(e, Error::Network { .. } | Error::Remote { .. }) {
            stream.send_error(&e.to_string());
        }
    }
    result
}

/// The client's end of a session.
pub struct HeClient<S: Read + Write> {
    stream: FramedStream<S>,
    keys: ClientKeys,
    session: SessionInfo,
    threshold: f64,
    packing: Packing,
    step: u32,
}

impl<S: Read + Write> HeClient<S> {
    /// Opens a session: sends the public parameters and what is to be computed, waits for Ready.
    /// `threshold` is the split's distortion budget (1.0 would send everything in the clear; the
    /// paper's baselines use [`HeClient::encrypt_everything`]).
    pub fn open(
        mut stream: FramedStream<S>,
        keys: ClientKeys,
        session: SessionInfo,
        threshold: f64,
    ) -> Result<HeClient<S>> {
        let mut w = Writer::new();
        write_session(&mut w, keys.context().params(), &session);
        stream.send(Kind::Hello, &w.finish())?;
        stream.expect(Kind::Ready)?;
        Ok(HeClient {
            stream,
            keys,
            session,
            threshold,
            packing: Packing::Dense,
            step: 0,
        })
    }

    /// Encrypts every entry each step (threshold 0 means the same up to exact zeros).
    pub fn encrypt_everything(&mut self) {
        self.threshold = 0.0;
    }

    pub fn session(&self) -> &SessionInfo {
        &self.session
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        self.keys.context()
    }

    /// Bytes sent and received so far, frame headers included.
    pub fn traffic(&self) -> (u64, u64) {
        (self.stream.bytes_sent, self.stream.bytes_received)
    }

    /// One denoising step: features of x_t, split, encrypt, send; decrypt and merge the reply.
    /// Returns a * x_t + b * eps (DDPM's noise is the caller's to add).
    pub fn step(
        &mut self,
        model: &dyn ClientModel,
        x: &[f32],
        t: usize,
        coeff: StepCoefficients,
    ) -> Result<Vec<f32>> {
        let shape = self.session.latent_shape.clone();
        let features = model.features(x, t)?;
        let split = min_distortion_split(x, &shape, self.threshold)?;
        let sent = client_encrypt(&self.keys, x, &shape, &split, self.packing)?;
        let mut w = Writer::new();
        write_step(&mut w, self.step, t, coeff, &features, &sent.to_bytes()?);
        self.stream.send(Kind::Step, &w.finish())?;
        let reply = self.stream.expect(Kind::StepResult)?;
        let mut r = Reader::new(&reply, "StepResult message");
        let step = r.u32()?;
        if step != self.step {
            return Err(Error::Protocol(format!(
                "server answered step {step} to step {}",
                self.step
            )));
        }
        let back = EncryptedLatent::from_bytes(self.keys.context(), r.bytes()?)?;
        r.finish()?;
        // The server must return exactly the positions we encrypted.
        if back.y.shape() != shape.as_slice() || back.y.indices() != sent.y.indices() {
            return Err(Error::Protocol(
                "server returned a latent with other encrypted positions than were sent".into(),
            ));
        }
        let merged = client_merge(&self.keys, &back)?;
        if let Some(v) = merged.iter().find(|v| !v.is_finite()) {
            return Err(Error::Protocol(format!(
                "server returned a non-finite latent value {v}"
            )));
        }
        self.step += 1;
        Ok(merged)
    }

    /// Ends the session politely.
    pub fn close(mut self) -> Result<()> {
        self.stream.send(Kind::Bye, &[])
    }
}
