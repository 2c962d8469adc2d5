"""One SPU party of scripts/bench/spu_cipherdm.py (the driver starts three of them).

Usage: spu_cipherdm_party.py RANK WORKDIR BASEPORT WORKLOAD RUNS
Reads exe.bin and inputs_rank{RANK}.pkl from WORKDIR, runs the workload, writes
timing_rank{RANK}.json and out_rank{RANK}.pkl (the output's shares). SPU prints
"Link details: total send bytes ..." after each profiled run; the driver reads it from the log.
"""
import json
import pickle
import sys
import time


def make_config(profile=False):
    import spu.libspu as libspu

    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.ABY3, field=libspu.FieldType.FM64,
                               fxp_fraction_bits=18)
    if profile:
        cfg.enable_pphlo_profile = True
        cfg.enable_hal_profile = True
    return cfg


def main():
    import numpy as np
    import spu.api as spu_api
    import spu.libspu as libspu

    rank, wd, base, workload, runs = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                      sys.argv[4], int(sys.argv[5]))
    desc = libspu.link.Desc()
    for r in range(3):
        desc.add_party(f"id_{r}", f"127.0.0.1:{base + r}")
    desc.recv_timeout_ms = 3600 * 1000
    desc.http_timeout_ms = 600 * 1000
    desc.connect_retry_times = 120
    desc.connect_retry_interval_ms = 500
    lctx = libspu.link.create_brpc(desc, rank)

    exe = libspu.Executable()
    exe.ParseFromString(open(f"{wd}/exe.bin", "rb").read())
    inputs = pickle.load(open(f"{wd}/inputs_rank{rank}.pkl", "rb"))
    n_secret = inputs["n_secret"]
    io = spu_api.Io(3, make_config())

    def share(d):
        s = libspu.Share()
        s.meta, s.share_chunks = d["meta"], d["chunks"]
        return s

    secret = [share(d) for d in inputs["secret"]]
    x_name = exe.input_names[n_secret - 2]

    def public(step):
        values = [inputs["public"]["t"][step]]
        if workload == "ddim50":
            values.append(inputs["public"]["c"][step])
        return [io.make_shares(np.asarray(v), libspu.Visibility.VIS_PUBLIC)[rank] for v in values]

    def load(rt, step, x_share):
        for name, s in zip(exe.input_names[:n_secret], secret):
            rt.set_var(name, s)
        if x_share is not None:
            rt.set_var(x_name, x_share)
        for name, s in zip(exe.input_names[n_secret:], public(step)):
            rt.set_var(name, s)

    def run(rt, step, x_share=None):
        load(rt, step, x_share)
        lctx.barrier()
        start = time.perf_counter()
        rt.run(exe)
        elapsed = time.perf_counter() - start
        lctx.barrier()
        return elapsed

    res = {"rank": rank}
    profiled = spu_api.Runtime(lctx, make_config(profile=True))
    res["profiled_s"] = run(profiled, 0)
    sys.stdout.flush()
    rt = spu_api.Runtime(lctx, make_config())
    if workload == "forward":
        res["warmup_s"] = run(rt, 0)
        res["runs_s"] = [run(rt, 0) for _ in range(runs)]
        out = rt.get_var(exe.output_names[0])
    else:
        steps = len(inputs["public"]["t"])
        lctx.barrier()
        start = time.perf_counter()
        x_share = None
        for step in range(steps):
            load(rt, step, x_share)
            rt.run(exe)
            x_share = rt.get_var(exe.output_names[0])
        lctx.barrier()
        res["sample_s"] = time.perf_counter() - start
        out = x_share
    pickle.dump({"meta": out.meta, "chunks": list(out.share_chunks)},
                open(f"{wd}/out_rank{rank}.pkl", "wb"))
    json.dump(res, open(f"{wd}/timing_rank{rank}.json", "w"))
    lctx.stop_link()


if __name__ == "__main__":
    main()
