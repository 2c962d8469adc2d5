#!/usr/bin/env bash
# Side-by-side benchmark against SecretFlow SPU (ABY3, 3 processes on loopback) on the same
# workloads and machine: for each op, SPU's harness (shared/peers/spu/run_dist.py) runs, then
# `secdiff bench ops --processes` runs with both truncation methods, and the ratios are printed.
# Runs alternate per op so that both sides see the same machine load.
#
#   scripts/bench/vs_spu.sh [mul matmul less]      (default: all three)
# Environment: SPU_DIR (default ../shared/peers/spu next to the repo, or /work/shared/peers/spu),
# SPU_PY (default /tmp/spu-venv/bin/python), REPEAT (our timed runs, default 3),
# OUT (JSON of the comparison, default target/vs_spu.json).
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
REPEAT=${REPEAT:-3}
OUT=${OUT:-$ROOT/target/vs_spu.json}
[ -f "${SPU_DIR:-}/run_dist.py" ] || { echo "vs_spu: SPU harness not found (set SPU_DIR)" >&2; exit 1; }
[ -x "$SPU_PY" ] || { echo "vs_spu: no SPU python at $SPU_PY (set SPU_PY)" >&2; exit 1; }
OPS=("$@")
[ ${#OPS[@]} -gt 0 ] || OPS=(mul matmul less)

cargo build --release -p cli >/dev/null
SECDIFF=$ROOT/target/release/secdiff
SCRATCH=$(mktemp -d /tmp/vs-spu.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
cp "$SPU_DIR"/{common.py,party.py,run_dist.py} "$SCRATCH"/

declare -A SPU_NAME=([mul]=a_mul [matmul]=b_matmul [less]=h_less)
for op in "${OPS[@]}"; do
  name=${SPU_NAME[$op]:-}
  [ -n "$name" ] || { echo "vs_spu: no SPU workload for op $op" >&2; exit 1; }
  echo "== $op: SPU ($name)" >&2
  (cd "$SCRATCH" && "$SPU_PY" run_dist.py "$name" >"$SCRATCH/spu_$op.log" 2>&1) \
    || { echo "vs_spu: SPU run failed, see its log:" >&2; tail -20 "$SCRATCH/spu_$op.log" >&2; exit 1; }
  cp "$SCRATCH/results_dist_$name.json" "$SCRATCH/spu_$op.json"
  echo "== $op: secdiff (3 processes)" >&2
  "$SECDIFF" bench ops --processes --ops "$op" --method both --repeat "$REPEAT" \
    --json "$SCRATCH/ours_$op.json" 2>/dev/null >&2
done

python3 - "$SCRATCH" "$OUT" "${OPS[@]}" <<'PY'
import json, sys
scratch, out, ops = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
print(f"{'op':<7} {'method':<7} {'SPU s':>8} {'ours s':>8} {'speed-up':>9} {'SPU MB':>8} {'ours MB':>8} {'MB ratio':>9} {'ours rounds':>11} {'ours max err':>12}")
for op in ops:
    spu = next(iter(json.load(open(f"{scratch}/spu_{op}.json")).values()))
    s_t, s_b = spu["spu_median_s"], spu["comm_total_send_bytes"]
    for r in json.load(open(f"{scratch}/ours_{op}.json")):
        row = {"op": op, "method": r["method"], "spu_seconds": s_t, "seconds": r["seconds"],
               "speedup": s_t / r["seconds"], "spu_bytes": s_b, "bytes": r["bytes_total"],
               "bytes_ratio": (s_b / r["bytes_total"]) if s_b else None, "rounds": r["rounds"],
               "max_abs_err": r["max_abs_err"], "spu_max_abs_err": spu["max_abs_err"]}
        rows.append(row)
        mbr = f"{row['bytes_ratio']:.2f}x" if row["bytes_ratio"] else "n/a"
        print(f"{op:<7} {r['method']:<7} {s_t:>8.4f} {r['seconds']:>8.4f} {row['speedup']:>8.1f}x "
              f"{(s_b or 0)/1e6:>8.1f} {r['bytes_total']/1e6:>8.1f} {mbr:>9} {r['rounds']:>11} {r['max_abs_err']:>12.2e}")
json.dump(rows, open(out + ".tmp", "w"), indent=1)
import os; os.replace(out + ".tmp", out)
print(f"(speed-up = SPU median / ours median, same machine, alternating runs; JSON: {out})")
PY
