#!/usr/bin/env python3
"""Fit roots q of exp: q^power ~ exp, for softmax `bounded` and for mpc's exp.

Default: softmax `bounded`'s root (crates/nn/src/mpc/kernels.rs, BOUNDED_EXP_ROOT).

The kernel computes exp(x) ~ q(x)^8 for x in [-32, 1/8] (scores minus their row max), with q a
polynomial in tau = (x + 15.9375) / 16.0625. What a softmax row of n scores needs is that the
row's sum moves little: n - 1 entries at the same x move it by (n - 1)|q^8 - e^x| against a sum of
at least 1 + (n - 1) e^x. So we minimise

    E = max_x |q(x)^8 - e^x| / (e^x + 1 / (n - 1)),

relative error where e^x is large, absolute error E / (n - 1) in the tail.

For a fixed E the constraint |q^8 - e^x| <= E w(x) is, per point, a bound on q itself:
    (e^x - E w)^(1/8) <= q(x) <= (e^x + E w)^(1/8)   where e^x > E w (q > 0 there, wlog),
    |q(x)| <= (e^x + E w)^(1/8)                         elsewhere,
which is linear in q's coefficients. So whether E is reachable is a linear feasibility problem,
and bisection on E finds the minimax fit on the grid (no local optimum to get stuck in).

With --absolute the weight is 1 (plain max |q^power - e^x|): mpc's default exp
(crates/mpc/src/nonlinear/exp.rs, RANGE_REDUCED) is
    scripts/fit/exp_root.py --absolute --power 4 --lo -14.5 --hi 0.5 --center 0 --half-width 4

Usage: scripts/fit/exp_root.py [--degree 4] [--power 8] [--row 196] [--points 40001]
           [--absolute] [--lo -32] [--hi 0.125] [--center -15.9375] [--half-width 16.0625]
Needs numpy and scipy (e.g. /tmp/spu-venv/bin/python). Prints the coefficients (constant first)
and the fit's errors on a grid ten times finer.
"""
import argparse

import numpy as np
from scipy.optimize import linprog

# Defaults: the bounded kernel's domain (score limit below, max-tree undershoot above) and the
# scaled variable tau = (x - center) / half_width its polynomial is written in.
LO, HI = -32.0, 0.125
CENTER, HALF_WIDTH = -15.9375, 16.0625


def basis(x, degree, center, half_width):
    return np.vander((x - center) / half_width, degree + 1, increasing=True)


def reachable(E, x, weight, degree, power, center, half_width):
    """Coefficients with |q^power - e^x| <= E weight on the grid x, or None."""
    ex = np.exp(x)
    upper = (ex + E * weight) ** (1.0 / power)
    below = ex - E * weight
    lower = np.where(below > 0, np.maximum(below, 0.0) ** (1.0 / power), -upper)
    v = basis(x, degree, center, half_width)
    res = linprog(
        np.zeros(degree + 1),
        A_ub=np.vstack([v, -v]),
        b_ub=np.concatenate([upper, -lower]),
        bounds=[(None, None)] * (degree + 1),
        method="highs",
    )
    return res.x if res.status == 0 else None


def fit(a):
    x = np.linspace(a.lo, a.hi, a.points)
    weight = np.ones_like(x) if a.absolute else np.exp(x) + 1.0 / (a.row - 1)
    lo, hi, best = 1e-7, 1.0, None
    while hi / lo > 1.001:
        mid = np.sqrt(lo * hi)
        coef = reachable(mid, x, weight, a.degree, a.power, a.center, a.half_width)
        if coef is None:
            lo = mid
        else:
            hi, best = mid, coef
    if best is None:
        raise SystemExit("no fit with E < 1")
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degree", type=int, default=4)
    ap.add_argument("--power", type=int, default=8)
    ap.add_argument("--row", type=int, default=196, help="row length n the weight is for")
    ap.add_argument("--points", type=int, default=40001)
    ap.add_argument("--absolute", action="store_true", help="minimise the plain abs error")
    ap.add_argument("--lo", type=float, default=LO)
    ap.add_argument("--hi", type=float, default=HI)
    ap.add_argument("--center", type=float, default=CENTER)
    ap.add_argument("--half-width", type=float, default=HALF_WIDTH)
    a = ap.parse_args()
    coef = fit(a)

    x = np.linspace(a.lo, a.hi, 10 * a.points)
    q = basis(x, a.degree, a.center, a.half_width) @ coef
    err = np.abs(q**a.power - np.exp(x))
    row = np.max((a.row - 1) * err / (1 + (a.row - 1) * np.exp(x)))
    above3 = x >= -3
    if a.absolute:
        print(f"degree {a.degree}, power {a.power}, absolute error on [{a.lo}, {a.hi}]")
    else:
        print(f"degree {a.degree}, power {a.power}, rows of {a.row}")
        print(f"  E (row-sum relative error, worst case): {row:.4e}")
    print(f"  max |q^{a.power} - exp|:                  {err.max():.4e}")
    print(f"  max relative error above -3:           {np.max(err[above3] / np.exp(x[above3])):.4e}")
    if np.any(x < -12):
        print(f"  max q^{a.power} below -12:                   {np.max(q[x < -12] ** a.power):.4e}")
    print("coefficients (constant first):")
    for c in coef:
        print(f"  {c!r},")


if __name__ == "__main__":
    main()
