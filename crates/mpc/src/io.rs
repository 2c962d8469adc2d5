//! Getting secrets in and out: sharing by an outside owner (client or model owner), sharing by
//! one of the parties, and opening to all, to one named party, or to the owner.
//!
//! Nothing here opens a value to a party that does not own it: `reveal_all` and `reveal_to` are
//! for values the protocol has masked or that the named party is entitled to, and their callers
//! say why in their own docs.

use net::{PartyId, PARTIES};
use rand::{Rng, RngCore};
use ring::{FixedPoint, RingTensor};

use crate::ashare::AShare;
use crate::bshare::BShare;
use crate::error::{MpcError, Result};
use crate::party::Party;
use crate::prf::Prf;
use crate::wire::{decode_words, encode_words};

/// A share component as the owner sends it: a 128-bit seed that expands (AES-CTR) to a uniformly
/// random tensor, or the tensor itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Component {
    Seed([u8; 16]),
    Data(Vec<u64>),
}

/// What an outside owner sends to one party for one tensor: that party's two components.
///
/// Dealing x: components c_0 = PRG(s_0), c_1 = PRG(s_1), c_2 = x - c_0 - c_1. P_0 gets the two
/// seeds (32 bytes), P_1 gets s_1 and c_2, P_2 gets c_2 and s_0: 2 ring elements per element in
/// total instead of 6. Each party sees two components, which are independent and uniform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerShare {
    pub party: PartyId,
    pub shape: Vec<usize>,
    pub mine: Component,
    pub next: Component,
}

/// Largest tensor an owner message may announce (2^32 elements), so that a garbage header cannot
/// make a party allocate without bound.
const MAX_ELEMENTS: u64 = 1 << 32;

fn expand(seed: &[u8; 16], n: usize) -> Vec<u64> {
    Prf::new(*seed).words(0, 0, n)
}

/// `values` of `shape`, encoded with `fp` and dealt: each party's share, expanded (a dealer
/// that hands the parties their shares directly, in memory or as messages of whole shares).
pub fn deal_values(
    fp: &FixedPoint,
    shape: &[usize],
    values: &[f32],
    rng: &mut impl RngCore,
) -> Result<[AShare; PARTIES]> {
    let x = RingTensor::new(shape, fp.encode_f32(values)?)?;
    let [a, b, c] = deal(&x, rng);
    Ok([a.into_share(0)?, b.into_share(1)?, c.into_share(2)?])
}

/// Share `x` for the three parties (owner side).
pub fn deal(x: &RingTensor, rng: &mut impl RngCore) -> [OwnerShare; PARTIES] {
    let n = x.len();
    let s0: [u8; 16] = rng.gen();
    let s1: [u8; 16] = rng.gen();
    let (c0, c1) = (expand(&s0, n), expand(&s1, n));
    let c2: Vec<u64> = x
        .data()
        .iter()
        .zip(c0.iter().zip(&c1))
        .map(|(v, (a, b))| v.wrapping_sub(*a).wrapping_sub(*b))
        .collect();
    let shape = x.shape().to_vec();
    [
        OwnerShare {
            party: 0,
            shape: shape.clone(),
            mine: Component::Seed(s0),
            next: Component::Seed(s1),
        },
        OwnerShare {
            party: 1,
            shape: shape.clone(),
            mine: Component::Seed(s1),
            next: Component::Data(c2.clone()),
        },
        OwnerShare {
            party: 2,
            shape,
            mine: Component::Data(c2),
            next: Component::Seed(s0),
        },
    ]
}

impl OwnerShare {
    /// Wire format: party u8, ndim u8, dims u64 LE, then per component a tag (0 seed, 1 data)
    /// followed by 16 seed bytes or n words.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![self.party as u8, self.shape.len() as u8];
        for d in &self.shape {
            b.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        for c in [&self.mine, &self.next] {
            match c {
                Component::Seed(s) => {
                    b.push(0);
                    b.extend_from_slice(s);
                }
                Component::Data(v) => {
                    b.push(1);
                    b.extend_from_slice(&encode_words(v));
                }
            }
        }
        b
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |d: String| MpcError::invalid("owner share", d);
        if bytes.len() < 2 {
            return Err(bad(format!(
                "{} bytes is shorter than the header",
                bytes.len()
            )));
        }
        let party = bytes[0] as usize;
        if party >= PARTIES {
            return Err(bad(format!("party {party} is not 0, 1 or 2")));
        }
        let ndim = bytes[1] as usize;
        let mut off = 2;
        if bytes.len() < off + 8 * ndim {
            return Err(bad("truncated shape".into()));
        }
        let mut shape = Vec::with_capacity(ndim);
        let mut n: u64 = 1;
        for _ in 0..ndim {
            let d = u64::from_le_bytes(bytes[off..off + 8].try_into().expect("8 bytes"));
            off += 8;
            n = n.saturating_mul(d);
            shape.push(d as usize);
        }
        if n > MAX_ELEMENTS {
            return Err(bad(format!("shape {shape:?} exceeds 2^32 elements")));
        }
        let n = n as usize;
        let mut comps = Vec::with_capacity(2);
        for _ in 0..2 {
            let tag = *bytes
                .get(off)
                .ok_or_else(|| bad("truncated component".into()))?;
            off += 1;
            match tag {
                0 => {
                    let s = bytes
                        .get(off..off + 16)
                        .ok_or_else(|| bad("truncated seed".into()))?;
                    comps.push(Component::Seed(s.try_into().expect("16 bytes")));
                    off += 16;
                }
                1 => {
                    let d = bytes
                        .get(off..off + 8 * n)
                        .ok_or_else(|| bad(format!("component of {n} words is truncated")))?;
                    comps.push(Component::Data(decode_words("owner share", party, d, n)?));
                    off += 8 * n;
                }
                t => return Err(bad(format!("unknown component tag {t}"))),
            }
        }
        if off != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - off)));
        }
        let next = comps.pop().expect("two components");
        let mine = comps.pop().expect("two components");
        Ok(OwnerShare {
            party,
            shape,
            mine,
            next,
        })
    }

    /// The party's share (the receiving party checks that the message is addressed to it).
    pub fn into_share(self, me: PartyId) -> Result<AShare> {
        if self.party != me {
            return Err(MpcError::invalid(
                "owner share",
                format!("share for P{} delivered to P{me}", self.party),
            ));
        }
        let n: usize = self.shape.iter().product();
        let tensor = |c: Component| -> Result<RingTensor> {
            let data = match c {
                Component::Seed(s) => expand(&s, n),
                Component::Data(d) => d,
            };
            Ok(RingTensor::new(&self.shape, data)?)
        };
        let shape = self.shape.clone();
        let (m, x) = (tensor(self.mine)?, tensor(self.next)?);
        debug_assert_eq!(m.shape(), &shape[..]);
        AShare::from_parts(me, m, x)
    }
}

/// One party's output share as sent to the owner of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputShare {
    pub party: PartyId,
    pub mine: RingTensor,
    pub next: RingTensor,
}

impl OutputShare {
    pub fn of(x: &AShare) -> Self {
        OutputShare {
            party: x.id(),
            mine: x.mine().clone(),
            next: x.next().clone(),
        }
    }
}

/// Reconstruct a result from the output shares of at least two parties (owner side). Components
/// received twice must agree; a disagreement means a party sent a wrong share.
pub fn reconstruct(parts: &[OutputShare]) -> Result<RingTensor> {
    let mut comps: [Option<&RingTensor>; 3] = [None, None, None];
    for p in parts {
        if p.party >= PARTIES {
            return Err(MpcError::invalid(
                "reconstruct",
                format!("party {}", p.party),
            ));
        }
        for (c, t) in [(p.party, &p.mine), ((p.party + 1) % 3, &p.next)] {
            match comps[c] {
                Some(prev) if prev != t => {
                    return Err(MpcError::invalid(
                        "reconstruct",
                        format!("parties disagree on share component {c}"),
                    ))
                }
                _ => comps[c] = Some(t),
            }
        }
    }
    match comps {
        [Some(a), Some(b), Some(c)] => Ok(a.add(b)?.add(c)?),
        _ => Err(MpcError::invalid(
            "reconstruct",
            "need the shares of at least two parties",
        )),
    }
}

impl Party {
    /// Share a tensor that party `owner` holds in the clear (`x` is `Some` exactly there).
    ///
    /// Components: c_{o+1} = F(k_{o+1}) (drawn by P_o and P_{o+1}), c_{o+2} = 0, c_o = x - c_{o+1},
    /// sent by the owner P_o to P_{o+2}. Cost: 1 round, 8n bytes from the owner, 0 from the others.
    /// Safe: P_{o+1} sees (c_{o+1}, 0), uniform; P_{o+2} sees (0, x - c_{o+1}), masked by c_{o+1},
    /// which it does not know.
    pub fn input(&self, owner: PartyId, x: Option<&RingTensor>, shape: &[usize]) -> Result<AShare> {
        let cx = self.begin("input");
        if owner >= PARTIES {
            return Err(MpcError::invalid(
                "input",
                format!("owner P{owner} does not exist"),
            ));
        }
        let n: usize = shape.iter().product();
        let me = self.id();
        let (o1, o2) = ((owner + 1) % 3, (owner + 2) % 3);
        if me == owner {
            let x =
                x.ok_or_else(|| MpcError::invalid("input", "the owner must supply the tensor"))?;
            if x.shape() != shape {
                return Err(MpcError::invalid(
                    "input",
                    format!("tensor {:?} vs announced {shape:?}", x.shape()),
                ));
            }
            let r = RingTensor::new(shape, cx.draw_abs(o1, 0, n))?;
            let c_o = x.sub(&r)?;
            cx.send_abs(o2, encode_words(c_o.data()))?;
            AShare::from_parts(me, c_o, r)
        } else if me == o1 {
            let r = RingTensor::new(shape, cx.draw_abs(o1, 0, n))?;
            AShare::from_parts(me, r, RingTensor::zeros(shape))
        } else {
            let c_o = decode_words("input", owner, &cx.recv_abs(owner)?, n)?;
            AShare::from_parts(me, RingTensor::zeros(shape), RingTensor::new(shape, c_o)?)
        }
    }

    /// Open `x` to all three parties. Each P_i sends x_{i+1} to P_{i-1}: 1 round, 8n bytes per
    /// party. Only for values every party may learn (masked values inside protocols, public
    /// results).
    pub fn reveal_all(&self, x: &AShare) -> Result<RingTensor> {
        let cx = self.begin("reveal");
        let me = self.id();
        let (prev, next) = ((me + 2) % 3, (me + 1) % 3);
        cx.send_abs(prev, encode_words(x.next().data()))?;
        let missing = decode_words("reveal", next, &cx.recv_abs(next)?, x.len())?;
        let missing = RingTensor::new(x.shape(), missing)?;
        Ok(x.mine().add(x.next())?.add(&missing)?)
    }

    /// Open `x` to party `to` only (others get `None`). P_{to+1} sends x_{to+2}: 1 round, 8n bytes
    /// in total.
    pub fn reveal_to(&self, x: &AShare, to: PartyId) -> Result<Option<RingTensor>> {
        let cx = self.begin("reveal_to");
        if to >= PARTIES {
            return Err(MpcError::invalid(
                "reveal_to",
                format!("P{to} does not exist"),
            ));
        }
        let me = self.id();
        if me == (to + 1) % 3 {
            cx.send_abs(to, encode_words(x.next().data()))?;
            Ok(None)
        } else if me == to {
            let from = (to + 1) % 3;
            let missing = decode_words("reveal_to", from, &cx.recv_abs(from)?, x.len())?;
            let missing = RingTensor::new(x.shape(), missing)?;
            Ok(Some(x.mine().add(x.next())?.add(&missing)?))
        } else {
            Ok(None)
        }
    }

    /// Open a boolean share to all parties; returns the planes. 1 round, 8 * planes * words bytes
    /// per party.
    pub fn reveal_bits_all(&self, b: &BShare) -> Result<Vec<u64>> {
        let cx = self.begin("reveal_bits");
        let me = self.id();
        let (prev, next) = ((me + 2) % 3, (me + 1) % 3);
        cx.send_abs(prev, encode_words(b.next()))?;
        let missing = decode_words("reveal_bits", next, &cx.recv_abs(next)?, b.mine().len())?;
        Ok(b.mine()
            .iter()
            .zip(b.next())
            .zip(&missing)
            .map(|((a, c), d)| a ^ c ^ d)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn dealing_round_trips_through_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x = RingTensor::new(&[2, 3], vec![1, 2, 3, u64::MAX, 5, 6]).unwrap();
        let msgs = deal(&x, &mut rng);
        let shares: Vec<AShare> = msgs
            .iter()
            .map(|m| {
                OwnerShare::from_bytes(&m.to_bytes())
                    .unwrap()
                    .into_share(m.party)
                    .unwrap()
            })
            .collect();
        let parts: Vec<OutputShare> = shares.iter().map(OutputShare::of).collect();
        assert_eq!(reconstruct(&parts).unwrap(), x);
        assert_eq!(reconstruct(&parts[1..]).unwrap(), x);
        assert!(reconstruct(&parts[..1]).is_err());
        let mut bad = parts.clone();
        bad[2].next = bad[2].next.add_scalar(1);
        assert!(reconstruct(&bad).is_err());
        // Truncated, padded and misaddressed messages are errors.
        let b = msgs[1].to_bytes();
        assert!(OwnerShare::from_bytes(&b[..b.len() - 1]).is_err());
        assert!(OwnerShare::from_bytes(&[b.clone(), vec![0]].concat()).is_err());
        assert!(OwnerShare::from_bytes(&b).unwrap().into_share(2).is_err());
        assert!(OwnerShare::from_bytes(&[9, 0]).is_err());
    }
}
