#!/usr/bin/env python3
"""JAX/flax baseline for `secdiff bench plain --vs-jax`: the cipherdm-mnist U-Net, jitted.

Defines the U-Net of models/cipherdm-mnist/REFERENCE.md as flax modules whose parameter paths
are the checkpoint's, loads models/cipherdm-mnist/weights.safetensors (a tiny reader below, so
only jax, flax and numpy are needed), checks the output against eps.out of the test vectors, then
times the jitted forward at batch 1 (median of --runs after warm-up). Prints one JSON line.

Run with the venv that has jax 0.4.34 and flax 0.9.0:
    /tmp/spu-venv/bin/python scripts/bench/jax_unet.py [--runs 200]
With --serve it prints the check as one JSON line, then for every line "K" read on stdin times K
forwards and prints their seconds as a JSON list: `secdiff bench plain --vs-jax` uses this to
alternate short rounds of both sides, so that changes in machine load hit both equally.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GROUPS, CLASSES, BASE, TEMB = 2, 2, 4, 8


def read_safetensors(path):
    """name -> numpy array for the dtypes the project's files use."""
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(blob[base + start:base + end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def nest(flat):
    """{'a.b.c': v} -> {'a': {'b': {'c': v}}}"""
    tree = {}
    for key, value in flat.items():
        node = tree
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def build_model():
    import jax.numpy as jnp
    import flax.linen as nn

    class Attention(nn.Module):
        channels: int

        @nn.compact
        def __call__(self, x):
            n, h, w, c = x.shape
            qkv = nn.Conv(3 * c, (1, 1), name="to_qkv")(nn.GroupNorm(GROUPS, name="norm")(x))
            q, k, v = (a.reshape(n, h * w, c) for a in jnp.split(qkv, 3, axis=-1))
            weights = nn.softmax(jnp.einsum("nic,njc->nij", q, k) * c ** -0.5, axis=-1)
            out = jnp.einsum("nij,njc->nic", weights, v).reshape(n, h, w, c)
            return nn.Conv(c, (1, 1), name="to_out")(out) + x

    class ResBlock(nn.Module):
        cin: int
        cout: int
        attention: bool

        @nn.compact
        def __call__(self, x, temb, y):
            h = nn.silu(nn.GroupNorm(GROUPS, name="GroupNorm_0")(x))
            h = nn.Conv(self.cout, (3, 3), padding="SAME", name="Conv_0")(h)
            h = h + nn.Dense(self.cout, name="Dense_0")(nn.silu(temb))[:, None, None, :]
            h = h + nn.Embed(CLASSES, self.cout, name="Embed_0")(y)[:, None, None, :]
            h = nn.silu(nn.GroupNorm(GROUPS, name="GroupNorm_1")(h))
            h = nn.Conv(self.cout, (3, 3), padding="SAME", name="Conv_1")(h)
            skip = nn.Conv(self.cout, (1, 1), name="Conv_2")(x) if self.cin != self.cout else x
            h = h + skip
            return Attention(self.cout, name="AttentionBlock_0")(h) if self.attention else h

    class Down(nn.Module):
        channels: int

        @nn.compact
        def __call__(self, x):
            return nn.Conv(self.channels, (3, 3), strides=(2, 2), padding="SAME", name="Conv_0")(x)

    class Up(nn.Module):
        channels: int

        @nn.compact
        def __call__(self, x):
            return nn.ConvTranspose(self.channels, (3, 3), strides=(2, 2), padding="SAME",
                                    name="ConvTranspose_0")(x)

    class TimeMLP(nn.Module):
        @nn.compact
        def __call__(self, t):
            half = BASE // 2
            freqs = jnp.exp(jnp.arange(half) * -(math.log(10000) / half))
            args = jnp.outer(t * 1.0, freqs)
            feats = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
            return nn.Dense(TEMB, name="layers_3")(nn.silu(nn.Dense(TEMB, name="layers_1")(feats)))

    class UNet(nn.Module):
        """channel_mults (1, 2), 2 res blocks per level, attention on level 1 and mid_0."""

        @nn.compact
        def __call__(self, x, t, y):
            temb = TimeMLP(name="time_mlp")(t)
            h = nn.Conv(BASE, (3, 3), padding="SAME", name="init_conv")(x)
            skips = [h]
            downs = [(ResBlock, 4, 4, False), (ResBlock, 4, 4, False), (Down, 4),
                     (ResBlock, 4, 8, True), (ResBlock, 8, 8, True)]
            for i, (kind, *spec) in enumerate(downs):
                block = kind(*spec, name=f"downs_{i}")
                h = block(h) if kind is Down else block(h, temb, y)
                skips.append(h)
            h = ResBlock(8, 8, True, name="mid_0")(h, temb, y)
            h = ResBlock(8, 8, False, name="mid_1")(h, temb, y)
            ups = [(ResBlock, 16, 8, True), (ResBlock, 16, 8, True), (ResBlock, 12, 8, True), (Up, 8),
                   (ResBlock, 12, 4, False), (ResBlock, 8, 4, False), (ResBlock, 8, 4, False)]
            for i, (kind, *spec) in enumerate(ups):
                block = kind(*spec, name=f"ups_{i}")
                if kind is Up:
                    h = block(h)
                else:
                    h = block(jnp.concatenate([h, skips.pop()], axis=-1), temb, y)
            h = nn.silu(nn.GroupNorm(GROUPS, name="out_norm")(h))
            return nn.Conv(1, (3, 3), padding="SAME", name="out_conv")(h)

    return UNet()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--serve", action="store_true", help="time rounds on request (see above)")
    parser.add_argument("--weights", default=os.path.join(ROOT, "models/cipherdm-mnist/weights.safetensors"))
    parser.add_argument("--cases", default=os.path.join(ROOT, "tests/data/cipherdm-mnist/cases.safetensors"))
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    params = {"params": nest({k: jnp.asarray(v) for k, v in read_safetensors(args.weights).items()})}
    model = build_model()
    forward = jax.jit(lambda p, x, t, y: model.apply(p, x, t, y))

    cases = read_safetensors(args.cases)
    out = forward(params, cases["eps.x"], cases["eps.t"].astype(np.int32), cases["eps.y"].astype(np.int32))
    max_err = float(np.abs(np.asarray(out) - cases["eps.out"]).max())

    x, t, y = cases["eps.x"][:1], np.array([500], np.int32), np.array([1], np.int32)
    for _ in range(20):
        forward(params, x, t, y).block_until_ready()

    def timed(runs):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            forward(params, x, t, y).block_until_ready()
            times.append(time.perf_counter() - start)
        return times

    if args.serve:
        print(json.dumps({"jax": jax.__version__, "eps_max_abs_err": max_err}), flush=True)
        if max_err >= 1e-4:
            return 1
        for line in sys.stdin:
            print(json.dumps(timed(int(line))), flush=True)
        return 0
    times = timed(args.runs)
    print(json.dumps({
        "jax": jax.__version__,
        "forward_seconds_median": float(np.median(times)),
        "forward_seconds_min": float(np.min(times)),
        "runs": args.runs,
        "eps_max_abs_err": max_err,
    }))
    return 0 if max_err < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
