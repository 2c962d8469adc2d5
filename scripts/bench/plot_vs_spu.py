#!/usr/bin/env python3
"""Bar chart of a side-by-side run against SPU (the JSON that scripts/bench/vs_spu.sh writes).

One group of bars per op: the speed-up over SPU with robust truncation (like for like) and with
fast truncation, on a log scale, with each op's target from the engine and nonlinear issues
drawn as a tick, and the bytes ratio (SPU's bytes over ours) printed under each group.

    python3 scripts/bench/plot_vs_spu.py target/vs_spu.json docs/vs_spu.png [--title TEXT]

Needs matplotlib (e.g. /tmp/spu-venv/bin/pip install matplotlib: the SPU venv runs the harness
anyway). Refuses a JSON that is not a list of vs_spu.sh rows, naming what is missing.
"""
import argparse
import json
import os
import sys

# The speed-up each op must reach (issues 3 and 4).
TARGETS = {"mul": 10, "matmul": 3, "less": 10, "exp": 10, "silu": 20, "gelu": 10,
           "rsqrt": 10, "softmax": 10}
FIELDS = ("op", "trunc", "speedup", "spu_bytes", "bytes")


def load(path):
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot_vs_spu: cannot read {path}: {e}")
    if not isinstance(rows, list) or not rows:
        sys.exit(f"plot_vs_spu: {path} is not a list of vs_spu.sh rows")
    for i, r in enumerate(rows):
        missing = [k for k in FIELDS if not isinstance(r, dict) or k not in r]
        if missing:
            sys.exit(f"plot_vs_spu: row {i} of {path} lacks {', '.join(missing)}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("png")
    ap.add_argument("--title", default="secdiff vs SPU 0.9.5 (ABY3, 3 processes, same machine)")
    args = ap.parse_args()
    rows = load(args.json)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        sys.exit("plot_vs_spu: needs matplotlib (pip install matplotlib)")

    ops = list(dict.fromkeys(r["op"] for r in rows))
    by = {(r["op"], r["trunc"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=120)
    width = 0.38
    for k, (trunc, colour) in enumerate((("robust", "#1f5fa8"), ("fast", "#9cc3e6"))):
        xs = [i + (k - 0.5) * width for i in range(len(ops))]
        ys = [by[(op, trunc)]["speedup"] if (op, trunc) in by else 0 for op in ops]
        bars = ax.bar(xs, ys, width, color=colour, label=f"{trunc} truncation")
        for b, y in zip(bars, ys):
            if y:
                ax.annotate(f"{y:.1f}x", (b.get_x() + b.get_width() / 2, y), ha="center",
                            va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    for i, op in enumerate(ops):
        if op in TARGETS:
            ax.hlines(TARGETS[op], i - 0.45, i + 0.45, colors="#c0392b", linewidth=1.5,
                      label="target" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([1, 2, 3, 5, 10, 20, 30, 50])
    ax.set_ylabel("speed-up over SPU (SPU time / ours)")
    labels = []
    for op in ops:
        r = by.get((op, "robust")) or next(x for x in rows if x["op"] == op)
        ratio = r["spu_bytes"] / r["bytes"] if r["bytes"] else float("nan")
        labels.append(f"{op}\nbytes /{ratio:.1f}")
    ax.set_xticks(range(len(ops)), labels, fontsize=8)
    ax.set_title(args.title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", which="both", alpha=0.25)
    fig.tight_layout()
    tmp = args.png + ".tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
