//! The paper's speed comparison: one denoising step of the latent in the three forms, timed side
//! by side in one process:
//!
//! - every element in its own ciphertext (HE-Diffusion's "non-optimised" baseline),
//! - the dense latent packed into as few ciphertexts as the slots allow ("Enc_opt"),
//! - HE-Diffusion's form: min-distortion split, only y encrypted (packed), z in the clear.
//!
//! A step is: client split and encryption, the server's update, client decryption and merge. The
//! U-Net's time is the same in all three forms and is left out, as are serialisation and the
//! network (reported separately as bytes). Every form's result is checked against the plaintext
//! update. The every-element form on large latents can be timed on a sample of elements and
//! extrapolated linearly (its cost is exactly per element); the record says when that was done.

use std::time::Instant;

use serde::Serialize;

use crate::ckks::{ClientKeys, Packing};
use crate::error::Result;
use crate::split::{min_distortion_split, Split};
use crate::step::{client_encrypt, client_merge, server_update, StepCoefficients};

/// One latent's measurements; the field names are the JSON record's.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRecord {
    pub latent: String,
    pub shape: Vec<usize>,
    pub seconds_every_element: f64,
    pub seconds_packed: f64,
    pub seconds_sparse: f64,
    /// The same three times as CPU time of the measuring thread (SEAL runs single-threaded here):
    /// on a machine shared with other jobs these ratios are the stable ones.
    pub cpu_seconds_every_element: f64,
    pub cpu_seconds_packed: f64,
    pub cpu_seconds_sparse: f64,
    pub encrypted_fraction: f64,
    /// How many elements the every-element form really ran (== numel unless extrapolated).
    pub every_element_measured: usize,
    pub every_element_extrapolated: bool,
    pub ciphertexts_every_element: usize,
    pub ciphertexts_packed: usize,
    pub ciphertexts_sparse: usize,
    /// Client-to-server bytes of the latent part of one step (the ciphertexts plus, for the sparse
    /// form, indices and the plaintext part); the every-element figure is per-ciphertext size times
    /// the count when extrapolated.
    pub bytes_every_element: usize,
    pub bytes_packed: usize,
    pub bytes_sparse: usize,
    /// Largest deviation of each form's result from the plaintext step.
    pub max_error_every_element: f64,
    pub max_error_packed: f64,
    pub max_error_sparse: f64,
    pub speedup_sparse_over_every_element: f64,
    pub speedup_sparse_over_packed: f64,
    pub cpu_speedup_sparse_over_every_element: f64,
}

/// Elements per batch of the every-element form (bounds its memory to a few hundred MB).
const EVERY_ELEMENT_CHUNK: usize = 256;

struct FormRun {
    seconds: f64,
    cpu_seconds: f64,
    ciphertexts: usize,
    bytes: usize,
    max_error: f64,
}

/// Runs one form on (latent, eps) and checks it against the plaintext step.
fn run_form(
    keys: &ClientKeys,
    latent: &[f32],
    shape: &[usize],
    eps: &[f32],
    coeff: StepCoefficients,
    packing: Packing,
    threshold: Option<f64>,
) -> Result<FormRun> {
    let ctx = keys.context();
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let split = match threshold {
        Some(t) => min_distortion_split(latent, shape, t)?,
        None => Split::all_encrypted(latent.len())?,
    };
    let sent = client_encrypt(keys, latent, shape, &split, packing)?;
    let returned = server_update(ctx, coeff, &sent, eps)?;
    let merged = client_merge(keys, &returned)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = thread_cpu_seconds() - cpu_start;
    let want = coeff.apply(latent, eps);
    let max_error = merged
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    Ok(FormRun {
        seconds,
        cpu_seconds,
        ciphertexts: sent.y.values().ciphertext_count(),
        bytes: sent.to_bytes()?.len(),
        max_error,
    })
}

/// Measures the three forms on one latent. `every_element_sample`: if set and smaller than the
/// latent, the every-element form runs on that many leading elements and is scaled up.
#[allow(clippy::too_many_arguments)]
pub fn bench_latent(
    keys: &ClientKeys,
    name: &str,
    shape: &[usize],
    latent: &[f32],
    eps: &[f32],
    coeff: StepCoefficients,
    threshold: f64,
    every_element_sample: Option<usize>,
) -> Result<BenchRecord> {
    let numel = latent.len();
    let sparse = run_form(
        keys,
        latent,
        shape,
        eps,
        coeff,
        Packing::Dense,
        Some(threshold),
    )?;
    let packed = run_form(keys, latent, shape, eps, coeff, Packing::Dense, None)?;
    let measured = every_element_sample.map_or(numel, |k| k.clamp(1, numel));
    // One ciphertext per element is ~1 MB in memory at N = 8192: run the form in chunks so that
    // a full SD-sized latent (16384 ciphertexts, twice over) does not need 30 GB at once. The
    // work is the same; only the peak memory differs.
    let mut every = FormRun {
        seconds: 0.0,
        cpu_seconds: 0.0,
        ciphertexts: 0,
        bytes: 0,
        max_error: 0.0,
    };
    for start in (0..measured).step_by(EVERY_ELEMENT_CHUNK) {
        let end = (start + EVERY_ELEMENT_CHUNK).min(measured);
        let part = run_form(
            keys,
            &latent[start..end],
            &[1, 1, 1, end - start],
            &eps[start..end],
            coeff,
            Packing::OnePerCiphertext,
            None,
        )?;
        every.seconds += part.seconds;
        every.cpu_seconds += part.cpu_seconds;
        every.ciphertexts += part.ciphertexts;
        every.bytes += part.bytes;
        every.max_error = every.max_error.max(part.max_error);
    }
    let scale_up = numel as f64 / measured as f64;
    let seconds_every_element = every.seconds * scale_up;
    let split = min_distortion_split(latent, shape, threshold)?;
    Ok(BenchRecord {
        latent: name.to_string(),
        shape: shape.to_vec(),
        seconds_every_element,
        seconds_packed: packed.seconds,
        seconds_sparse: sparse.seconds,
        cpu_seconds_every_element: every.cpu_seconds * scale_up,
        cpu_seconds_packed: packed.cpu_seconds,
        cpu_seconds_sparse: sparse.cpu_seconds,
        encrypted_fraction: split.encrypted_fraction(),
        every_element_measured: measured,
        every_element_extrapolated: measured < numel,
        ciphertexts_every_element: numel,
        ciphertexts_packed: packed.ciphertexts,
        ciphertexts_sparse: sparse.ciphertexts,
        bytes_every_element: (every.bytes as f64 * scale_up).round() as usize,
        bytes_packed: packed.bytes,
        bytes_sparse: sparse.bytes,
        max_error_every_element: every.max_error,
        max_error_packed: packed.max_error,
        max_error_sparse: sparse.max_error,
        speedup_sparse_over_every_element: seconds_every_element / sparse.seconds,
        speedup_sparse_over_packed: packed.seconds / sparse.seconds,
        cpu_speedup_sparse_over_every_element: every.cpu_seconds * scale_up / sparse.cpu_seconds,
    })
}

/// CPU time consumed by the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
