#!/usr/bin/env bash
# The decisive comparison: SecretFlow SPU against secdiff on CipherDM's exact model
# (cipherdm-mnist: weights, image and label secret, ABY3, 3 processes on loopback, 18 fraction
# bits), on the same inputs (tests/data/cipherdm-mnist/cases.safetensors: ddim50.x_T, ddim50.y),
# measured in one run on this machine, with the ratios printed at the end. SPU compiles with
# enable_optimize_denominator_with_broadcast (softmax as a reciprocal per row and a product, the
# configuration of the issue's SPU figures; spu_cipherdm.py --plain-divide gives SPU's default).
#
#   scripts/bench/spu_sample_side_by_side.sh [--batch 4] [--ddim50] [--spu-ddim50-json FILE]
#
# - forward: one U-Net forward at batch --batch. SPU: scripts/bench/spu_cipherdm.py (median of 3
#   runs). secdiff: `bench sample --steps 1` (one DDIM step = one forward plus a clamp and four
#   public scalings, under 0.2% of the bytes), run before and after SPU, mean of the two.
# - --ddim50: the DDIM-50 sample at batch 1 (SPU takes about 10 minutes here; pass a result of an
#   earlier spu_cipherdm.py --workload ddim50 run with --spu-ddim50-json to reuse it).
# SPU: /tmp/spu-venv/bin/python with spu 0.9.5, jax 0.4.34, flax 0.9.0 (set SPU_PY), installed by
#   python3 -m venv /tmp/spu-venv && /tmp/spu-venv/bin/pip install spu==0.9.5 \
#       'jax[cpu]==0.4.34' 'jaxlib==0.4.34' 'flax==0.9.0'
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SPU_PY=${SPU_PY:-/tmp/spu-venv/bin/python}
BATCH=4
DDIM=0
SPU_DDIM_JSON=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --batch) BATCH="$2"; shift 2 ;;
        --ddim50) DDIM=1; shift ;;
        --spu-ddim50-json) SPU_DDIM_JSON="$2"; DDIM=1; shift 2 ;;
        *) echo "usage: $0 [--batch N] [--ddim50] [--spu-ddim50-json FILE]" >&2; exit 2 ;;
    esac
done
[[ -x "$SPU_PY" ]] || { echo "no SPU python at $SPU_PY (set SPU_PY)" >&2; exit 2; }
cargo build --release -p cli >/dev/null
SECDIFF=$ROOT/target/release/secdiff
CASES=$ROOT/tests/data/cipherdm-mnist/cases.safetensors
OUT=$(mktemp -d /tmp/spu-sbs.XXXXXX)
echo "side by side: results in $OUT"

ours() { # $1 json, rest: bench sample args
    local json="$1"; shift
    "$SECDIFF" bench sample --cases "$CASES" --json "$json" "$@" >&2
}

ours "$OUT/ours_fwd_1.json" --steps 1 --batch "$BATCH"
"$SPU_PY" scripts/bench/spu_cipherdm.py --workload forward --batch "$BATCH" --runs 3 \
    --out "$OUT/spu_fwd.json" >/dev/null
ours "$OUT/ours_fwd_2.json" --steps 1 --batch "$BATCH"
if [[ $DDIM == 1 ]]; then
    ours "$OUT/ours_ddim50.json" --steps 50 --batch 1
    if [[ -z "$SPU_DDIM_JSON" ]]; then
        SPU_DDIM_JSON="$OUT/spu_ddim50.json"
        "$SPU_PY" scripts/bench/spu_cipherdm.py --workload ddim50 --batch 1 \
            --out "$SPU_DDIM_JSON" >/dev/null
    fi
fi

python3 - "$OUT" "$BATCH" "$DDIM" "$SPU_DDIM_JSON" <<'EOF'
import json, sys
out, batch, ddim, spu_ddim = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
load = lambda p: json.load(open(p))
o1, o2 = load(f"{out}/ours_fwd_1.json")[0], load(f"{out}/ours_fwd_2.json")[0]
spu = load(f"{out}/spu_fwd.json")
ours_s = (o1["mpc_seconds"] + o2["mpc_seconds"]) / 2
rows = [("forward, batch %d" % batch, spu["seconds"], ours_s, spu["bytes_total"],
         o1["bytes_total"], spu["max_abs_err_vs_plain"], None)]
if ddim:
    o, s = load(f"{out}/ours_ddim50.json")[0], load(spu_ddim)
    rows.append(("DDIM-50, batch 1", s["seconds"], o["mpc_seconds"], s["bytes_total"],
                 o["bytes_total"], s["max_abs_err_vs_plain"], o["max_abs_diff_vs_plain"]))
print("| workload | SPU s | secdiff s | speed-up | SPU MB | secdiff MB | bytes ratio | SPU err | secdiff err |")
print("|---|---|---|---|---|---|---|---|---|")
for name, ss, os_, sb, ob, se, oe in rows:
    oe = "see tests (forward)" if oe is None else "%.2e" % oe
    print(f"| {name} | {ss:.2f} | {os_:.2f} | {ss / os_:.1f}x | {sb / 1e6:.0f} | {ob / 1e6:.0f} | "
          f"{sb / ob:.2f}x fewer | {se:.2e} | {oe} |")
json.dump({"rows": rows}, open(f"{out}/side_by_side.json", "w"), indent=1)
EOF
