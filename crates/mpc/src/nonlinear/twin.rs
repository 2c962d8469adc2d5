//! The plaintext twin: runs the nonlinear kernels on clear fixed-point numbers with exactly the
//! arithmetic of the secure engine (Z_2^64 two's complement, f fraction bits, one floor
//! truncation per fused multiply-add, constants rounded to the grid). The `Approx` backend uses
//! it through the `*_f64` helpers of each function; tests use it as the secure protocol's
//! reference.
//!
//! Differences from the secure engine, by design: the twin rounds each truncation to nearest,
//! where secure truncation lands within 1.5 ulp at random (unbiased; floor or floor + 1 for a
//! standalone truncation), and reduced-width comparisons may answer either way within their
//! stated resolution (the twin answers exactly). Every kernel is written so that neither changes
//! the result by more than a few ulps.

use std::cell::RefCell;

use super::ops::{Coef, Fma, FxpOps, Result, Threshold, POW2_GUARD_BITS};
use super::NonlinearError;

/// One protocol call the twin performed, with what its cost depends on (see `cost`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TwinCall {
    /// Fused multiply-adds: per job (elements, has secret products, truncated bits, forced
    /// robust).
    Fma(Vec<(usize, bool, u32, bool)>),
    /// Run dot products: runs out, truncated bits.
    DotRuns(usize, u32),
    /// Comparisons: per job (elements, width of the sign test).
    LessThan(Vec<(usize, usize)>),
    /// Selects: elements per job.
    Select(Vec<usize>),
    /// Power-of-two normalisation: elements, root, lo, hi.
    Pow2Scale(usize, u32, i32, i32),
}

/// The clear fixed-point engine.
pub struct Twin {
    frac_bits: u32,
    log: RefCell<Vec<TwinCall>>,
}

impl Twin {
    pub fn new(frac_bits: u32) -> Self {
        Twin {
            frac_bits,
            log: RefCell::new(Vec::new()),
        }
    }

    /// Encode reals to the fixed-point grid (round to nearest; saturates at the ring's range).
    pub fn encode(&self, x: &[f64]) -> Vec<i64> {
        x.iter().map(|&v| self.raw(v)).collect()
    }

    pub fn decode(&self, x: &[i64]) -> Vec<f64> {
        let s = (self.frac_bits as f64).exp2();
        x.iter().map(|&v| v as f64 / s).collect()
    }

    /// The protocol calls made since the last `take_log`.
    pub fn take_log(&self) -> Vec<TwinCall> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    fn raw(&self, v: f64) -> i64 {
        (v * (self.frac_bits as f64).exp2()).round() as i64
    }

    fn same_len(&self, what: &'static str, a: usize, b: usize) -> Result<()> {
        if a == b {
            Ok(())
        } else {
            Err(NonlinearError::Shape {
                op: what,
                detail: format!("lengths {a} and {b}"),
            })
        }
    }
}

impl FxpOps for Twin {
    type A = Vec<i64>;
    type B = Vec<bool>;

    fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    fn len(&self, a: &Self::A) -> usize {
        a.len()
    }

    fn public(&self, values: &[f64]) -> Self::A {
        self.encode(values)
    }

    fn add(&self, a: &Self::A, b: &Self::A) -> Result<Self::A> {
        self.same_len("add", a.len(), b.len())?;
        Ok(a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect())
    }

    fn sub(&self, a: &Self::A, b: &Self::A) -> Result<Self::A> {
        self.same_len("sub", a.len(), b.len())?;
        Ok(a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect())
    }

    fn add_const(&self, a: &Self::A, c: f64) -> Self::A {
        let c = self.raw(c);
        a.iter().map(|x| x.wrapping_add(c)).collect()
    }

    fn mul_int(&self, a: &Self::A, k: i64) -> Self::A {
        a.iter().map(|x| x.wrapping_mul(k)).collect()
    }

    fn run_sums(&self, a: &Self::A, run: usize) -> Result<Self::A> {
        if run == 0 || a.len() % run != 0 {
            return Err(NonlinearError::Shape {
                op: "run_sums",
                detail: format!("length {} is not a multiple of {run}", a.len()),
            });
        }
        Ok(a.chunks(run)
            .map(|c| c.iter().fold(0i64, |s, v| s.wrapping_add(*v)))
            .collect())
    }

    fn repeat_each(&self, a: &Self::A, times: usize) -> Self::A {
        a.iter()
            .flat_map(|v| std::iter::repeat_n(*v, times))
            .collect()
    }

    fn gather(&self, a: &Self::A, index: &[usize]) -> Result<Self::A> {
        index
            .iter()
            .map(|&i| {
                a.get(i).copied().ok_or(NonlinearError::Shape {
                    op: "gather",
                    detail: format!("index {i} out of {}", a.len()),
                })
            })
            .collect()
    }

    fn concat(&self, parts: &[&Self::A]) -> Self::A {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    fn not(&self, b: &Self::B) -> Self::B {
        b.iter().map(|v| !v).collect()
    }

    fn xor(&self, a: &Self::B, b: &Self::B) -> Result<Self::B> {
        self.same_len("xor", a.len(), b.len())?;
        Ok(a.iter().zip(b).map(|(x, y)| x ^ y).collect())
    }

    fn dot_runs(&self, a: &Self::A, b: &Self::A, run: usize, shift: u32) -> Result<Self::A> {
        self.same_len("dot_runs", a.len(), b.len())?;
        if run == 0 || a.len() % run != 0 {
            return Err(NonlinearError::Shape {
                op: "dot_runs",
                detail: format!("length {} is not a multiple of {run}", a.len()),
            });
        }
        let out: Vec<i64> = a
            .chunks(run)
            .zip(b.chunks(run))
            .map(|(x, y)| {
                let acc = x
                    .iter()
                    .zip(y)
                    .fold(0i64, |s, (u, v)| s.wrapping_add(u.wrapping_mul(*v)));
                round_shift(acc, shift)
            })
            .collect();
        self.log
            .borrow_mut()
            .push(TwinCall::DotRuns(out.len(), shift));
        Ok(out)
    }

    fn fma(&self, jobs: &[Fma<'_, Self::A>]) -> Result<Vec<Self::A>> {
        let f = self.frac_bits;
        let mut out = Vec::with_capacity(jobs.len());
        let mut info = Vec::with_capacity(jobs.len());
        for job in jobs {
            let n = job_len(job).ok_or(NonlinearError::Shape {
                op: "fma",
                detail: "a job has no terms or terms of different lengths".into(),
            })?;
            let g = job.coef_bits(f);
            let shift = f as i32 + g as i32 + job.extra_shift;
            if !(0..63).contains(&shift) {
                return Err(NonlinearError::Range {
                    op: "fma",
                    detail: format!("truncation by {shift} bits"),
                });
            }
            let constant = (job.constant * ((f as i32 + shift) as f64).exp2()).round() as i64;
            let mut acc = vec![constant; n];
            for (a, b) in &job.products {
                for ((s, x), y) in acc.iter_mut().zip(a.iter()).zip(b.iter()) {
                    *s = s.wrapping_add(x.wrapping_mul(*y) << g);
                }
            }
            for (a, b, c) in &job.scaled {
                let c = self.raw(*c);
                for ((s, x), y) in acc.iter_mut().zip(a.iter()).zip(b.iter()) {
                    *s = s.wrapping_add(x.wrapping_mul(*y).wrapping_mul(c));
                }
            }
            for (x, c) in &job.linear {
                match c {
                    Coef::Scalar(c) => {
                        let c = self.raw(*c) << g;
                        for (s, v) in acc.iter_mut().zip(x.iter()) {
                            *s = s.wrapping_add(v.wrapping_mul(c));
                        }
                    }
                    Coef::PerElement(cs) => {
                        if cs.len() != n {
                            return Err(NonlinearError::Shape {
                                op: "fma",
                                detail: format!("{} coefficients for {n} elements", cs.len()),
                            });
                        }
                        for ((s, v), c) in acc.iter_mut().zip(x.iter()).zip(cs.iter()) {
                            *s = s.wrapping_add(v.wrapping_mul(self.raw(*c) << g));
                        }
                    }
                }
            }
            out.push(
                acc.into_iter()
                    .map(|v| round_shift(v, shift as u32))
                    .collect(),
            );
            let scaled = !job.scaled.is_empty();
            info.push((
                n,
                !job.products.is_empty() || scaled,
                shift as u32,
                job.robust || scaled,
            ));
        }
        self.log.borrow_mut().push(TwinCall::Fma(info));
        Ok(out)
    }

    fn less_than(&self, jobs: &[(&Self::A, Threshold)]) -> Result<Vec<Self::B>> {
        self.log.borrow_mut().push(TwinCall::LessThan(
            jobs.iter()
                .map(|(a, t)| (a.len(), t.sign_width(self.frac_bits).1))
                .collect(),
        ));
        Ok(jobs
            .iter()
            .map(|(a, t)| {
                let c = self.raw(t.below);
                a.iter().map(|&v| v < c).collect()
            })
            .collect())
    }

    fn select(&self, jobs: &[(&Self::B, &Self::A)]) -> Result<Vec<Self::A>> {
        let mut out = Vec::with_capacity(jobs.len());
        for (b, a) in jobs {
            self.same_len("select", b.len(), a.len())?;
            out.push(
                b.iter()
                    .zip(a.iter())
                    .map(|(&b, &v)| if b { v } else { 0 })
                    .collect(),
            );
        }
        self.log.borrow_mut().push(TwinCall::Select(
            jobs.iter().map(|(_, a)| a.len()).collect(),
        ));
        Ok(out)
    }

    fn pow2_scale(&self, x: &Self::A, root: u32, lo: i32, hi: i32) -> Result<Self::A> {
        let f = self.frac_bits as i32;
        let root_i = root as i32;
        self.log
            .borrow_mut()
            .push(TwinCall::Pow2Scale(x.len(), root, lo, hi));
        x.iter()
            .map(|&v| {
                let msb = if v <= 0 {
                    0
                } else {
                    63 - v.leading_zeros() as i32
                };
                // The input's binary exponent, clamped to the promised range.
                let p = (msb - f).clamp(lo, hi - 1);
                // Smallest multiple of `root` that is >= p + 1.
                let e = (p + 1).div_euclid(root_i) * root_i
                    + if (p + 1).rem_euclid(root_i) == 0 {
                        0
                    } else {
                        root_i
                    };
                let exp = f - e / root_i + POW2_GUARD_BITS;
                if !(0..63).contains(&exp) {
                    return Err(NonlinearError::Range {
                        op: "pow2_scale",
                        detail: format!("scale 2^{} does not fit {f} fraction bits", -e / root_i),
                    });
                }
                Ok(1i64 << exp)
            })
            .collect()
    }
}

/// `v / 2^shift` rounded to nearest (ties up). Secure truncation is unbiased (within 1.5 ulp in
/// a fused product; floor or floor + 1, the +1 about as likely as the discarded fraction, on its
/// own); rounding to nearest keeps the twin unbiased too (a floor would bias long sums, e.g.
/// softmax rows of 4096, by -0.5 ulp per term) and within 2 ulp of every secure outcome.
fn round_shift(v: i64, shift: u32) -> i64 {
    if shift == 0 {
        v
    } else {
        v.wrapping_add(1i64 << (shift - 1)) >> shift
    }
}

/// The common length of a job's terms, or None if it has none or they disagree.
fn job_len<A: AsRef<[i64]>>(job: &Fma<'_, A>) -> Option<usize> {
    let mut n = None;
    let mut check = |len: usize| match n {
        None => {
            n = Some(len);
            true
        }
        Some(m) => m == len,
    };
    for (a, b) in &job.products {
        if !check(a.as_ref().len()) || !check(b.as_ref().len()) {
            return None;
        }
    }
    for (a, b, _) in &job.scaled {
        if !check(a.as_ref().len()) || !check(b.as_ref().len()) {
            return None;
        }
    }
    for (x, _) in &job.linear {
        if !check(x.as_ref().len()) {
            return None;
        }
    }
    n
}
