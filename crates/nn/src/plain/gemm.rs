//! Single-precision matrix products with safe slice arguments: the `gemm` crate for real
//! matrices, and a row-streaming kernel for the skinny ones a small model is made of.
//!
//! A batch-1 U-Net's products have a dimension of 4-16 (output channels, head size): `gemm`
//! packs its operands into blocks meant for large matrices, which costs more than the
//! arithmetic here. The row kernel instead accumulates each output row in registers, 64 columns
//! at a time, streaming the rows of `b` from L1. Both pick their SIMD width at run time, so
//! nothing depends on the build machine's CPU. Small products run on the calling thread: handing
//! a few tens of thousands of multiply-adds to another thread costs more than it saves.

use gemm::Parallelism;

use super::simd::MulAdd;

/// Products with at least this many multiply-adds are split across the rayon pool.
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// Products with a dimension at most this small use the row kernel (when `b`'s rows are
/// contiguous).
const SKINNY_MAX_DIM: usize = 16;

/// dst (rows x cols block at (row0, col0) of an n-column row-major matrix) += a @ b restricted to
/// that block, accumulating in an R x W register tile while streaming the rows of `b`.
#[inline(always)]
fn tile<M: MulAdd, const R: usize, const W: usize>(
    dst: &mut [f32],
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    row0: usize,
    col0: usize,
    accumulate: bool,
) {
    let mut acc = [[0.0f32; W]; R];
    if accumulate {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let start = (row0 + r) * n + col0;
            acc_row.copy_from_slice(&dst[start..start + W]);
        }
    }
    for p in 0..a.cols {
        let start = p * b.row_stride + col0;
        let b_row: &[f32; W] = b.data[start..start + W].try_into().expect("W columns");
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let coef = a.data[(row0 + r) * a.row_stride + p * a.col_stride];
            for (x, &y) in acc_row.iter_mut().zip(b_row) {
                *x = M::mul_add(coef, y, *x);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        let start = (row0 + r) * n + col0;
        dst[start..start + W].copy_from_slice(acc_row);
    }
}

/// Runs `tile::<R, W>` over the column strip [col0, col0 + W) for every row (R rows at a time,
/// then single rows), and returns the next column.
#[inline(always)]
fn strip<M: MulAdd, const R: usize, const W: usize>(
    dst: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    col0: usize,
    accumulate: bool,
) -> usize {
    let (m, n) = (a.rows, b.cols);
    let mut row = 0;
    while row + R <= m {
        tile::<M, R, W>(dst, n, a, b, row, col0, accumulate);
        row += R;
    }
    while row < m {
        tile::<M, 1, W>(dst, n, a, b, row, col0, accumulate);
        row += 1;
    }
    col0 + W
}

/// dst (m x n, row-major) = a @ b (+= when `accumulate`), with b's rows contiguous (col_stride
/// 1). Wide column strips
/// take one row per tile, narrow ones several rows, so each tile keeps about eight independent
/// AVX accumulators busy.
#[inline(always)]
fn rowwise<M: MulAdd>(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    let n = b.cols;
    let mut col = 0;
    while col + 64 <= n {
        col = strip::<M, 1, 64>(dst, a, b, col, accumulate);
    }
    if col + 32 <= n {
        col = strip::<M, 2, 32>(dst, a, b, col, accumulate);
    }
    if col + 16 <= n {
        col = strip::<M, 4, 16>(dst, a, b, col, accumulate);
    }
    if col + 8 <= n {
        col = strip::<M, 8, 8>(dst, a, b, col, accumulate);
    }
    if col + 4 <= n {
        col = strip::<M, 8, 4>(dst, a, b, col, accumulate);
    }
    while col < n {
        col = strip::<M, 8, 1>(dst, a, b, col, accumulate);
    }
}

simd_dispatch! {
    fn rowwise_product(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
        rowwise::<Madd>(dst, a, b, accumulate)
    }
}

/// A read-only matrix view: `rows x cols` at `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of this view (free: swaps the strides).
    #[cfg(test)]
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = a @ b` (or `dst += a @ b` when `accumulate`), `dst` dense row-major `a.rows x b.cols`.
///
/// Panics only on a caller bug (views that do not fit their slices or disagree on `k`); every
/// public op validates shapes before it gets here.
pub(crate) fn matmul_into(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(a.cols == b.rows && a.fits() && b.fits() && dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let skinny = m.min(n).min(k) <= SKINNY_MAX_DIM && m * n * k < PARALLEL_MIN_MACS;
    if skinny && b.col_stride == 1 {
        rowwise_product(&mut dst[..m * n], a, b, accumulate);
        return;
    }
    let parallelism = if m * n * k >= PARALLEL_MIN_MACS && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every index gemm touches,
    // (rows-1)*row_stride + (cols-1)*col_stride, lies inside each slice, and `dst` is an
    // exclusive borrow that does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    out[i * b.cols + j] += a.data[i * a.row_stride + p * a.col_stride]
                        * b.data[p * b.row_stride + j * b.col_stride];
                }
            }
        }
        out
    }

    #[test]
    fn strided_products_match_naive() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..42).map(|i| (i as f32 * 0.11).cos()).collect();
        let am = MatRef::row_major(&a, 5, 7);
        let bm = MatRef::row_major(&b, 7, 6);
        let mut out = vec![0.0; 30];
        matmul_into(&mut out, am, bm, false);
        for (x, y) in out.iter().zip(naive(am, bm)) {
            assert!((x - y).abs() < 1e-5);
        }
        // The row kernel through every strip width (n = 64+32+16+8+4+3 = 127, 13 rows), and a
        // 20 x 20 x 20 product through `gemm`.
        let e: Vec<f32> = (0..13 * 7).map(|i| (i as f32 * 0.21).sin()).collect();
        let em = MatRef::row_major(&e, 13, 7);
        let c: Vec<f32> = (0..7 * 127).map(|i| (i as f32 * 0.05).sin()).collect();
        let cm = MatRef::row_major(&c, 7, 127);
        let mut out = vec![0.5; 13 * 127];
        matmul_into(&mut out, em, cm, true);
        for (x, y) in out.iter().zip(naive(em, cm)) {
            assert!((x - (y + 0.5)).abs() < 1e-5);
        }
        let d: Vec<f32> = (0..400).map(|i| (i as f32 * 0.13).cos()).collect();
        let dm = MatRef::row_major(&d, 20, 20);
        let mut out = vec![0.0; 400];
        matmul_into(&mut out, dm, dm.t(), false);
        for (x, y) in out.iter().zip(naive(dm, dm.t())) {
            assert!((x - y).abs() < 1e-5);
        }
        // a^T (7x5) times a (5x7): both operands transposed views of the same data.
        let mut out2 = vec![1.0; 49];
        matmul_into(&mut out2, am.t(), am, true);
        for (x, y) in out2.iter().zip(naive(am.t(), am)) {
            assert!((x - (y + 1.0)).abs() < 1e-5);
        }
    }
}
