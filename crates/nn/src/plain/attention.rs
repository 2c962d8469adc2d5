//! Fused scaled dot-product attention: per batch entry, one GEMM for the scores, e^(scores - max)
//! in place, one GEMM with the values, then division by the row sums. It skips the permute and
//! the separate scale/mask/normalise passes of the trait's generic version; the result is the
//! same function.

use rayon::prelude::*;

use super::gemm::{matmul_into, MatRef};
use super::math::exp_rows;
use super::tensor::PlainTensor;
use crate::{Error, Result};

/// Attention ops with less work than this (in multiply-adds) run on the calling thread. Measured
/// on the 2-core dev machine under load: splitting a batch-1 14x14 attention (about 1M) over two
/// threads made the median U-Net forward 1.5-4x slower, as the second thread is often not
/// scheduled in time; SD-sized attention (10^8 and up) is far above this.
const PARALLEL_MIN_WORK: usize = 1 << 23;

/// Scores per block of query rows: 32 KiB, so a block's scores stay in L1 from the score product
/// through the softmax to the product with the values.
const SCORES_BLOCK_FLOATS: usize = 8192;

thread_local! {
    /// A block's scores and row sums, reused across calls.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(crate) fn attention(
    q: &PlainTensor,
    k: &PlainTensor,
    v: &PlainTensor,
    scale: f32,
    causal: bool,
) -> Result<PlainTensor> {
    let (&[n, l, d], &[nk, s, dk], &[nv, sv, dv]) = (q.shape(), k.shape(), v.shape()) else {
        return Err(Error::shape(
            "attention",
            format!(
                "expected (N, L, D) operands, got {:?}, {:?}, {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    };
    if nk != n || nv != n || dk != d || sv != s {
        return Err(Error::shape(
            "attention",
            format!(
                "q {:?}, k {:?} and v {:?} do not agree",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    }
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(Error::shape(
            "attention",
            format!("scale must be positive, got {scale}"),
        ));
    }
    if [n, l, s, d, dv].contains(&0) {
        return Err(Error::shape(
            "attention",
            format!(
                "empty operand: q {:?}, k {:?}, v {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    }
    // Query rows are independent: they are processed in blocks whose scores stay in L1 between
    // the two products, and the blocks (never spanning batch entries) go to the rayon pool once
    // the whole op is big enough to pay for the hand-off. A row costs s * (d + dv)
    // multiply-adds plus s exponentials (counted as ~10 multiply-adds each).
    let rows_per_block = (SCORES_BLOCK_FLOATS / s).clamp(1, l);
    let parallel = n * l * s * (d + dv + 10) >= PARALLEL_MIN_WORK;
    let causal_shift = s.saturating_sub(l);
    // K^T with contiguous rows, so the score product streams rows of length s.
    let k_transposed = super::layout::permute(k, &[0, 2, 1])?;
    let k_transposed = k_transposed.data();
    let mut out = vec![0.0f32; n * l * dv];
    let mut blocks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (batch, out_batch) in out.chunks_exact_mut(l * dv).enumerate() {
        for (i, block) in out_batch.chunks_mut(rows_per_block * dv).enumerate() {
            blocks.push((batch, i * rows_per_block, block));
        }
    }
    let one_block = |(batch, first_row, out): (usize, usize, &mut [f32])| {
        let rows = out.len() / dv;
        let qi = &q.data()[(batch * l + first_row) * d..(batch * l + first_row + rows) * d];
        let kt = &k_transposed[batch * s * d..(batch + 1) * s * d];
        let vi = &v.data()[batch * s * dv..(batch + 1) * s * dv];
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < rows * (s + 1) {
                scratch.resize(rows * (s + 1), 0.0);
            }
            let (scores, sums) = scratch[..rows * (s + 1)].split_at_mut(rows * s);
            matmul_into(
                scores,
                MatRef::row_major(qi, rows, d),
                MatRef::row_major(kt, d, s),
                false,
            );
            // Query i may see keys 0 ..= i + (s - l) (aligned at the end, as the trait's mask).
            let causal_offset = causal.then_some(first_row + causal_shift);
            exp_rows(scores, s, scale, causal_offset, sums);
            matmul_into(
                out,
                MatRef::row_major(scores, rows, s),
                MatRef::row_major(vi, s, dv),
                false,
            );
            // Normalise after the product: rows * dv divisions instead of rows * s.
            for (row, total) in out.chunks_exact_mut(dv).zip(sums.iter()) {
                let inv = 1.0 / total;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        });
    };
    if parallel && blocks.len() > 1 {
        blocks.into_par_iter().for_each(one_block);
    } else {
        blocks.into_iter().for_each(one_block);
    }
    Ok(PlainTensor::from_parts(vec![n, l, dv], out))
}
