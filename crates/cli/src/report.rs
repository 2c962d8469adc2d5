//! The JSON report of a `generate` run. Optional fields are left out when absent, so the MPC and
//! HE modes can add their own (bytes, rounds, per-protocol costs) without touching the others.

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: String,
    pub model: String,
    pub sampler: String,
    /// Denoiser calls (sampling steps).
    pub steps: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spacing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_x0: Option<bool>,
    pub batch: usize,
    pub labels: Vec<usize>,
    /// (C, H, W) of one image.
    pub image_shape: [usize; 3],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_file: Option<String>,
    /// Wall-clock seconds: everything (loading, sampling, writing), model loading, sampling.
    pub seconds_total: f64,
    pub seconds_load: f64,
    pub seconds_sampling: f64,
    pub seconds_per_step: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_out: Option<String>,
    /// MPC mode: bytes, rounds, per-op costs, fidelity against plaintext.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub mpc: Option<crate::mpc_generate::MpcReport>,
}
