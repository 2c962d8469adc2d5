#!/usr/bin/env bash
# Side-by-side benchmark against SecretFlow SPU (ABY3, 3 processes on loopback) on the same
# workloads and machine: for each op, SPU's harness (shared/peers/spu/run_dist.py) runs, then
# `secdiff bench ops --processes` runs with each truncation method (robust is the like-for-like
# column: SPU 0.9.5's ABY3 truncates exactly too), and the ratios are printed. Runs alternate per
# op so that both sides see the same machine load; ROUNDS > 1 repeats the whole alternation and
# reports each side's median over the rounds.
#
#   scripts/bench/vs_spu.sh [mul matmul less exp silu gelu rsqrt softmax]   (default: all)
# Environment: SPU_DIR (default ../shared/peers/spu next to the repo, or /work/shared/peers/spu),
# SPU_PY (default /tmp/spu-venv/bin/python), REPEAT (our timed runs after three warm-ups,
# `mpc::bench::WARMUP_RUNS`, default 5; SPU's harness does two warm-ups and three runs),
# ROUNDS (default 1),
# OUT (JSON of the comparison, default target/vs_spu.json), SETTLE (default 1: after each SPU
# run, run our op once unmeasured first; 0: measure right after SPU).
#
# Why SETTLE: on this VM, whatever runs in the seconds after SPU's processes exit (gigabytes
# freed) runs slower: four alternations of SPU's a_mul then three back-to-back `bench ops` runs
# of the robust 1M product gave 0.025-0.032 s (CPU 0.045-0.054 s) for the run right after SPU
# and 0.021-0.022 s (CPU 0.038-0.040 s) for the third (2026-12-07). SPU itself always starts
# after one of our runs (a few hundred MB at most), so the settle run gives ours that condition.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SPU_DIR=${SPU_DIR:-}
if [ -z "$SPU_DIR" ]; then
  for d in "$ROOT/../shared/peers/spu" /work/shared/peers/spu; do
    [ -f "$d/run_dist.py" ] && SPU_DIR=$d && break
  done
fi
SPU_PY=${SPU_PY:-/tmp/spu-venv/bin/python}
REPEAT=${REPEAT:-5}
ROUNDS=${ROUNDS:-1}
SETTLE=${SETTLE:-1}
OUT=${OUT:-$ROOT/target/vs_spu.json}
[ -f "${SPU_DIR:-}/run_dist.py" ] || { echo "vs_spu: SPU harness not found (set SPU_DIR)" >&2; exit 1; }
[ -x "$SPU_PY" ] || { echo "vs_spu: no SPU python at $SPU_PY (set SPU_PY)" >&2; exit 1; }
OPS=("$@")
[ ${#OPS[@]} -gt 0 ] || OPS=(mul matmul less exp silu gelu rsqrt softmax)

cargo build --release -p cli >/dev/null
SECDIFF=$ROOT/target/release/secdiff
SCRATCH=$(mktemp -d /tmp/vs-spu.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
cp "$SPU_DIR"/{common.py,party.py,run_dist.py} "$SCRATCH"/

declare -A SPU_NAME=([mul]=a_mul [matmul]=b_matmul [less]=h_less [exp]=i_exp [silu]=d_silu
  [gelu]=e_gelu [rsqrt]=f_rsqrt [softmax]=c_softmax)
for round in $(seq 1 "$ROUNDS"); do
  for op in "${OPS[@]}"; do
    name=${SPU_NAME[$op]:-}
    [ -n "$name" ] || { echo "vs_spu: no SPU workload for op $op" >&2; exit 1; }
    echo "== round $round, $op: SPU ($name)" >&2
    (cd "$SCRATCH" && "$SPU_PY" run_dist.py "$name" >"$SCRATCH/spu_$op.log" 2>&1) \
      || { echo "vs_spu: SPU run failed, see its log:" >&2; tail -20 "$SCRATCH/spu_$op.log" >&2; exit 1; }
    cp "$SCRATCH"/results_dist_"$name"*.json "$SCRATCH/spu_${op}_$round.json"
    if [ "$SETTLE" = 1 ]; then
      echo "== round $round, $op: secdiff settle run (not measured)" >&2
      "$SECDIFF" bench ops --processes --ops "$op" --repeat 1 >/dev/null 2>"$SCRATCH/ours_$op.log" \
        || { echo "vs_spu: secdiff settle run failed, see its log:" >&2; tail -20 "$SCRATCH/ours_$op.log" >&2; exit 1; }
    fi
    # Each truncation method in processes of its own, as a session runs one method: measured
    # after the fast one in the same processes (`--trunc both`), the robust 1M product took 4%
    # longer (0.0234 vs 0.0224 s, eight alternations) and 18% longer right after SPU's run.
    for trunc in fast robust; do
      echo "== round $round, $op: secdiff, $trunc truncation (3 processes)" >&2
      "$SECDIFF" bench ops --processes --ops "$op" --trunc "$trunc" --repeat "$REPEAT" \
        --json "$SCRATCH/ours_${op}_${round}_$trunc.json" 2>"$SCRATCH/ours_$op.log" >&2 \
        || { echo "vs_spu: secdiff run failed, see its log:" >&2; tail -20 "$SCRATCH/ours_$op.log" >&2; exit 1; }
    done
    python3 -c 'import json, sys; json.dump(sum((json.load(open(f)) for f in sys.argv[2:]), []), open(sys.argv[1], "w"))' \
      "$SCRATCH/ours_${op}_$round.json" "$SCRATCH/ours_${op}_${round}_fast.json" "$SCRATCH/ours_${op}_${round}_robust.json"
  done
done

python3 - "$SCRATCH" "$OUT" "$ROUNDS" "${OPS[@]}" <<'PY'
import json, os, statistics, sys
scratch, out, rounds, ops = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
med = statistics.median
rows = []
print(f"{'op':<8} {'method':<14} {'trunc':<6} {'SPU s':>8} {'ours s':>8} {'speed-up':>9} {'SPU MB':>8} {'ours MB':>8} {'MB ratio':>9} {'rounds':>6} {'SPU err':>9} {'ours err':>9}")
for op in ops:
    spu = [next(iter(json.load(open(f"{scratch}/spu_{op}_{r}.json")).values())) for r in range(1, rounds + 1)]
    s_t = med([x["spu_median_s"] for x in spu])
    s_b, s_e = spu[0]["comm_total_send_bytes"], spu[0]["max_abs_err"]
    ours = [json.load(open(f"{scratch}/ours_{op}_{r}.json")) for r in range(1, rounds + 1)]
    for i, r in enumerate(ours[0]):
        t = med([o[i]["seconds"] for o in ours])
        row = {"op": op, "method": r["method"], "trunc": r["trunc"], "spu_seconds": s_t,
               "seconds": t, "speedup": s_t / t, "spu_bytes": s_b, "bytes": r["bytes_total"],
               "bytes_ratio": (s_b / r["bytes_total"]) if s_b else None, "rounds": r["rounds"],
               "max_abs_err": max(o[i]["max_abs_err"] for o in ours), "spu_max_abs_err": s_e,
               "spu_runs_s": [x["spu_median_s"] for x in spu], "ours_runs_s": [o[i]["seconds"] for o in ours]}
        rows.append(row)
        mbr = f"{row['bytes_ratio']:.2f}x" if row["bytes_ratio"] else "n/a"
        print(f"{op:<8} {r['method']:<14} {r['trunc']:<6} {s_t:>8.4f} {t:>8.4f} {row['speedup']:>8.1f}x "
              f"{(s_b or 0)/1e6:>8.1f} {r['bytes_total']/1e6:>8.1f} {mbr:>9} {r['rounds']:>6} {s_e:>9.2e} {row['max_abs_err']:>9.2e}")
json.dump(rows, open(out + ".tmp", "w"), indent=1)
os.replace(out + ".tmp", out)
print(f"(speed-up = SPU median / ours median over {rounds} alternating round(s), same machine; JSON: {out})")
PY
