//! What the roles of an MPC sampling session tell each other: the client's job (JSON, a
//! `party::Job::Sample`), the model owner's header, the messages of the sampling loop, and each
//! party's report. Everything here is public information: sizes, the architecture, the schedule,
//! the sampler, the fixed-point settings and the approximation methods.
//!
//! Message flow of one session (each line is one message on the named link):
//! ```text
//! client -> P_i   Control  {"job":"sample", ...SampleJob}
//! client -> P_i   Shares   "x_T"    [2, N, C, H, W]   (P_i's two share components)
//! client -> P_i   Shares   "labels" [2, N, K]         (class-conditional models)
//! owner  -> P_i   Control  OwnerHeader
//! owner  -> P_i   Shares   <param>  [2, ...] secret, or [...] public (fixed-point values)
//! P_i    -> owner Control  "weights received"
//! per step:
//!   P_i -> client Control  {"need_noise": t}      (stochastic steps only), answered by
//!   client -> P_i Shares   "noise"  [2, N, C, H, W]
//!   P_i -> client Control  {"step": i, "total": T}
//! P_i    -> client Shares   "x_0"   [2, N, C, H, W]
//! P_i    -> client Control  PartyReport
//! ```
//! A text-to-image session (`party::Job::TextSample`, [`TextSampleJob`]) differs only in what
//! is shared: the client sends "tokens" [2, N, L, vocab] (the prompts' one-hot token rows) and
//! "x_T" [2, N, C, h, w] (latents); the owner sends a [`TextOwnerHeader`] and the parameters of
//! the three parts named `text_encoder/...`, `unet/...` and `vae/...`; the parties never ask for
//! noise (deterministic DDIM) and send "x_0" [2, N, C, H, W] (the image).

use diffusion::{BetaSchedule, DdimConfig, Sampler, Spacing};
use mpc::{AShare, TruncMethod};
use nn::mpc::MethodNames;
use nn::sd::{StableDiffusionConfig, WordTokenizer};
use nn::unet::UNetConfig;
use ring::RingTensor;
use serde::{Deserialize, Serialize};

/// The sampler of a job, in a wire-friendly form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SamplerSpec {
    Ddim {
        steps: usize,
        eta: f32,
        spacing: String,
        clip_x0: bool,
    },
    Ddpm,
}

impl SamplerSpec {
    pub fn of(s: &Sampler) -> Self {
        match s {
            Sampler::Ddpm => SamplerSpec::Ddpm,
            Sampler::Ddim(c) => SamplerSpec::Ddim {
                steps: c.steps,
                eta: c.eta,
                spacing: match c.spacing {
                    Spacing::Uniform => "uniform".into(),
                    Spacing::Quadratic => "quad".into(),
                },
                clip_x0: c.clip_x0,
            },
        }
    }

    pub fn sampler(&self) -> Result<Sampler, String> {
        Ok(match self {
            SamplerSpec::Ddpm => Sampler::Ddpm,
            SamplerSpec::Ddim {
                steps,
                eta,
                spacing,
                clip_x0,
            } => Sampler::Ddim(DdimConfig {
                steps: *steps,
                eta: *eta,
                spacing: match spacing.as_str() {
                    "uniform" => Spacing::Uniform,
                    "quad" => Spacing::Quadratic,
                    s => return Err(format!("unknown DDIM spacing {s:?}")),
                },
                clip_x0: *clip_x0,
            }),
        })
    }
}

/// The client's request to each party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleJob {
    /// The model's name (for reports; the architecture below is what counts).
    pub model: String,
    pub unet: UNetConfig,
    pub schedule: BetaSchedule,
    pub sampler: SamplerSpec,
    /// (N, C, H, W) of x_T.
    pub shape: [usize; 4],
    pub frac_bits: u32,
    /// "fast" or "robust".
    pub truncation: String,
    pub methods: MethodNames,
}

/// What a report states about either kind of sampling job.
pub struct JobSettings<'a> {
    pub frac_bits: u32,
    pub truncation: &'a str,
    pub methods: &'a MethodNames,
    /// Images sampled.
    pub images: usize,
}

impl SampleJob {
    pub fn settings(&self) -> JobSettings<'_> {
        JobSettings {
            frac_bits: self.frac_bits,
            truncation: &self.truncation,
            methods: &self.methods,
            images: self.shape[0],
        }
    }

    pub fn trunc(&self) -> Result<TruncMethod, String> {
        TruncMethod::parse(&self.truncation)
            .ok_or_else(|| format!("unknown truncation method {:?}", self.truncation))
    }
}

/// What the model owner sends first: the model it shares, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerHeader {
    pub model: String,
    pub unet: UNetConfig,
    pub schedule: BetaSchedule,
    pub frac_bits: u32,
    /// The weights are sent in the clear (`--public-weights`): only the client's data is secret.
    pub public_weights: bool,
    /// Number of parameter messages that follow.
    pub params: usize,
}

/// A party's message to the client during sampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PartyEvent {
    /// The sampler needs the noise added after the step at timestep `t`.
    NeedNoise { t: usize },
    /// Step `step` of `total` is done.
    Step { step: usize, total: usize },
}

/// One op's cost at one party.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    pub op: String,
    pub calls: u64,
    pub seconds: f64,
    pub bytes: u64,
    pub rounds: u64,
}

/// What a party measured during the job (its mesh traffic only; links to the client and the
/// owner are counted separately as input/output).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartyReport {
    pub party: usize,
    /// Receiving the weights and inputs and building the model.
    pub seconds_setup: f64,
    pub seconds_sampling: f64,
    pub steps: usize,
    pub bytes: u64,
    pub rounds: u64,
    pub messages: u64,
    /// Per model op (conv2d, silu, softmax, ...).
    pub ops: Vec<OpRecord>,
    /// Per protocol (the meter's labels: nl_fma, msb, mux, trunc, ...).
    pub protocols: Vec<OpRecord>,
    /// Bytes received from the client and from the model owner.
    pub bytes_from_client: u64,
    pub bytes_from_owner: u64,
}

/// A share on the wire to/from a role: both components stacked, shape [2, ...].
pub fn share_to_data(x: &AShare) -> (Vec<usize>, Vec<u64>) {
    let mut shape = vec![2];
    shape.extend_from_slice(x.shape());
    let mut data = Vec::with_capacity(2 * x.len());
    data.extend_from_slice(x.mine().data());
    data.extend_from_slice(x.next().data());
    (shape, data)
}

/// The inverse of [`share_to_data`] for party `id` and the tensor shape `shape`.
pub fn share_from_data(id: usize, shape: &[usize], data: Vec<u64>) -> Result<AShare, String> {
    let n: usize = shape.iter().product();
    if data.len() != 2 * n {
        return Err(format!(
            "{} share elements for two components of {shape:?}",
            data.len()
        ));
    }
    let mut mine = data;
    let next = mine.split_off(n);
    let t = |d: Vec<u64>| RingTensor::new(shape, d).map_err(|e| e.to_string());
    AShare::from_parts(id, t(mine)?, t(next)?).map_err(|e| e.to_string())
}

/// [2, shape...]
pub fn stacked(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![2];
    s.extend_from_slice(shape);
    s
}

/// The client's request for text-to-image sampling (a `party::Job::TextSample`): everything
/// public about the model and the run. The prompts themselves travel as shares of their one-hot
/// token rows ("tokens" [2, N, L, vocab]) and x_T as shares ("x_T" [2, N, C, h, w]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSampleJob {
    pub model: String,
    pub config: StableDiffusionConfig,
    /// The tokenizer's words: public like the architecture; the parties encode the empty prompt
    /// of the unconditional branch with them.
    pub vocab: Vec<String>,
    pub scaling_factor: f32,
    pub prompts: usize,
    pub steps: usize,
    pub guidance: f32,
    pub frac_bits: u32,
    /// "fast" or "robust".
    pub truncation: String,
    pub methods: MethodNames,
    /// PIDM's score distillation (`diffusion::sdu`): its learning rate, when the client shares
    /// one target per step (input "sdu", shape (steps, N, C, h, w)) after x_T.
    #[serde(default)]
    pub sdu_eta: Option<f32>,
}

impl TextSampleJob {
    /// The shape of the SDU targets' input: one latent per step.
    pub fn sdu_shape(&self) -> Vec<usize> {
        let mut shape = vec![self.steps];
        shape.extend(self.latent_shape());
        shape
    }

    pub fn settings(&self) -> JobSettings<'_> {
        JobSettings {
            frac_bits: self.frac_bits,
            truncation: &self.truncation,
            methods: &self.methods,
            images: self.prompts,
        }
    }

    pub fn trunc(&self) -> Result<TruncMethod, String> {
        TruncMethod::parse(&self.truncation)
            .ok_or_else(|| format!("unknown truncation method {:?}", self.truncation))
    }

    pub fn tokenizer(&self) -> Result<WordTokenizer, String> {
        WordTokenizer::new(
            self.vocab.clone(),
            self.config.text_encoder.max_position_embeddings,
        )
        .map_err(|e| e.to_string())
    }

    /// (N, L, vocab) of the token rows.
    pub fn token_shape(&self) -> [usize; 3] {
        let t = &self.config.text_encoder;
        [self.prompts, t.max_position_embeddings, t.vocab_size]
    }

    /// (N, C, h, w) of x_T.
    pub fn latent_shape(&self) -> [usize; 4] {
        let s = self.config.latent_size();
        [self.prompts, self.config.vae.latent_channels, s, s]
    }

    /// (N, C, H, W) of the image.
    pub fn image_shape(&self) -> [usize; 4] {
        let c = &self.config;
        [self.prompts, c.vae.out_channels, c.image_size, c.image_size]
    }
}

/// What the model owner of a text model sends first. Its parameters follow, each named
/// `<part>/<name>` with `<part>` one of [`TEXT_MODEL_PARTS`], always secret-shared.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextOwnerHeader {
    pub model: String,
    pub config: StableDiffusionConfig,
    pub frac_bits: u32,
    pub params: usize,
}

/// The parts of a text model, in the order the owner sends them.
pub const TEXT_MODEL_PARTS: [&str; 3] = ["text_encoder", "unet", "vae"];
