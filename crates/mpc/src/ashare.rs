//! `AShare`: one party's view of a 2-out-of-3 replicated arithmetic sharing over Z_2^64.
//!
//! x = x_0 + x_1 + x_2 (mod 2^64); party P_i holds (x_i, x_{i+1}) as (`mine`, `next`). Any two
//! parties can reconstruct, one party alone sees uniformly random components. Everything in this
//! file is local: linear operations and layout changes act on each component the same way, and a
//! public constant is added to component 0 only (held by P_0 as `mine`, by P_2 as `next`).

use net::PartyId;
use ring::RingTensor;

use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AShare {
    id: PartyId,
    mine: RingTensor,
    next: RingTensor,
}

impl AShare {
    /// Build from components (x_id, x_{id+1}); they must have the same shape.
    pub fn from_parts(id: PartyId, mine: RingTensor, next: RingTensor) -> Result<Self> {
        if mine.shape() != next.shape() {
            return Err(crate::error::MpcError::invalid(
                "AShare::from_parts",
                format!(
                    "component shapes {:?} and {:?} differ",
                    mine.shape(),
                    next.shape()
                ),
            ));
        }
        Ok(AShare { id, mine, next })
    }

    pub(crate) fn new_unchecked(id: PartyId, mine: RingTensor, next: RingTensor) -> Self {
        debug_assert_eq!(mine.shape(), next.shape());
        AShare { id, mine, next }
    }

    /// The trivial sharing of a public tensor: (x, 0, 0).
    pub fn public(id: PartyId, x: &RingTensor) -> Self {
        let z = RingTensor::zeros(x.shape());
        match id {
            0 => AShare::new_unchecked(id, x.clone(), z),
            2 => AShare::new_unchecked(id, z, x.clone()),
            _ => AShare::new_unchecked(id, z.clone(), z),
        }
    }

    pub fn zeros(id: PartyId, shape: &[usize]) -> Self {
        AShare::new_unchecked(id, RingTensor::zeros(shape), RingTensor::zeros(shape))
    }

    pub fn id(&self) -> PartyId {
        self.id
    }
    pub fn shape(&self) -> &[usize] {
        self.mine.shape()
    }
    pub fn len(&self) -> usize {
        self.mine.len()
    }
    pub fn is_empty(&self) -> bool {
        self.mine.is_empty()
    }
    /// x_id.
    pub fn mine(&self) -> &RingTensor {
        &self.mine
    }
    /// x_{id+1}.
    pub fn next(&self) -> &RingTensor {
        &self.next
    }
    pub fn into_parts(self) -> (RingTensor, RingTensor) {
        (self.mine, self.next)
    }

    /// [`AShare::reshape`] without copying the data.
    pub fn into_reshaped(self, shape: &[usize]) -> Result<Self> {
        let id = self.id;
        let mine = RingTensor::new(shape, self.mine.into_data())?;
        let next = RingTensor::new(shape, self.next.into_data())?;
        Ok(AShare::new_unchecked(id, mine, next))
    }

    /// Absolute component `c` (must be `id` or `id + 1` mod 3).
    pub(crate) fn comp(&self, c: usize) -> &RingTensor {
        if c % 3 == self.id {
            &self.mine
        } else if c % 3 == (self.id + 1) % 3 {
            &self.next
        } else {
            panic!("P{} does not hold component {c}: protocol bug", self.id)
        }
    }

    fn map2(&self, f: impl Fn(&RingTensor) -> ring::Result<RingTensor>) -> Result<Self> {
        Ok(AShare::new_unchecked(
            self.id,
            f(&self.mine)?,
            f(&self.next)?,
        ))
    }

    // ---- linear ----------------------------------------------------------------------------

    pub fn add(&self, o: &Self) -> Result<Self> {
        Ok(AShare::new_unchecked(
            self.id,
            self.mine.add(&o.mine)?,
            self.next.add(&o.next)?,
        ))
    }
    pub fn sub(&self, o: &Self) -> Result<Self> {
        Ok(AShare::new_unchecked(
            self.id,
            self.mine.sub(&o.mine)?,
            self.next.sub(&o.next)?,
        ))
    }
    pub fn neg(&self) -> Self {
        AShare::new_unchecked(self.id, self.mine.neg(), self.next.neg())
    }

    /// x + c for a public ring tensor c (broadcasting).
    pub fn add_public(&self, c: &RingTensor) -> Result<Self> {
        let zero = RingTensor::zeros(c.shape());
        let (cm, cn) = match self.id {
            0 => (c, &zero),
            2 => (&zero, c),
            _ => (&zero, &zero),
        };
        Ok(AShare::new_unchecked(
            self.id,
            self.mine.add(cm)?,
            self.next.add(cn)?,
        ))
    }

    /// What a public scalar c adds to (mine, next): component 0 takes it.
    fn scalar_parts(&self, c: u64) -> (u64, u64) {
        match self.id {
            0 => (c, 0),
            2 => (0, c),
            _ => (0, 0),
        }
    }

    /// x + c for a public ring scalar.
    pub fn add_scalar(&self, c: u64) -> Self {
        let (cm, cn) = self.scalar_parts(c);
        AShare::new_unchecked(self.id, self.mine.add_scalar(cm), self.next.add_scalar(cn))
    }

    /// x + c with each component then shifted right by `shift` bits, in one pass per component
    /// (the local part of a reduced-width sign test: the components then sum to
    /// floor((x + c) / 2^shift) minus a carry of 0, 1 or 2).
    pub fn add_scalar_shifted(&self, c: u64, shift: u32) -> Self {
        let (cm, cn) = self.scalar_parts(c);
        let f = |t: &RingTensor, k: u64| t.map(|v| v.wrapping_add(k) >> shift);
        AShare::new_unchecked(self.id, f(&self.mine, cm), f(&self.next, cn))
    }

    /// c - x for a public ring tensor c.
    pub fn public_sub(&self, c: &RingTensor) -> Result<Self> {
        self.neg().add_public(c)
    }

    /// Elementwise product with a public ring tensor, no rescaling (broadcasting).
    pub fn mul_public_raw(&self, c: &RingTensor) -> Result<Self> {
        self.map2(|t| t.mul(c))
    }

    /// Product with a public ring scalar, no rescaling.
    pub fn scale_raw(&self, c: u64) -> Self {
        AShare::new_unchecked(self.id, self.mine.scale(c), self.next.scale(c))
    }

    /// Product with a public integer.
    pub fn scale_int(&self, c: i64) -> Self {
        self.scale_raw(c as u64)
    }

    /// x @ W for a public W, no rescaling.
    pub fn matmul_public_raw(&self, w: &RingTensor) -> Result<Self> {
        self.map2(|t| t.matmul(w))
    }

    // ---- layout ----------------------------------------------------------------------------

    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        self.map2(|t| t.reshape(shape))
    }
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        self.map2(|t| t.permute(perm))
    }
    pub fn transpose_last2(&self) -> Result<Self> {
        self.map2(|t| t.transpose_last2())
    }
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Self> {
        self.map2(|t| t.narrow(axis, start, len))
    }
    pub fn upsample_nearest2d(&self, factor: usize) -> Result<Self> {
        self.map2(|t| t.upsample_nearest2d(factor))
    }
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        self.map2(|t| t.broadcast_to(shape))
    }
    pub fn sum_axis(&self, axis: usize, keepdim: bool) -> Result<Self> {
        self.map2(|t| t.sum_axis(axis, keepdim))
    }
    pub fn concat(xs: &[&Self], axis: usize) -> Result<Self> {
        let id = xs.first().map(|x| x.id).unwrap_or(0);
        let mine: Vec<&RingTensor> = xs.iter().map(|x| &x.mine).collect();
        let next: Vec<&RingTensor> = xs.iter().map(|x| &x.next).collect();
        Ok(AShare::new_unchecked(
            id,
            RingTensor::concat(&mine, axis)?,
            RingTensor::concat(&next, axis)?,
        ))
    }
}
