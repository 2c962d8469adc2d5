#!/usr/bin/env python3
"""SecretFlow SPU on CipherDM's exact model: the peer side of `secdiff bench sample --vs-spu`.

Runs the cipherdm-mnist U-Net (flax definition and weights of scripts/bench/jax_unet.py and
models/cipherdm-mnist) under SPU 0.9.5, ABY3, FM64, 18 fraction bits, as three party processes
talking brpc over 127.0.0.1 -- the setting of CipherDM's paper and of the team's SPU harness
(scripts/bench/spu/). The weights, the image and the label are secret; the timestep is public.

Workloads (inputs: tests/data/cipherdm-mnist/cases.safetensors, ddim50.x_T and ddim50.y, the
first --batch images):
  forward  one U-Net forward at t = 981 (the first DDIM step): 1 profiled run (bytes), 1 warm-up,
           --runs timed runs (median); error against the plaintext JAX forward.
  ddim50   DDIM with 50 uniform steps, eta 0, x0 clipped to [-1, 1] (CipherDM's sample_ddim):
           one compiled step whose timestep and scheduler coefficients are public inputs, run 50
           times with x kept secret-shared between steps. Bytes: one profiled step times 50 (every
           step runs the same program on same-shaped inputs); time: the 50 steps unprofiled,
           end to end. Error of x_0 against CipherDM's plaintext ddim50.x_0.

Prints one JSON object and writes it to --out. Needs the venv with spu 0.9.5, jax 0.4.34 and flax
0.9.0 (scripts/bench/spu/README.md says how to install it):
    /tmp/spu-venv/bin/python scripts/bench/spu_cipherdm.py --workload forward --batch 4
"""
import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import jax_unet  # noqa: E402  (the team's flax definition of the model)

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FRAC_BITS = 18
T_FIRST = 981
LINK_RE = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+)")


def schedule():
    """CipherDM's linear schedule in float32 and its DDIM-50 uniform timesteps (descending)."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float32)
    alpha_bars = np.cumprod(1.0 - betas, dtype=np.float32)
    ts = [i * 20 + 1 for i in range(50)][::-1]
    return alpha_bars, ts


def step_coefficients(alpha_bars, ts):
    """Per DDIM step: (1/sqrt(ab_t), sqrt(1 - ab_t), sqrt(ab_prev), sqrt(1 - ab_prev))."""
    out = []
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else 0
        ab, abp = np.float32(alpha_bars[t]), np.float32(alpha_bars[prev])
        out.append(np.array([1 / np.sqrt(ab), np.sqrt(1 - ab), np.sqrt(abp), np.sqrt(1 - abp)],
                            dtype=np.float32))
    return out


def functions(model):
    import jax.numpy as jnp

    def forward(params, x, y, t):
        return model.apply({"params": params}, x, t, y)

    def ddim_step(params, x, y, t, c):
        eps = model.apply({"params": params}, x, t, y)
        x0 = jnp.clip((x - c[1] * eps) * c[0], -1.0, 1.0)
        return c[2] * x0 + c[3] * eps

    return forward, ddim_step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=["forward", "ddim50"], default="forward")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="timed forward runs")
    ap.add_argument("--out", default=None, help="result JSON (default: spu_<workload>_b<batch>.json)")
    ap.add_argument("--plain-divide", action="store_true",
                    help="compile x / broadcast(sum) as a division per element (SPU's default); "
                         "by default the compiler's enable_optimize_denominator_with_broadcast "
                         "turns softmax's division into one reciprocal per row and a product, as "
                         "CipherDM's Algorithm 1 does (about half the bytes of a forward)")
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--port", type=int, default=23000 + os.getpid() % 500 * 3)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import spu.api as spu_api
    import spu.libspu as libspu
    import spu.utils.frontend as spu_fe
    from spu_cipherdm_party import make_config

    wd = args.workdir or tempfile.mkdtemp(prefix="spu_cipherdm_")
    os.makedirs(wd, exist_ok=True)
    weights = jax_unet.read_safetensors(os.path.join(ROOT, "models/cipherdm-mnist/weights.safetensors"))
    params = jax_unet.nest({k: np.asarray(v) for k, v in weights.items()})
    cases = jax_unet.read_safetensors(os.path.join(ROOT, "tests/data/cipherdm-mnist/cases.safetensors"))
    x = np.ascontiguousarray(cases["ddim50.x_T"][: args.batch])
    y = cases["ddim50.y"][: args.batch].astype(np.int32)
    n = x.shape[0]
    model = jax_unet.build_model()
    forward, ddim_step = functions(model)
    alpha_bars, ts = schedule()
    coefs = step_coefficients(alpha_bars, ts)

    S, P = libspu.Visibility.VIS_SECRET, libspu.Visibility.VIS_PUBLIC
    t0 = np.full((n,), T_FIRST, np.int32)
    if args.workload == "forward":
        fn, example = forward, (params, x, y, t0)
    else:
        fn, example = ddim_step, (params, x, y, t0, coefs[0])
    n_params = len(jax.tree_util.tree_leaves(params))
    vis = [S] * n_params + [S, S] + [P] * (len(example) - 2)
    flat, _ = jax.tree_util.tree_flatten(example)
    names = [f"in{i}" for i in range(len(flat))]
    start = time.perf_counter()
    copts = libspu.CompilerOptions()
    copts.enable_optimize_denominator_with_broadcast = not args.plain_divide
    exe, _ = spu_fe.compile(spu_fe.Kind.JAX, fn, example, {}, names, vis,
                            lambda outs: [f"out{i}" for i in range(len(outs))], copts=copts)
    compile_s = time.perf_counter() - start
    open(f"{wd}/exe.bin", "wb").write(exe.SerializeToString())

    # The dealer: secret shares of weights, image and label (not timed).
    io = spu_api.Io(3, make_config())
    secret_flat = flat[: n_params + 2]
    per_rank = [[], [], []]
    for value in secret_flat:
        shares = io.make_shares(np.asarray(value), S)
        for r in range(3):
            per_rank[r].append({"meta": shares[r].meta, "chunks": list(shares[r].share_chunks)})
    public = {"t": [np.full((n,), t, np.int32) for t in ts], "c": coefs}
    for r in range(3):
        pickle.dump({"secret": per_rank[r], "public": public, "n_secret": len(secret_flat)},
                    open(f"{wd}/inputs_rank{r}.pkl", "wb"))

    procs, logs = [], []
    party = os.path.join(HERE, "spu_cipherdm_party.py")
    for r in range(3):
        lf = open(f"{wd}/party{r}.log", "w")
        logs.append(lf)
        procs.append(subprocess.Popen(
            [sys.executable, party, str(r), wd, str(args.port), args.workload, str(args.runs)],
            stdout=lf, stderr=subprocess.STDOUT, cwd=HERE))
    rcs = [p.wait() for p in procs]
    for lf in logs:
        lf.close()
    if any(rcs):
        sys.exit(f"SPU party exit codes {rcs}; logs in {wd}")
    timings = [json.load(open(f"{wd}/timing_rank{r}.json")) for r in range(3)]
    comm = []
    for r in range(3):
        m = LINK_RE.findall(open(f"{wd}/party{r}.log").read())
        comm.append(int(m[-1][0]) if m else None)
    outs = [pickle.load(open(f"{wd}/out_rank{r}.pkl", "rb")) for r in range(3)]
    shares = []
    for r in range(3):
        s = libspu.Share()
        s.meta, s.share_chunks = outs[r]["meta"], outs[r]["chunks"]
        shares.append(s)
    got = np.asarray(io.reconstruct(shares)).reshape(x.shape)

    result = {
        "engine": "spu 0.9.5 ABY3 FM64 fxp_fraction_bits=%d, 3 processes, brpc on 127.0.0.1" % FRAC_BITS,
        "model": "cipherdm-mnist (weights, image and label secret; timestep public)",
        "workload": args.workload,
        "batch": n,
        "compile_s": compile_s,
        "bytes_per_party": comm,
        "compiler_options": {"enable_optimize_denominator_with_broadcast": not args.plain_divide},
    }
    jf = jax.jit(fn)
    if args.workload == "forward":
        per_run = [max(t["runs_s"][i] for t in timings) for i in range(args.runs)]
        want = np.asarray(jf(params, x, y, t0))
        result.update({
            "seconds": statistics.median(per_run),
            "runs_s": per_run,
            "bytes_total": sum(comm) if all(c is not None for c in comm) else None,
            "max_abs_err_vs_plain": float(np.abs(got - want).max()),
        })
        jargs = (params, x, y, t0)
    else:
        steps_s = max(t["sample_s"] for t in timings)
        step_bytes = sum(comm) if all(c is not None for c in comm) else None
        xs = x
        for t, c in zip(public["t"], coefs):
            xs = np.asarray(jf(params, xs, y, t, c))
        result.update({
            "seconds": steps_s,
            "seconds_per_step": steps_s / len(ts),
            "bytes_per_step": step_bytes,
            "bytes_total": step_bytes * len(ts) if step_bytes else None,
            "bytes_method": "one profiled step x 50 (same program and shapes every step)",
            "max_abs_err_vs_plain": float(np.abs(got - xs).max()),
            "max_abs_err_vs_cipherdm_reference": float(
                np.abs(got - cases["ddim50.x_0"][:n]).max()),
        })
        jargs = (params, x, y, t0, coefs[0])
    jargs = jax.tree_util.tree_map(jnp.asarray, jargs)
    jax.block_until_ready(jf(*jargs))
    pt = []
    for _ in range(20):
        start = time.perf_counter()
        jax.block_until_ready(jf(*jargs))
        pt.append(time.perf_counter() - start)
    result["plaintext_jax_seconds_per_call"] = statistics.median(pt)
    out = args.out or f"spu_{args.workload}_b{n}.json"
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
