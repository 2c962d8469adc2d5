#!/usr/bin/env python3
"""Ranges of the attention scores and of the SiLU inputs of cipherdm-mnist along DDIM-50.

The secure softmax and SiLU kernels take public bounds (they size reduced-width comparisons and
the domains of polynomial fits); this script measures the real values those bounds must cover,
in plaintext JAX (scripts/bench/jax_unet.py's model and weights), over the DDIM-50 trajectories
of CipherDM's reference x_T (tests/data/cipherdm-mnist/cases.safetensors, 4 images) and of
--random more x_T drawn from N(0, 1) with labels alternating 0, 1. For every softmax row of
scores s (after the 1/sqrt(c) scaling) it records max |s|, max(s) - mean(s), min(s) - mean(s)
and max(s) - min(s); for SiLU inputs max |x|. Prints one JSON object (worst over all steps,
images and layers, and per attention layer).

    /tmp/spu-venv/bin/python scripts/bench/score_range.py [--random 60]
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import jax_unet  # noqa: E402
from spu_cipherdm import schedule, step_coefficients  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=60, help="extra seeded x_T")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import flax.linen as nn
    import jax.numpy as jnp

    stats = {"layers": {}, "silu_abs_max": 0.0}
    layer = [0]
    real_softmax, real_silu = nn.softmax, nn.silu

    def softmax(s, axis=-1):
        a = np.asarray(s, dtype=np.float64)
        mean = a.mean(axis=-1)
        rec = stats["layers"].setdefault(layer[0] % 6, {
            "abs_max": 0.0, "max_minus_mean": -1e9, "min_minus_mean": 1e9, "max_minus_min": 0.0})
        rec["abs_max"] = max(rec["abs_max"], float(np.abs(a).max()))
        rec["max_minus_mean"] = max(rec["max_minus_mean"], float((a.max(-1) - mean).max()))
        rec["min_minus_mean"] = min(rec["min_minus_mean"], float((a.min(-1) - mean).min()))
        rec["max_minus_min"] = max(rec["max_minus_min"], float((a.max(-1) - a.min(-1)).max()))
        layer[0] += 1
        return real_softmax(s, axis=axis)

    def silu(x):
        stats["silu_abs_max"] = max(stats["silu_abs_max"], float(np.abs(np.asarray(x)).max()))
        return real_silu(x)

    nn.softmax, nn.silu = softmax, silu
    params = {"params": jax_unet.nest({k: jnp.asarray(v) for k, v in jax_unet.read_safetensors(
        os.path.join(ROOT, "models/cipherdm-mnist/weights.safetensors")).items()})}
    model = jax_unet.build_model()
    cases = jax_unet.read_safetensors(os.path.join(ROOT, "tests/data/cipherdm-mnist/cases.safetensors"))
    rng = np.random.default_rng(args.seed)
    x = np.concatenate([cases["ddim50.x_T"],
                        rng.standard_normal((args.random, 28, 28, 1)).astype(np.float32)])
    y = np.concatenate([cases["ddim50.y"], np.arange(args.random) % 2]).astype(np.int32)
    alpha_bars, ts = schedule()
    for t, c in zip(ts, step_coefficients(alpha_bars, ts)):
        eps = model.apply(params, x, np.full(len(x), t, np.int32), y)
        x0 = jnp.clip((x - c[1] * eps) * c[0], -1.0, 1.0)
        x = np.asarray(c[2] * x0 + c[3] * eps)
    worst = {k: (max if k in ("abs_max", "max_minus_mean", "max_minus_min") else min)(
        r[k] for r in stats["layers"].values()) for k in next(iter(stats["layers"].values()))}
    print(json.dumps({"images": len(y), "steps": len(ts), "scores": worst,
                      "silu_abs_max": stats["silu_abs_max"], "per_layer": stats["layers"]}, indent=1))


if __name__ == "__main__":
    main()
