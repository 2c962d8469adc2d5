//! The fixed-point operations every nonlinear function is written in, once.
//!
//! Each function of this module is one generic kernel over [`FxpOps`]. Two engines run it:
//! - the secure engine (three parties on replicated shares), where each op marked *protocol*
//!   below is one vectorised protocol call (one batch of jobs = one call, so rounds do not grow
//!   with the number of elements or of jobs in the batch);
//! - the [`Twin`](super::twin::Twin), which performs the same fixed-point arithmetic in the clear
//!   (same encodings, same truncations, same evaluation order), so the `Approx` backend sees the
//!   errors the secure computation makes, up to the +-1 ulp randomness of secure truncation.
//!
//! Values are fixed-point numbers with `frac_bits` fraction bits in Z_2^64 (two's complement).
//! Public constants are rounded to that grid when they enter a computation.

use super::NonlinearError;

pub type Result<T> = std::result::Result<T, NonlinearError>;

/// Scaled products ([`Fma::scaled`]) are used by the kernels only up to this many fraction
/// bits: at f = 18 a scaled job's value may reach 2^(62 - 3f) = 256; above, kernels fall back to
/// chains of plain products.
pub const SCALED_MAX_FRAC_BITS: u32 = 18;

/// Extra fraction bits of the scales `FxpOps::pow2_scale` returns.
pub const POW2_GUARD_BITS: i32 = 8;

/// A public coefficient in a fused sum: one scalar, or one value per element.
#[derive(Clone, Copy, Debug)]
pub enum Coef<'a> {
    Scalar(f64),
    PerElement(&'a [f64]),
}

/// One fused, truncated sum of products (the workhorse of every polynomial):
///
///   y = ( sum_i a_i * b_i  +  sum_j c_j * x_j ) * 2^-extra_shift  +  constant
///
/// computed exactly at 2f fraction bits (every term is a product of two f-bit numbers; the
/// constant is encoded at 2f + extra_shift bits) and truncated once by f + extra_shift bits. Under MPC the products are local 3-term
/// products and the public-coefficient terms are local too, so the whole job costs one
/// multiplication-with-truncation, whatever its number of terms.
#[derive(Clone, Debug)]
pub struct Fma<'a, A> {
    pub products: Vec<(&'a A, &'a A)>,
    /// Products with a public coefficient, `c * a * b`, computed exactly at 3f fraction bits:
    /// a job with any of these truncates by 2f + `extra_shift` bits and is always truncated
    /// robustly (its un-truncated magnitude |v| 2^(3f) would make a fast truncation fail with
    /// probability |v| 2^(3f - 64)); its true value must stay below 2^(62 - 3f) (256 at f = 18).
    /// See [`SCALED_MAX_FRAC_BITS`].
    pub scaled: Vec<(&'a A, &'a A, f64)>,
    pub linear: Vec<(&'a A, Coef<'a>)>,
    pub constant: f64,
    /// Added to the truncation: the job truncates by `f + extra_shift` bits, i.e. multiplies the
    /// result by 2^-extra_shift exactly, without a second truncation (`f + extra_shift >= 0`).
    pub extra_shift: i32,
    /// Truncate this job robustly whatever the session's method: for products whose magnitude
    /// (e.g. a result of 1000, or a scale with guard bits) would make a fast truncation's
    /// failure (probability |z| / 2^64) likely.
    pub robust: bool,
}

impl<'a, A> Fma<'a, A> {
    /// `a * b`.
    pub fn mul(a: &'a A, b: &'a A) -> Self {
        Fma {
            products: vec![(a, b)],
            scaled: vec![],
            linear: vec![],
            constant: 0.0,
            extra_shift: 0,
            robust: false,
        }
    }
    /// `c * x + constant` with a public fixed-point coefficient.
    pub fn affine(x: &'a A, c: f64, constant: f64) -> Self {
        Fma {
            products: vec![],
            scaled: vec![],
            linear: vec![(x, Coef::Scalar(c))],
            constant,
            extra_shift: 0,
            robust: false,
        }
    }
    /// Adds `c * x`.
    pub fn plus(mut self, x: &'a A, c: f64) -> Self {
        self.linear.push((x, Coef::Scalar(c)));
        self
    }
    /// Adds `a * b`.
    pub fn plus_product(mut self, a: &'a A, b: &'a A) -> Self {
        self.products.push((a, b));
        self
    }
    /// Adds `c * a * b` (see [`Fma::scaled`]).
    pub fn plus_scaled_product(mut self, a: &'a A, b: &'a A, c: f64) -> Self {
        self.scaled.push((a, b, c));
        self
    }
    /// A job with no terms yet (add them with the `plus_*` methods).
    pub fn constant(c: f64) -> Self {
        Fma {
            products: vec![],
            scaled: vec![],
            linear: vec![],
            constant: c,
            extra_shift: 0,
            robust: false,
        }
    }
    /// The extra fraction bits of this job's accumulator: f if it has scaled products (their
    /// coefficients carry f bits), else 0.
    pub fn coef_bits(&self, frac_bits: u32) -> u32 {
        if self.scaled.is_empty() {
            0
        } else {
            frac_bits
        }
    }
    /// Forces the robust truncation for this job.
    pub fn robust(mut self) -> Self {
        self.robust = true;
        self
    }
    /// Adds a public constant.
    pub fn plus_const(mut self, c: f64) -> Self {
        self.constant += c;
        self
    }
}

/// A comparison `x < threshold` whose answer may be wrong when `|x - threshold| < resolution`,
/// for inputs with `|x - threshold| < bound`. Both promises let the secure engine compare on
/// a few high bits instead of 64 (reduced-width comparison): the kernels are written so that
/// either answer near the threshold gives the right function value.
#[derive(Clone, Copy, Debug)]
pub struct Threshold {
    pub below: f64,
    /// `|x - below|` is smaller than this for every input in the function's domain; larger
    /// differences give an arbitrary answer.
    pub bound: f64,
    /// Answers are exact when `|x - below| >= resolution`. Zero asks for an exact comparison.
    pub resolution: f64,
}

impl Threshold {
    /// How the secure engine compares at `frac_bits`: `(dropped, width)`: it drops the
    /// `dropped` low bits of `x - below` (their carry can shift the result by at most 2 units of
    /// 2^dropped, inside the resolution) and takes the sign of the `width`-bit rest.
    pub fn sign_width(&self, frac_bits: u32) -> (u32, usize) {
        let scale = (frac_bits as f64).exp2();
        let bound_raw = (self.bound * scale).max(2.0);
        if !bound_raw.is_finite() || bound_raw >= 2f64.powi(62) {
            return (0, 64);
        }
        if self.resolution <= 0.0 {
            return (0, (bound_raw.log2().ceil() as usize + 1).min(64));
        }
        // 2^(dropped + 1) <= resolution: the carry's error stays inside the resolution.
        let dropped = ((self.resolution * scale).log2().floor() as i64 - 1).max(0) as u32;
        let span = bound_raw / (dropped as f64).exp2() + 3.0;
        let width = (span.log2().ceil() as usize + 1).min(64 - dropped as usize);
        (dropped, width)
    }
}

/// Which bit planes of a positive input form which exponent group in `pow2_scale`, and the bit
/// position of each group's scale (times 2^POW2_GUARD_BITS) in the ring. Shared by the secure
/// engine and the cost statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pow2Layout {
    /// The input is below 2^planes as an integer: planes 0..planes are converted.
    pub planes: usize,
    /// For each group, by ascending exponent: its planes (one, or two when root = 2).
    pub groups: Vec<Vec<usize>>,
    /// For each group: the bit position of its scale.
    pub pos: Vec<u32>,
}

impl Pow2Layout {
    pub fn new(frac_bits: u32, root: u32, lo: i32, hi: i32) -> Result<Pow2Layout> {
        let fi = frac_bits as i32;
        let r = root as i32;
        let planes = hi + fi;
        if !(1..=2).contains(&root) || hi <= lo || lo + fi < 0 || planes > 63 {
            return Err(NonlinearError::Range {
                op: "pow2_scale",
                detail: format!("root {root}, exponents [{lo}, {hi}) at {frac_bits} fraction bits"),
            });
        }
        // MSB at plane q: x in [2^(q-f), 2^(q-f+1)), e = smallest multiple of root >= q-f+1.
        let e_of = |q: i32| {
            let t = q - fi + 1;
            t.div_euclid(r) * r + if t.rem_euclid(r) == 0 { 0 } else { r }
        };
        let (e_min, e_max) = (e_of(lo + fi), e_of(planes - 1));
        let (mut groups, mut pos) = (Vec::new(), Vec::new());
        let mut e = e_min;
        while e <= e_max {
            let members: Vec<usize> = (lo + fi..planes)
                .filter(|&q| e_of(q) == e)
                .map(|q| q as usize)
                .collect();
            let p = fi - e / r + POW2_GUARD_BITS;
            if !(0..62).contains(&p) {
                return Err(NonlinearError::Range {
                    op: "pow2_scale",
                    detail: format!("scale 2^{} does not fit {frac_bits} fraction bits", -e / r),
                });
            }
            groups.push(members);
            pos.push(p as u32);
            e += r;
        }
        Ok(Pow2Layout {
            planes: planes as usize,
            groups,
            pos,
        })
    }

    /// The injection's truncation: the largest scale goes to bit 61 first.
    pub fn inject_shift(&self) -> u32 {
        61 - self.pos.iter().copied().max().unwrap_or(0)
    }

    /// Bits of R0's injection message per element, for each group.
    pub fn inject_widths(&self) -> Vec<u32> {
        let d = self.inject_shift();
        self.pos.iter().map(|p| 63 - (p + d)).collect()
    }

    /// Planes ANDed by the suffix OR at each doubling level over the groups 1..J.
    pub fn suffix_levels(&self) -> Vec<usize> {
        let m = self.groups.len().saturating_sub(1);
        let mut v = Vec::new();
        let mut span = 1;
        while span < m {
            v.push(m - span);
            span *= 2;
        }
        v
    }

    /// Two-plane groups among 1..J (each costs one AND).
    pub fn pair_groups(&self) -> usize {
        self.groups.iter().skip(1).filter(|g| g.len() == 2).count()
    }
}

/// The operations of a fixed-point engine. `A` is a flat tensor of fixed-point numbers, `B` a
/// flat tensor of bits (one per element). Shapes are the caller's business: every op is
/// elementwise on equal lengths unless stated.
pub trait FxpOps {
    type A: Clone;
    type B: Clone;

    /// Fraction bits f of the encoding.
    fn frac_bits(&self) -> u32;
    fn len(&self, a: &Self::A) -> usize;

    // ---- local: free in every engine --------------------------------------------------------
    /// A public tensor (every party knows it).
    fn public(&self, values: &[f64]) -> Self::A;
    fn add(&self, a: &Self::A, b: &Self::A) -> Result<Self::A>;
    fn sub(&self, a: &Self::A, b: &Self::A) -> Result<Self::A>;
    fn add_const(&self, a: &Self::A, c: f64) -> Self::A;
    /// Exact multiplication by an integer (no truncation needed).
    fn mul_int(&self, a: &Self::A, k: i64) -> Self::A;
    /// Sums of consecutive runs of `run` elements (len must be a multiple of `run`).
    fn run_sums(&self, a: &Self::A, run: usize) -> Result<Self::A>;
    /// Each element repeated `times` times in place ([a, b] -> [a, a, b, b] for 2).
    fn repeat_each(&self, a: &Self::A, times: usize) -> Self::A;
    /// The elements at `index` (a local gather; indices may repeat).
    fn gather(&self, a: &Self::A, index: &[usize]) -> Result<Self::A>;
    /// The tensors one after the other.
    fn concat(&self, parts: &[&Self::A]) -> Self::A;
    fn not(&self, b: &Self::B) -> Self::B;
    fn xor(&self, a: &Self::B, b: &Self::B) -> Result<Self::B>;

    // ---- protocols (each call is one batch: its rounds do not depend on the batch) ----------
    /// Fused multiply-adds with one truncation each.
    fn fma(&self, jobs: &[Fma<'_, Self::A>]) -> Result<Vec<Self::A>>;
    /// Per run of `run` consecutive elements: `sum a_i * b_i`, truncated once by `shift` bits
    /// (`shift = f` gives the plain fixed-point dot product; a smaller shift keeps `f - shift`
    /// extra fraction bits). Costs one truncation per run, not per element.
    fn dot_runs(&self, a: &Self::A, b: &Self::A, run: usize, shift: u32) -> Result<Self::A>;
    /// Comparisons `x < threshold`.
    fn less_than(&self, jobs: &[(&Self::A, Threshold)]) -> Result<Vec<Self::B>>;
    /// `b ? a : 0`, exact (no truncation).
    fn select(&self, jobs: &[(&Self::B, &Self::A)]) -> Result<Vec<Self::A>>;
    /// For positive `x` in `[2^lo, 2^hi)`: the power of two `s = 2^(-e/root)`, with `e` the
    /// smallest multiple of `root` such that `x * 2^-e < 1` (so `x * 2^-e` lies in
    /// `[2^-root, 1)`), returned as `s * 2^POW2_GUARD_BITS` (users multiply by it with
    /// `extra_shift = POW2_GUARD_BITS`). The secure engine may return it 1 raw unit off (a
    /// relative error below 2^-11, harmless because callers undo the scaling with the same `s`).
    /// Inputs below `2^lo` get the scale of `2^lo`; inputs at or above `2^hi` and `x <= 0` are
    /// undefined.
    fn pow2_scale(&self, x: &Self::A, root: u32, lo: i32, hi: i32) -> Result<Self::A>;

    // ---- conveniences built on the above -----------------------------------------------------
    fn mul(&self, a: &Self::A, b: &Self::A) -> Result<Self::A> {
        Ok(self.fma(&[Fma::mul(a, b)])?.remove(0))
    }
    fn affine(&self, x: &Self::A, c: f64, constant: f64) -> Result<Self::A> {
        Ok(self.fma(&[Fma::affine(x, c, constant)])?.remove(0))
    }
    fn neg(&self, a: &Self::A) -> Self::A {
        self.mul_int(a, -1)
    }
}
