//! The secure engine: the [`FxpOps`] operations as three-party protocols on replicated shares,
//! built on the protocol core (`arith`, `boolean`, `convert`). A party runs the same kernel code
//! as the twin; every protocol op below is one vectorised call whose cost is stated in
//! [`super::cost`].
//!
//! Ops and the core protocol each one uses:
//! - `fma`: the local 3-term products plus public-coefficient terms form a 3-out-of-3 sharing of
//!   the 2f-bit sum, finished by the core's fused reshare-and-truncate (`finish_product`): one
//!   product's cost per job. A job without secret products is linear in replicated shares, so it
//!   only needs the core's standalone truncation (a third of the bytes).
//! - `dot_runs`: the same with the products of a run summed locally first: one truncation per run.
//! - `less_than`: the sign of `x - threshold` on a few high bits (see [`reduced_sign`]).
//! - `select`: the core's multiplexer.
//! - `pow2_scale`: A2B (Brent-Kung: fewer bytes, more rounds), an OR-prefix over the exponent groups, and a bit injection of the one-hot
//!   exponent into a power of two (see [`Secure::inject_pow2`]).

use ring::RingTensor;
use std::mem::MaybeUninit;

use super::ops::{Coef, Fma, FxpOps, Pow2Layout, Result, Threshold};
use super::NonlinearError;
use crate::arith::{chunk_fill, Terms};
use crate::boolean::SignInput;
use crate::bshare::{from_planes, to_planes, BShare};
use crate::config::TruncMethod;
use crate::fused::{self, assume_written, Fresh, FreshCut};
use crate::wire::{pack_bits, unpack_bits};
use crate::{AShare, MpcError, Party};

impl From<MpcError> for NonlinearError {
    fn from(e: MpcError) -> Self {
        NonlinearError::Protocol(e.to_string())
    }
}

/// One party's secure engine.
pub struct Secure<'p> {
    pub party: &'p Party,
}

impl<'p> Secure<'p> {
    pub fn new(party: &'p Party) -> Self {
        Secure { party }
    }

    fn raw(&self, v: f64) -> u64 {
        (v * (self.party.frac_bits() as f64).exp2()).round() as i64 as u64
    }

    fn tensor(&self, data: Vec<u64>) -> Result<RingTensor> {
        let n = data.len();
        Ok(RingTensor::new(&[n], data).map_err(MpcError::from)?)
    }

    /// A share whose components are `f` applied to each component of `x`.
    fn map_components(&self, x: &AShare, f: impl Fn(&[u64]) -> Vec<u64>) -> Result<AShare> {
        let mine = self.tensor(f(x.mine().data()))?;
        let next = self.tensor(f(x.next().data()))?;
        Ok(AShare::from_parts(x.id(), mine, next)?)
    }

    fn flat(&self, x: &AShare) -> Result<AShare> {
        Ok(x.reshape(&[x.len()])?)
    }
}

/// The 0/1 values of a one-bit share's two components.
fn bit_values(b: &BShare) -> (Vec<u64>, Vec<u64>) {
    (
        from_planes(b.mine(), 1, b.len()),
        from_planes(b.next(), 1, b.len()),
    )
}

fn bits_from_values(id: usize, mine: &[u64], next: &[u64]) -> Result<BShare> {
    Ok(BShare::from_parts(
        id,
        1,
        mine.len(),
        to_planes(mine, 1),
        to_planes(next, 1),
    )?)
}

/// One-bit shares one after the other.
fn concat_bits(id: usize, parts: &[&BShare]) -> Result<BShare> {
    let (mut m, mut n) = (Vec::new(), Vec::new());
    for p in parts {
        let (a, b) = bit_values(p);
        m.extend(a);
        n.extend(b);
    }
    bits_from_values(id, &m, &n)
}

/// The 3-out-of-3 share of one fma job at this party, at 2f + g + extra_shift fraction bits
/// (g = the job's `coef_bits`: plain products and linear terms are lifted by 2^g, scaled
/// products carry their f-bit coefficient), computed a chunk at a time where it is needed.
struct JobTerms<'a, R> {
    n: usize,
    /// The constant term (P0's share; 0 at the others).
    constant: u64,
    /// (a_i, a_{i+1}, b_i, b_{i+1}) and the product's coefficient.
    products: Vec<([&'a [u64]; 4], u64)>,
    /// x_i and its public coefficient.
    linear: Vec<(&'a [u64], &'a Coef<'a>)>,
    raw: R,
    g: u32,
}

impl<'a, R: Fn(f64) -> u64 + Sync> JobTerms<'a, R> {
    /// The job's terms, with every length checked against the job's.
    fn new(id: usize, job: &'a Fma<'a, AShare>, raw: R, const_raw: u64, g: u32) -> Result<Self> {
        let n = job
            .products
            .first()
            .map(|(a, _)| a.len())
            .or_else(|| job.scaled.first().map(|(a, _, _)| a.len()))
            .or_else(|| job.linear.first().map(|(x, _)| x.len()))
            .ok_or(NonlinearError::Shape {
                op: "fma",
                detail: "a job has no terms".into(),
            })?;
        let lift = 1u64 << g;
        let mut products = Vec::with_capacity(job.products.len() + job.scaled.len());
        let terms = job
            .products
            .iter()
            .map(|(a, b)| (*a, *b, lift))
            .chain(job.scaled.iter().map(|(a, b, c)| (*a, *b, raw(*c))));
        for (a, b, c) in terms {
            if a.len() != n || b.len() != n {
                return Err(NonlinearError::Shape {
                    op: "fma",
                    detail: format!("product of {} and {} in a job of {n}", a.len(), b.len()),
                });
            }
            let parts = [
                a.mine().data(),
                a.next().data(),
                b.mine().data(),
                b.next().data(),
            ];
            products.push((parts, c));
        }
        let mut linear = Vec::with_capacity(job.linear.len());
        for (x, c) in &job.linear {
            if x.len() != n {
                return Err(NonlinearError::Shape {
                    op: "fma",
                    detail: format!("term of {} in a job of {n}", x.len()),
                });
            }
            if let Coef::PerElement(cs) = c {
                if cs.len() != n {
                    return Err(NonlinearError::Shape {
                        op: "fma",
                        detail: format!("{} coefficients for {n} elements", cs.len()),
                    });
                }
            }
            linear.push((x.mine().data(), c));
        }
        let constant = if id == 0 { const_raw } else { 0 };
        Ok(JobTerms {
            n,
            constant,
            products,
            linear,
            raw,
            g,
        })
    }

    /// The job as the elementwise product's terms, if it is one product with coefficient 1 and
    /// nothing else (the caller checks that the job's constant is 0).
    fn plain_product(&self) -> Option<Terms<'a>> {
        match (&self.products[..], self.linear.is_empty()) {
            ([([a0, a1, b0, b1], 1)], true) => {
                Some(if std::ptr::eq(*a0, *b0) && std::ptr::eq(*a1, *b1) {
                    Terms::Square([a0, a1])
                } else {
                    Terms::Product([a0, a1, b0, b1])
                })
            }
            _ => None,
        }
    }

    /// Elements `start..start + out.len()` of the share, all terms per chunk, written into
    /// the fresh slots `out`: the first product writes them (with the constant), so that its
    /// stores into memory not yet in cache overlap its loads; the other terms add to them.
    fn fill<'z>(&self, start: usize, out: &'z mut [MaybeUninit<u64>]) -> &'z mut [u64] {
        let range = start..start + out.len();
        let z = match self.products.split_first() {
            Some((first, rest)) => {
                add_product(&mut *out, first, range.clone(), self.constant);
                // SAFETY: `add_product` wrote every slot (its inputs have the job's length,
                // checked in `new`, and a zip over them covers `out`).
                let z = unsafe { assume_written(out) };
                for p in rest {
                    add_product(&mut *z, p, range.clone(), 0);
                }
                z
            }
            None => {
                out.iter_mut().for_each(|o| {
                    o.write(self.constant);
                });
                // SAFETY: every slot was written just above.
                unsafe { assume_written(out) }
            }
        };
        for &(x0, c) in &self.linear {
            let x0 = &x0[range.clone()];
            match c {
                Coef::Scalar(c) => {
                    let c = (self.raw)(*c) << self.g;
                    for (zi, x) in z.iter_mut().zip(x0) {
                        *zi = zi.wrapping_add(x.wrapping_mul(c));
                    }
                }
                Coef::PerElement(cs) => {
                    for ((zi, x), cf) in z.iter_mut().zip(x0).zip(&cs[range.clone()]) {
                        *zi = zi.wrapping_add(x.wrapping_mul((self.raw)(*cf) << self.g));
                    }
                }
            }
        }
        z
    }

    /// The whole share as a vector (for groups of several jobs and for run sums).
    fn collect(&self) -> Vec<u64> {
        let mut z = Fresh::new(self.n);
        self.write(z.cut());
        z.into_vec()
    }

    /// The whole share into `out` (the job's n fresh slots), on all cores.
    fn write(&self, out: FreshCut<'_>) {
        fused::run(self.n, out, &|start, _, c| {
            c.init_with(|z| self.fill(start, z));
        });
    }
}

/// A slot that a product term goes into: a fresh one is written (with `base` added), a
/// written one is added to. One loop per kind, each a zip of slices that vectorises.
trait Slot {
    fn put(&mut self, base: u64, term: u64);
}

impl Slot for u64 {
    #[inline(always)]
    fn put(&mut self, _base: u64, term: u64) {
        *self = self.wrapping_add(term);
    }
}

impl Slot for MaybeUninit<u64> {
    #[inline(always)]
    fn put(&mut self, base: u64, term: u64) {
        self.write(base.wrapping_add(term));
    }
}

/// c (a_i (b_i + b_{i+1}) + a_{i+1} b_i) into `z`, elements `range` of the operands.
fn add_product<S: Slot>(
    z: &mut [S],
    &([a0, a1, b0, b1], c): &([&[u64]; 4], u64),
    range: std::ops::Range<usize>,
    base: u64,
) {
    if std::ptr::eq(a0, b0) && std::ptr::eq(a1, b1) {
        // A square: a0 (a0 + a1) + a1 a0 = a0 (a0 + 2 a1), one multiplication less.
        let (a0, a1) = (&a0[range.clone()], &a1[range]);
        for ((zi, &p), &q) in z.iter_mut().zip(a0).zip(a1) {
            zi.put(base, p.wrapping_mul(p.wrapping_add(q << 1)).wrapping_mul(c));
        }
        return;
    }
    let (a0, a1, b0, b1) = (
        &a0[range.clone()],
        &a1[range.clone()],
        &b0[range.clone()],
        &b1[range],
    );
    let terms = z.iter_mut().zip(a0).zip(a1).zip(b0).zip(b1);
    for ((((zi, &p), &q), &u), &v) in terms {
        let t = p
            .wrapping_mul(u.wrapping_add(v))
            .wrapping_add(q.wrapping_mul(u));
        zi.put(base, t.wrapping_mul(c));
    }
}

/// The replicated share (both components) of a job without secret products.
fn linear_terms(
    id: usize,
    job: &Fma<'_, AShare>,
    raw: impl Fn(f64) -> u64,
    const_raw: u64,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let n = job.linear[0].0.len();
    // The constant belongs to component 0: held as `mine` by P0 and as `next` by P2.
    let mut m = vec![if id == 0 { const_raw } else { 0 }; n];
    let mut nx = vec![if id == 2 { const_raw } else { 0 }; n];
    for (x, c) in &job.linear {
        if x.len() != n {
            return Err(NonlinearError::Shape {
                op: "fma",
                detail: format!("term of {} in a job of {n}", x.len()),
            });
        }
        let (x0, x1) = (x.mine().data(), x.next().data());
        for i in 0..n {
            let c = match c {
                Coef::Scalar(c) => raw(*c),
                Coef::PerElement(cs) => raw(*cs.get(i).ok_or(NonlinearError::Shape {
                    op: "fma",
                    detail: format!("{} coefficients for {n} elements", cs.len()),
                })?),
            };
            m[i] = m[i].wrapping_add(x0[i].wrapping_mul(c));
            nx[i] = nx[i].wrapping_add(x1[i].wrapping_mul(c));
        }
    }
    Ok((m, nx))
}

impl FxpOps for Secure<'_> {
    type A = AShare;
    type B = BShare;

    fn frac_bits(&self) -> u32 {
        self.party.frac_bits()
    }

    fn len(&self, a: &AShare) -> usize {
        a.len()
    }

    fn public(&self, values: &[f64]) -> AShare {
        let data: Vec<u64> = values.iter().map(|&v| self.raw(v)).collect();
        let n = data.len();
        let t = RingTensor::new(&[n], data).unwrap_or_else(|_| RingTensor::zeros(&[n]));
        AShare::public(self.party.id(), &t)
    }

    fn add(&self, a: &AShare, b: &AShare) -> Result<AShare> {
        Ok(a.add(b)?)
    }

    fn sub(&self, a: &AShare, b: &AShare) -> Result<AShare> {
        Ok(a.sub(b)?)
    }

    fn add_const(&self, a: &AShare, c: f64) -> AShare {
        a.add_scalar(self.raw(c))
    }

    fn mul_int(&self, a: &AShare, k: i64) -> AShare {
        a.scale_int(k)
    }

    fn run_sums(&self, a: &AShare, run: usize) -> Result<AShare> {
        let n = a.len();
        if run == 0 || !n.is_multiple_of(run) {
            return Err(NonlinearError::Shape {
                op: "run_sums",
                detail: format!("length {n} is not a multiple of {run}"),
            });
        }
        Ok(a.reshape(&[n / run, run])?.sum_axis(1, false)?)
    }

    fn repeat_each(&self, a: &AShare, times: usize) -> AShare {
        let rep = |v: &[u64]| {
            v.iter()
                .flat_map(|x| std::iter::repeat_n(*x, times))
                .collect()
        };
        // Both components have the same length, so this cannot fail.
        self.map_components(a, rep)
            .unwrap_or_else(|_| AShare::zeros(a.id(), &[a.len() * times]))
    }

    fn gather(&self, a: &AShare, index: &[usize]) -> Result<AShare> {
        let n = a.len();
        if let Some(&bad) = index.iter().find(|&&i| i >= n) {
            return Err(NonlinearError::Shape {
                op: "gather",
                detail: format!("index {bad} out of {n}"),
            });
        }
        self.map_components(a, |v| index.iter().map(|&i| v[i]).collect())
    }

    fn concat(&self, parts: &[&AShare]) -> AShare {
        let flat: Vec<AShare> = parts.iter().filter_map(|p| self.flat(p).ok()).collect();
        let refs: Vec<&AShare> = flat.iter().collect();
        AShare::concat(&refs, 0).unwrap_or_else(|_| AShare::zeros(self.party.id(), &[0]))
    }

    fn not(&self, b: &BShare) -> BShare {
        b.not()
    }

    fn xor(&self, a: &BShare, b: &BShare) -> Result<BShare> {
        Ok(a.xor(b)?)
    }

    fn fma(&self, jobs: &[Fma<'_, AShare>]) -> Result<Vec<AShare>> {
        let f = self.party.frac_bits() as i32;
        let method = self.party.config().trunc;
        let id = self.party.id();
        let raw = |v: f64| self.raw(v);
        let mut out: Vec<Option<AShare>> = vec![None; jobs.len()];
        // Jobs with secret products and jobs without are finished by different core protocols;
        // jobs with different truncations by different calls. Each group is one call.
        let mut groups: Vec<(bool, u32, bool, Vec<usize>)> = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            let d = f + job.coef_bits(f as u32) as i32 + job.extra_shift;
            if !(1..63).contains(&d) {
                return Err(NonlinearError::Range {
                    op: "fma",
                    detail: format!("truncation by {d} bits"),
                });
            }
            let scaled = !job.scaled.is_empty();
            let key = (
                !job.products.is_empty() || scaled,
                d as u32,
                job.robust || scaled,
            );
            match groups.iter_mut().find(|g| (g.0, g.1, g.2) == key) {
                Some(g) => g.3.push(j),
                None => groups.push((key.0, key.1, key.2, vec![j])),
            }
        }
        for (has_products, d, robust, members) in groups {
            let method = if robust { TruncMethod::Robust } else { method };
            let const_raw = |c: f64| (c * ((f + d as i32) as f64).exp2()).round() as i64 as u64;
            let mut lens = Vec::with_capacity(members.len());
            let result = if has_products {
                let terms: Vec<_> = members
                    .iter()
                    .map(|&j| {
                        let g = jobs[j].coef_bits(f as u32);
                        JobTerms::new(id, &jobs[j], raw, const_raw(jobs[j].constant), g)
                    })
                    .collect::<Result<_>>()?;
                lens.extend(terms.iter().map(|t| t.n));
                let n = lens.iter().sum::<usize>();
                let trunc = Some((method, d));
                if let [t] = &terms[..] {
                    // The common single-job group: z is formed inside the product's first pass,
                    // by the product's own code when the job is a plain a * b (a square when
                    // a is b: one local multiplication less).
                    let fill = chunk_fill(|start, z| t.fill(start, z));
                    let plain = jobs[members[0]].constant == 0.0;
                    let terms = t.plain_product().filter(|_| plain);
                    let cx = self.party.begin("nl_fma");
                    let terms = terms.unwrap_or(Terms::Chunks(n, &fill));
                    self.party.finish_terms(&cx, terms, &[n], trunc)?
                } else {
                    let mut z = Fresh::new(n);
                    for (t, mut piece) in terms.iter().zip(z.pieces(lens.iter().copied())) {
                        t.write(piece.cut());
                        piece.into_written();
                    }
                    let z = z.into_vec();
                    let cx = self.party.begin("nl_fma");
                    self.party.finish_product(&cx, z, &[n], trunc)?
                }
            } else {
                let (mut m, mut nx) = (Vec::new(), Vec::new());
                for &j in &members {
                    if jobs[j].linear.is_empty() {
                        return Err(NonlinearError::Shape {
                            op: "fma",
                            detail: "a job has no terms".into(),
                        });
                    }
                    let (a, b) = linear_terms(id, &jobs[j], raw, const_raw(jobs[j].constant))?;
                    lens.push(a.len());
                    m.extend(a);
                    nx.extend(b);
                }
                let share = AShare::from_parts(id, self.tensor(m)?, self.tensor(nx)?)?;
                self.party.trunc(&share, d, method)?
            };
            if let [j] = members[..] {
                out[j] = Some(result);
                continue;
            }
            let mut start = 0;
            for (&j, &len) in members.iter().zip(&lens) {
                out[j] = Some(result.narrow(0, start, len)?);
                start += len;
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every job is in a group"))
            .collect())
    }

    fn dot_runs(&self, a: &AShare, b: &AShare, run: usize, shift: u32) -> Result<AShare> {
        let n = a.len();
        if b.len() != n || run == 0 || !n.is_multiple_of(run) {
            return Err(NonlinearError::Shape {
                op: "dot_runs",
                detail: format!("lengths {n} and {}, runs of {run}", b.len()),
            });
        }
        let job = Fma::mul(a, b);
        let z = JobTerms::new(self.party.id(), &job, |v| self.raw(v), 0, 0)?.collect();
        let sums: Vec<u64> = z
            .chunks(run)
            .map(|c| c.iter().fold(0u64, |s, v| s.wrapping_add(*v)))
            .collect();
        let m = sums.len();
        let cx = self.party.begin("nl_dot_runs");
        let trunc = (shift > 0).then_some((self.party.config().trunc, shift));
        Ok(self.party.finish_product(&cx, sums, &[m], trunc)?)
    }

    fn less_than(&self, jobs: &[(&AShare, Threshold)]) -> Result<Vec<BShare>> {
        // Jobs of the same width share one call.
        let f = self.party.frac_bits();
        let inputs: Vec<(SignInput, usize)> = jobs
            .iter()
            .map(|(_, t)| sign_input(t, f, self.raw(t.below)))
            .collect();
        let mut out: Vec<Option<BShare>> = vec![None; jobs.len()];
        let mut widths: Vec<usize> = inputs.iter().map(|p| p.1).collect();
        widths.sort_unstable();
        widths.dedup();
        for w in widths {
            let members: Vec<usize> = (0..jobs.len()).filter(|&j| inputs[j].1 == w).collect();
            if let [j] = members[..] {
                // A width of its own: the bits are the answer as they are, and the adder moves
                // the input as it reads it.
                out[j] = Some(self.party.msb_bits_of(jobs[j].0, inputs[j].0, w)?);
                continue;
            }
            let moved: Vec<AShare> = members
                .iter()
                .map(|&j| {
                    let SignInput { add, shift } = inputs[j].0;
                    jobs[j].0.add_scalar_shifted(add, shift)
                })
                .collect();
            let all = AShare::concat(&moved.iter().collect::<Vec<_>>(), 0)?;
            let bits = self.party.msb_bits(&all, w)?;
            let (m, nx) = bit_values(&bits);
            let mut start = 0;
            for (&j, x) in members.iter().zip(&moved) {
                let len = x.len();
                out[j] = Some(bits_from_values(
                    self.party.id(),
                    &m[start..start + len],
                    &nx[start..start + len],
                )?);
                start += len;
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every job has a width"))
            .collect())
    }

    fn select(&self, jobs: &[(&BShare, &AShare)]) -> Result<Vec<AShare>> {
        if let [(b, v)] = jobs {
            // One job: no concatenation and no split (each a copy of the values).
            if b.len() != v.len() {
                return Err(NonlinearError::Shape {
                    op: "select",
                    detail: format!("{} bits for {} values", b.len(), v.len()),
                });
            }
            return Ok(vec![self.party.mux(b, v)?.into_reshaped(&[v.len()])?]);
        }
        let bits: Vec<&BShare> = jobs.iter().map(|j| j.0).collect();
        let vals: Vec<AShare> = jobs.iter().map(|j| self.flat(j.1)).collect::<Result<_>>()?;
        for (b, v) in bits.iter().zip(&vals) {
            if b.len() != v.len() {
                return Err(NonlinearError::Shape {
                    op: "select",
                    detail: format!("{} bits for {} values", b.len(), v.len()),
                });
            }
        }
        let b = concat_bits(self.party.id(), &bits)?;
        let refs: Vec<&AShare> = vals.iter().collect();
        let v = AShare::concat(&refs, 0)?;
        let r = self.party.mux(&b, &v)?;
        let mut start = 0;
        let mut out = Vec::with_capacity(jobs.len());
        for v in &vals {
            out.push(r.narrow(0, start, v.len())?);
            start += v.len();
        }
        Ok(out)
    }

    fn pow2_scale(&self, x: &AShare, root: u32, lo: i32, hi: i32) -> Result<AShare> {
        let layout = Pow2Layout::new(self.party.frac_bits(), root, lo, hi)?;
        let x = self.flat(x)?;
        let onehot = self.exponent_onehot(&x, &layout)?;
        self.inject_pow2(&onehot, &layout, x.len())
    }
}

/// How the reduced-width sign test for `x < threshold` moves x: `x - below` with its low bits
/// (below the threshold's resolution) removed from each component (the components then sum to
/// floor((x - below) / 2^shift) minus a carry of 0, 1 or 2), and the width of the sign test.
fn sign_input(t: &Threshold, f: u32, below_raw: u64) -> (SignInput, usize) {
    let (shift, width) = t.sign_width(f);
    (
        SignInput {
            add: below_raw.wrapping_neg(),
            shift,
        },
        width,
    )
}

/// PRF purpose of the injection's masks (clear of the core's purposes 0..16).
const P_INJECT: u32 = 64;

impl Secure<'_> {
    /// The one-hot exponent: plane j is 1 iff x's exponent group is j (the lowest group also for
    /// inputs below the range). Cost: Brent-Kung A2B of `planes` bits, one AND batch for the group ORs
    /// (root 2), ceil(log2 J) AND batches for the OR-prefix over the J groups.
    fn exponent_onehot(&self, x: &AShare, layout: &Pow2Layout) -> Result<BShare> {
        let p = self.party;
        let bits = p.a2b_brent_kung(x, layout.planes)?;
        let plane = |q: usize| bits.planes(q, 1);
        let j = layout.groups.len();
        // Group indicators G_1..G_{J-1} (group 0 is forced on below, so it is never formed).
        let mut g: Vec<BShare> = Vec::with_capacity(j);
        // (group index in g, first plane, second plane) of the two-plane groups.
        let mut pairs: Vec<(usize, usize, usize)> = Vec::new();
        for (k, members) in layout.groups.iter().enumerate().skip(1) {
            match members.as_slice() {
                [q] => g.push(plane(*q)?),
                [a, b] => {
                    // a OR b = a ^ b ^ (a & b); the AND is added below, in one batch.
                    g.push(plane(*a)?.xor(&plane(*b)?)?);
                    pairs.push((k - 1, *a, *b));
                }
                _ => {
                    return Err(NonlinearError::Range {
                        op: "pow2_scale",
                        detail: format!("group {k} has {} planes", members.len()),
                    })
                }
            }
        }
        if !pairs.is_empty() {
            let lhs = pairs
                .iter()
                .map(|t| plane(t.1))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let rhs = pairs
                .iter()
                .map(|t| plane(t.2))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let lhs = BShare::stack(&lhs.iter().collect::<Vec<_>>())?;
            let rhs = BShare::stack(&rhs.iter().collect::<Vec<_>>())?;
            let and = p.and(&lhs, &rhs)?;
            for (i, t) in pairs.iter().enumerate() {
                g[t.0] = g[t.0].xor(&and.planes(i, 1)?)?;
            }
        }
        // Suffix OR: T_k = OR_{k' >= k} G_k' (Hillis-Steele doubling), T_0 = 1.
        let mut t = g;
        let mut span = 1;
        while span < t.len() {
            let idx: Vec<usize> = (0..t.len() - span).collect();
            let a: Vec<&BShare> = idx.iter().map(|&k| &t[k]).collect();
            let b: Vec<&BShare> = idx.iter().map(|&k| &t[k + span]).collect();
            let and = p.and(&BShare::stack(&a)?, &BShare::stack(&b)?)?;
            let mut next = t.clone();
            for (i, &k) in idx.iter().enumerate() {
                next[k] = t[k].xor(&t[k + span])?.xor(&and.planes(i, 1)?)?;
            }
            t = next;
            span *= 2;
        }
        // One-hot: H_0 = NOT T_1, H_k = T_k ^ T_{k+1}, H_{J-1} = T_{J-1} (t[k-1] is T_k).
        let mut h: Vec<BShare> = Vec::with_capacity(j);
        if j == 1 {
            let n = x.len();
            let ones = to_planes(&vec![1; n], 1);
            h.push(BShare::public(p.id(), 1, n, ones)?);
        } else {
            h.push(t[0].not());
            for k in 1..j {
                h.push(if k + 1 < j {
                    t[k - 1].xor(&t[k])?
                } else {
                    t[k - 1].clone()
                });
            }
        }
        Ok(BShare::stack(&h.iter().collect::<Vec<_>>())?)
    }

    /// Bit injection of the one-hot H (J planes) into W = sum_j H_j 2^(P_j), then a truncation
    /// to the scale's position.
    ///
    /// With H = u XOR w, u = H's components 0 and 1 (R0's), w = its component 2 (R1's and R2's):
    /// W = sum_j 2^P_j (u_j + w_j - 2 u_j w_j). R0 sends m_j = u_j - rho_j (rho_j from the key
    /// of R0 and R1) to R2, only modulo 2^(63 - P_j) since it is multiplied by 2^(P_j + 1); then
    /// z_R0 = sum 2^P_j u_j, z_R1 = sum 2^P_j (w_j - 2 w_j rho_j), z_R2 = -sum 2^(P_j+1) w_j m_j
    /// is a 3-out-of-3 sharing of W. The positions P_j = pos_j + D put the largest at 2^61, so the
    /// messages are short; the core's robust fused truncation by D (exact to 1 ulp while
    /// |W| < 2^62) brings each to its scale. Opened: m_j to R2 (masked by rho_j), and what the
    /// core's truncation opens.
    /// Cost: R0 sends sum_j (63 - P_j) bits per element to R2, then `product_cost(robust, D)`.
    fn inject_pow2(&self, h: &BShare, layout: &Pow2Layout, n: usize) -> Result<AShare> {
        let p = self.party;
        let cx = p.begin("nl_pow2_inject");
        let shift_d = layout.inject_shift();
        let big: Vec<u32> = layout.pos.iter().map(|q| q + shift_d).collect();
        let words = h.words();
        let plane_bits =
            |comp: &[u64], k: usize| from_planes(&comp[k * words..(k + 1) * words], 1, n);
        let mut z = vec![0u64; n];
        match cx.role() {
            0 => {
                let (c0, c1) = (h.comp(cx.abs(0)), h.comp(cx.abs(1)));
                let mut msg = Vec::new();
                for (k, &pk) in big.iter().enumerate() {
                    let u: Vec<u64> = plane_bits(c0, k)
                        .iter()
                        .zip(plane_bits(c1, k))
                        .map(|(a, b)| a ^ b)
                        .collect();
                    let rho = cx.draw_comp(1, P_INJECT + k as u32, n);
                    let width = 63 - pk;
                    let m: Vec<u64> = u
                        .iter()
                        .zip(&rho)
                        .map(|(a, r)| a.wrapping_sub(*r))
                        .collect();
                    pack_bits(&mut msg, &m, width);
                    for i in 0..n {
                        z[i] = z[i].wrapping_add(u[i] << pk);
                    }
                }
                cx.send(2, msg)?;
            }
            1 => {
                let c2 = h.comp(cx.abs(2));
                for (k, &pk) in big.iter().enumerate() {
                    let w = plane_bits(c2, k);
                    let rho = cx.draw_comp(1, P_INJECT + k as u32, n);
                    for i in 0..n {
                        let term = w[i].wrapping_sub(2u64.wrapping_mul(w[i]).wrapping_mul(rho[i]));
                        z[i] = z[i].wrapping_add(term << pk);
                    }
                }
            }
            _ => {
                let c2 = h.comp(cx.abs(2));
                let bytes = cx.recv(0)?;
                let mut off = 0;
                for (k, &pk) in big.iter().enumerate() {
                    let width = 63 - pk;
                    let len = crate::wire::packed_len(n, width);
                    let chunk = bytes.get(off..off + len).ok_or(MpcError::BadMessage {
                        protocol: "nl_pow2_inject",
                        from: cx.abs(0),
                        expected: off + len,
                        got: bytes.len(),
                    })?;
                    off += len;
                    let m = unpack_bits("nl_pow2_inject", cx.abs(0), chunk, n, width)?;
                    let w = plane_bits(c2, k);
                    for i in 0..n {
                        let term = w[i].wrapping_mul(m[i]) << (pk + 1);
                        z[i] = z[i].wrapping_sub(term);
                    }
                }
                if off != bytes.len() {
                    return Err(MpcError::BadMessage {
                        protocol: "nl_pow2_inject",
                        from: cx.abs(0),
                        expected: off,
                        got: bytes.len(),
                    }
                    .into());
                }
            }
        }
        Ok(p.finish_product(&cx, z, &[n], Some((TruncMethod::Robust, shift_d)))?)
    }
}
