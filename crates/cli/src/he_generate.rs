//! `secdiff generate --mode he`: the HE-Diffusion client. The latent never leaves this process in
//! the clear except the split's plaintext part; the server (`--server ADDR`, or a thread on
//! loopback with `--local`) runs the U-Net after the split point and updates the encrypted part.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use diffusion::{NoiseSource, Sampler};
use he::model::{LoadedModel, UNetHead, UNetServer};
use he::protocol::HeClient;
use he::split::DEFAULT_THRESHOLD;
use he::{CkksContext, ClientKeys, Preset};
use nn::Plain;

use crate::cli_error::{CliError, CliResult};
use crate::generate::{step_bar, Plan, Sampled};

#[derive(Args, Debug, Default)]
pub struct HeGenerateArgs {
    /// HE mode: address of a `secdiff he-server` (host:port).
    #[arg(long, conflicts_with = "local")]
    pub server: Option<String>,
    /// HE mode: run the server in a thread of this process, over loopback TCP.
    #[arg(long)]
    pub local: bool,
    /// HE mode: the last layer the client runs (init_conv, downs_0, downs_1, ...).
    #[arg(long, default_value = "init_conv")]
    pub split: String,
    /// HE mode: fraction of the latent's total distortion left in plaintext (HE-Diffusion: 0.01).
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    pub threshold: f64,
    /// HE mode: CKKS parameters (hediff: N=8192, [31,26x6,31], 2^26; precise: [60,40,40,60], 2^40).
    #[arg(long, default_value = "hediff")]
    pub preset: String,
    /// HE mode: seconds to wait for the server on any read or write.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

impl HeGenerateArgs {
    /// Refuses HE flags in another mode.
    pub fn check_unused(&self) -> CliResult<()> {
        if self.server.is_some() || self.local {
            return Err(CliError::Usage(
                "--server and --local are for --mode he".into(),
            ));
        }
        Ok(())
    }
}

fn he_err(e: he::Error) -> CliError {
    CliError::Other(e.to_string())
}

pub fn run(plan: &mut Plan, args: &HeGenerateArgs) -> CliResult<Sampled> {
    if !(0.0..=1.0).contains(&args.threshold) {
        return Err(CliError::Usage(format!(
            "--threshold {} is not a fraction in [0, 1]",
            args.threshold
        )));
    }
    let preset = Preset::parse(&args.preset).map_err(he_err)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    // A linear update cannot clip x0 under encryption: HE mode samples unclipped (recorded as
    // clip_x0 = false in the report).
    if let Sampler::Ddim(cfg) = &mut plan.sampler {
        cfg.clip_x0 = false;
    }

    let load_start = Instant::now();
    let model = LoadedModel::load(&plan.model.dir.display().to_string()).map_err(he_err)?;
    let split = model.split_point(&args.split).map_err(he_err)?;
    let session = model.session(split, &plan.labels, plan.shape[0]);
    let head = UNetHead::new(model.clone(), session.clone()).map_err(he_err)?;
    let ctx = CkksContext::from_preset(preset).map_err(he_err)?;
    let keys = ClientKeys::generate(&ctx).map_err(he_err)?;

    let (addr, local_server) = match (&args.server, args.local) {
        (Some(addr), false) => (addr.clone(), None),
        (None, true) => {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| {
                CliError::Other(format!("--local: cannot open a loopback port: {e}"))
            })?;
            let addr = listener
                .local_addr()
                .map_err(|e| CliError::Other(e.to_string()))?
                .to_string();
            let server_model = model.clone();
            let handle = std::thread::spawn(move || {
                he::tcp::serve(
                    listener,
                    Arc::new(UNetServer::new(vec![server_model])),
                    timeout,
                    Some(1),
                    Arc::new(|_, _| {}),
                )
            });
            (addr, Some(handle))
        }
        _ => {
            return Err(CliError::Usage(
                "--mode he needs --server ADDR (a running `secdiff he-server`) or --local".into(),
            ))
        }
    };
    let stream = he::tcp::connect(&addr, timeout).map_err(he_err)?;
    let mut client = HeClient::open(stream, keys, session, args.threshold).map_err(he_err)?;
    let seconds_load = load_start.elapsed().as_secs_f64();

    let steps = he::sampler::plan(&plan.sampler, &plan.schedule).map_err(he_err)?;
    let bar = step_bar(steps.len());
    let shape = plan.shape;
    let noise: &mut dyn NoiseSource<Plain> = match &mut plan.step_noise {
        Some(file_noise) => file_noise,
        None => &mut plan.rng,
    };
    let mut draw =
        |t: usize| -> he::Result<Vec<f32>> { Ok(noise.noise(&Plain, t, &shape)?.into_vec()) };
    let sampling_start = Instant::now();
    let trajectory = he::sampler::sample(
        &mut client,
        &head,
        plan.x_t.clone(),
        &steps,
        &mut draw,
        &mut |i| bar.set_position(i as u64 + 1),
    );
    bar.finish_and_clear();
    let mut trajectory = trajectory.map_err(he_err)?;
    let seconds_sampling = sampling_start.elapsed().as_secs_f64();
    let (sent, received) = client.traffic();
    client.close().map_err(he_err)?;
    if let Some(handle) = local_server {
        match handle.join() {
            Ok(result) => result.map_err(he_err)?,
            Err(_) => {
                return Err(CliError::Other(
                    "the local HE server thread panicked".into(),
                ))
            }
        }
    }
    eprintln!(
        "he: {} steps, split after {}, threshold {}, preset {preset}: sent {:.1} MB, received \
         {:.1} MB",
        steps.len(),
        args.split,
        args.threshold,
        sent as f64 / 1e6,
        received as f64 / 1e6
    );
    Ok(Sampled {
        x0: trajectory.pop().expect("the trajectory ends with x_0"),
        seconds_load,
        seconds_sampling,
    })
}
