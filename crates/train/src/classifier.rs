//! Training the MNIST classifier that scores generated digits: cross-entropy with small random
//! translations, then held-out accuracy with the EMA weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, D};
use nn::sd::mnist::{Digits, SIDE};
use nn::sd::{MnistClassifier, StableDiffusionConfig};
use nn::{Error, Result};

use crate::backend::{ce, values, Candle};
use crate::config::TrainConfig;
use crate::data::{batch_indices, images, training_digits};
use crate::fit::{fit, FitReport, RunFiles};
use crate::params::Params;

/// Fraction of `d` that `model` labels correctly.
pub fn accuracy(b: &Candle, model: &MnistClassifier<Candle>, d: &Digits) -> Result<f64> {
    let mut correct = 0;
    for start in (0..d.len()).step_by(500) {
        let end = (start + 500).min(d.len());
        let x = b.tensor(
            &[end - start, 1, SIDE, SIDE],
            &d.images[start * SIDE * SIDE..end * SIDE * SIDE],
        )?;
        let logits = values(&model.forward(b, &x)?)?;
        for (row, &label) in logits.chunks(10).zip(&d.labels[start..end]) {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0);
            correct += usize::from(best == label as usize);
        }
    }
    Ok(correct as f64 / d.len() as f64)
}

/// Mean cross-entropy of logits (N, K) against one-hot targets.
pub fn cross_entropy(logits: &Tensor, labels: &[u8], classes: usize) -> Result<Tensor> {
    let n = labels.len();
    let mut target = vec![0f32; n * classes];
    for (i, &l) in labels.iter().enumerate() {
        target[i * classes + l as usize] = 1.0;
    }
    let run = || -> candle_core::Result<Tensor> {
        let t = Tensor::from_slice(&target, (n, classes), logits.device())?;
        let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        (lsm * t)?.sum_all()?.neg()? / n as f64
    };
    run().map_err(ce)
}

pub fn train(cfg: &TrainConfig, out: &Path, resume: bool) -> Result<(FitReport, f64)> {
    let model = StableDiffusionConfig::from_file(&cfg.model_config)?;
    let ccfg = model.classifier.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "{} has no [classifier] section",
            cfg.model_config.display()
        ))
    })?;
    let digits = training_digits(cfg)?;
    let b = Candle::default();
    let mut params = Params::new(cfg.seed.wrapping_add(2));
    let net = MnistClassifier::new(&b, &mut params, ccfg)?;
    eprintln!(
        "classifier: {} parameters, {} training digits",
        params.count(),
        digits.len()
    );
    let h = &cfg.classifier;
    let n = h.batch_size;
    let files = RunFiles::new(out, "classifier");
    let (report, ema) = fit(
        "classifier",
        &params,
        h,
        cfg.seed.wrapping_add(2),
        &files,
        resume,
        |_, rng| {
            let idx = batch_indices(rng, digits.len(), n);
            let x = b.tensor(
                &[n, 1, SIDE, SIDE],
                &images(&digits, &idx, h.max_shift, rng),
            )?;
            let labels: Vec<u8> = idx.iter().map(|&i| digits.labels[i]).collect();
            cross_entropy(&net.forward(&b, &x)?, &labels, ccfg.classes)
        },
    )?;
    for (s, (_, p)) in ema.shadow.iter().zip(&params.entries) {
        p.set(s).map_err(ce)?;
    }
    let (_, held_out) = Digits::load(&cfg.data)?.split()?;
    let acc = accuracy(&b, &net, &held_out)?;
    eprintln!(
        "classifier: held-out accuracy {:.2}% on {} digits",
        100.0 * acc,
        held_out.len()
    );
    let meta = HashMap::from([("held_out_accuracy".to_string(), format!("{acc:.4}"))]);
    nn::sd::weights::save_atomic(
        &out.join("classifier.safetensors"),
        &params.snapshot()?,
        meta,
    )?;
    Ok((report, acc))
}
