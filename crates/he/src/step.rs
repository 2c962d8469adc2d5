//! One HE-Diffusion denoising step on the latent, split between client and server:
//!
//! - client: split x_t into the plaintext part z and the encrypted part y (a COO tensor whose
//!   values are CKKS ciphertexts), [`client_encrypt`];
//! - server: y' = a * Enc(y) + (b * eps)[idx] under encryption, z' = a * z + b * eps[~idx] in the
//!   clear, [`server_update`]; only ciphertext * scalar and ciphertext + plaintext;
//! - client: decrypt y', scatter it into z', [`client_merge`], and for DDPM add its own noise
//!   sigma_t * n afterwards (the server never sees n).
//!
//! The same code runs the paper's two baselines: every entry encrypted with one ciphertext per
//! entry ("non-optimised") and every entry encrypted, densely packed ("Enc_opt"): a split with
//! everything encrypted and the matching [`Packing`].
//!
//! Both updates are linear in x_t, which is why DDIM's and DDPM's x0 clipping cannot be done here:
//! HE mode samples without clipping, exactly as HE-Diffusion's server step does.

use std::sync::Arc;

use crate::ckks::{CkksContext, ClientKeys, EncryptedVector, Packing};
use crate::codec::{Reader, Writer};
use crate::coo::{gather, Coo};
use crate::error::{Error, Result};
use crate::split::Split;

/// x_prev = a * x_t + b * eps (before DDPM's noise, which the client adds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoefficients {
    pub a: f64,
    pub b: f64,
}

impl StepCoefficients {
    /// DDIM with eta = 0 from alpha-bar at t to alpha-bar at the previous timestep:
    /// a = sqrt(abar_prev / abar_t), b = sqrt(1 - abar_prev) - a * sqrt(1 - abar_t).
    pub fn ddim(abar_t: f64, abar_prev: f64) -> StepCoefficients {
        let a = (abar_prev / abar_t).sqrt();
        StepCoefficients {
            a,
            b: (1.0 - abar_prev).sqrt() - a * (1.0 - abar_t).sqrt(),
        }
    }

    /// DDPM's posterior mean in the noise parameterisation:
    /// mu = (x_t - beta_t / sqrt(1 - abar_t) * eps) / sqrt(alpha_t).
    pub fn ddpm_mean(beta_t: f64, abar_t: f64) -> StepCoefficients {
        let a = 1.0 / (1.0 - beta_t).sqrt();
        StepCoefficients {
            a,
            b: -a * beta_t / (1.0 - abar_t).sqrt(),
        }
    }

    /// The step in plaintext: the reference every encrypted form must agree with.
    pub fn apply(&self, x: &[f32], eps: &[f32]) -> Vec<f32> {
        x.iter()
            .zip(eps)
            .map(|(&x, &e)| (self.a * x as f64 + self.b * e as f64) as f32)
            .collect()
    }
}

/// The latent as the server receives it: y encrypted at public positions, z in the clear at the
/// remaining positions (in increasing order).
pub struct EncryptedLatent {
    pub y: Coo<EncryptedVector>,
    pub z: Vec<f32>,
}

const LATENT_MAGIC: &[u8; 4] = b"SDEL";
const LATENT_VERSION: u16 = 1;

impl EncryptedLatent {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.raw(LATENT_MAGIC)
            .u16(LATENT_VERSION)
            .usizes(self.y.shape())
            .u32s(self.y.indices())
            .bytes(&self.y.values().to_bytes()?)
            .f32s(&self.z);
        Ok(w.finish())
    }

    /// Parses and validates: the COO positions, the ciphertexts against `ctx`, and that z fills
    /// exactly the positions y leaves.
    pub fn from_bytes(ctx: &CkksContext, bytes: &[u8]) -> Result<EncryptedLatent> {
        let mut r = Reader::new(bytes, "encrypted latent");
        r.header(LATENT_MAGIC, LATENT_VERSION)?;
        let shape = r.usizes()?;
        let indices = r.u32s()?;
        let values = ctx.load_vector(r.bytes()?)?;
        let z = r.f32s()?;
        r.finish()?;
        let y = Coo::new(shape, indices, values)?;
        check_plain_part(&y, z.len())?;
        Ok(EncryptedLatent { y, z })
    }

    pub fn numel(&self) -> usize {
        self.y.numel()
    }
}

fn check_plain_part<V: crate::coo::CooValues>(y: &Coo<V>, z_len: usize) -> Result<()> {
    let want = y.numel() - y.indices().len();
    if z_len != want {
        return Err(Error::shape(
            "encrypted latent",
            format!(
                "plaintext part has {z_len} values, the {} unencrypted positions need {want}",
                want
            ),
        ));
    }
    Ok(())
}

/// Client: encrypts the entries `split` selects, keeps the rest in the clear.
pub fn client_encrypt(
    keys: &ClientKeys,
    latent: &[f32],
    shape: &[usize],
    split: &Split,
    packing: Packing,
) -> Result<EncryptedLatent> {
    if shape.iter().product::<usize>() != latent.len() || split.numel != latent.len() {
        return Err(Error::shape(
            "client_encrypt",
            format!(
                "latent of {} values, shape {shape:?}, split of {}",
                latent.len(),
                split.numel
            ),
        ));
    }
    let y_values = gather(latent, &split.encrypted)?;
    let y = Coo::new(
        shape.to_vec(),
        split.encrypted.clone(),
        keys.encrypt(&y_values, packing)?,
    )?;
    let z = y.complement().iter().map(|&i| latent[i as usize]).collect();
    Ok(EncryptedLatent { y, z })
}

/// Server: the HE-Diffusion update of both parts with the noise prediction `eps` (dense, same
/// shape as the latent).
pub fn server_update(
    ctx: &Arc<CkksContext>,
    coeff: StepCoefficients,
    latent: &EncryptedLatent,
    eps: &[f32],
) -> Result<EncryptedLatent> {
    if eps.len() != latent.numel() {
        return Err(Error::shape(
            "server_update",
            format!(
                "noise prediction of {} values for a latent of {}",
                eps.len(),
                latent.numel()
            ),
        ));
    }
    check_plain_part(&latent.y, latent.z.len())?;
    let b_eps_y: Vec<f64> = gather(eps, latent.y.indices())?
        .into_iter()
        .map(|e| coeff.b * e)
        .collect();
    let y = latent
        .y
        .with_values(ctx.affine(latent.y.values(), coeff.a, &b_eps_y)?)?;
    let z = latent
        .y
        .complement()
        .iter()
        .zip(&latent.z)
        .map(|(&i, &z)| (coeff.a * z as f64 + coeff.b * eps[i as usize] as f64) as f32)
        .collect();
    Ok(EncryptedLatent { y, z })
}

/// Client: decrypts y' and scatters it into z', giving the dense latent x_{t-1}.
pub fn client_merge(keys: &ClientKeys, latent: &EncryptedLatent) -> Result<Vec<f32>> {
    check_plain_part(&latent.y, latent.z.len())?;
    let y = latent.y.with_values(keys.decrypt(latent.y.values())?)?;
    let mut dense = vec![0f32; latent.numel()];
    for (&i, &z) in y.complement().iter().zip(&latent.z) {
        dense[i as usize] = z;
    }
    y.scatter_into(&mut dense)?;
    Ok(dense)
}
