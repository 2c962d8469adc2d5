//! Test harness: deal plaintext inputs as an outside owner, run a protocol at three in-process
//! parties, reconstruct the outputs, and collect each party's metered cost and received messages.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpc::{deal, reconstruct, AShare, BShare, FixedConfig, OutputShare, Party, TruncMethod};
use net::{LocalMesh, Meter, NetError, PartyId, Transport};
use rand::{Rng, SeedableRng};
use ring::{FixedPoint, RingTensor};

pub type Log = Arc<Mutex<Vec<(PartyId, Vec<u8>)>>>;

/// A transport that records every message it receives.
pub struct Recording {
    pub inner: LocalMesh,
    pub log: Log,
}

impl Transport for Recording {
    fn id(&self) -> PartyId {
        self.inner.id()
    }
    fn send(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        self.inner.send(to, payload)
    }
    fn send_continuation(&self, to: PartyId, payload: Vec<u8>) -> Result<(), NetError> {
        self.inner.send_continuation(to, payload)
    }
    fn recv(&self, from: PartyId) -> Result<Vec<u8>, NetError> {
        let m = self.inner.recv(from)?;
        self.log.lock().unwrap().push((from, m.clone()));
        Ok(m)
    }
    fn meter(&self) -> &Meter {
        self.inner.meter()
    }
}

pub fn cfg(m: TruncMethod) -> FixedConfig {
    FixedConfig::new(18, m)
}

pub fn fp() -> FixedPoint {
    FixedPoint::new(18)
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub fn normal(rng: &mut impl Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            // Box-Muller.
            let (u, v): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
            scale * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

pub fn encode(shape: &[usize], vals: &[f64]) -> RingTensor {
    RingTensor::new(shape, fp().encode_slice(vals).unwrap()).unwrap()
}

/// What one party returns from a test run.
pub struct PartyOut<T> {
    pub value: T,
    pub bytes: u64,
    pub rounds: u64,
    pub by_label: Vec<(&'static str, u64, u64)>,
    pub first_nonce: u64,
    pub received: Vec<(PartyId, Vec<u8>)>,
}

/// Run `f` at three parties on owner-dealt shares of `inputs`; costs are metered from just
/// before `f` (setup and dealing excluded).
pub fn run<T: Send>(
    c: FixedConfig,
    inputs: &[RingTensor],
    f: impl Fn(&Party, &[AShare]) -> mpc::Result<T> + Sync,
) -> [PartyOut<T>; 3] {
    let mut r = rng(99);
    let dealt: Vec<[mpc::OwnerShare; 3]> = inputs.iter().map(|x| deal(x, &mut r)).collect();
    let [a, b, cc] = LocalMesh::triple(Duration::from_secs(30));
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let nets: Vec<Box<dyn Transport>> = [a, b, cc]
        .into_iter()
        .zip(&logs)
        .map(|(m, l)| {
            Box::new(Recording {
                inner: m,
                log: l.clone(),
            }) as Box<dyn Transport>
        })
        .collect();
    let out = mpc::run_with(nets, c, Some(5), |p| {
        let shares: Vec<AShare> = dealt
            .iter()
            .map(|d| d[p.id()].clone().into_share(p.id()))
            .collect::<mpc::Result<_>>()?;
        p.meter().reset();
        let first_nonce = p.peek_nonce();
        let v = f(p, &shares)?;
        let t = p.meter().total();
        let by_label = p
            .meter()
            .by_label()
            .into_iter()
            .map(|(l, c)| (l, c.bytes, c.rounds))
            .collect();
        Ok((v, t.bytes, t.rounds, by_label, first_nonce))
    })
    .expect("protocol run");
    let mut logs = logs.into_iter();
    out.map(|(value, bytes, rounds, by_label, first_nonce)| {
        let log = logs.next().unwrap();
        let mut received = std::mem::take(&mut *log.lock().unwrap());
        // Drop the setup messages (the first two received).
        received.drain(..2.min(received.len()));
        PartyOut {
            value,
            bytes,
            rounds,
            by_label,
            first_nonce,
            received,
        }
    })
}

pub fn open(outs: &[PartyOut<AShare>; 3]) -> RingTensor {
    let parts: Vec<OutputShare> = outs.iter().map(|o| OutputShare::of(&o.value)).collect();
    reconstruct(&parts).unwrap()
}

/// Open a 1-plane boolean share into 0/1 values.
pub fn open_bits(outs: &[PartyOut<BShare>; 3]) -> Vec<u64> {
    let b: Vec<&BShare> = outs.iter().map(|o| &o.value).collect();
    let planes: Vec<u64> = (0..b[0].mine().len())
        .map(|i| b[0].mine()[i] ^ b[1].mine()[i] ^ b[2].mine()[i])
        .collect();
    // Consistency of the replicated components.
    for p in 0..3 {
        assert_eq!(
            b[p].next(),
            b[(p + 1) % 3].mine(),
            "replicated components disagree"
        );
    }
    mpc::from_planes(&planes, b[0].bits(), b[0].len())
}

/// Assert each party's metered bytes and rounds equal `cost` under the rotation of its first
/// protocol's nonce.
pub fn assert_cost<T>(outs: &[PartyOut<T>; 3], cost: mpc::Cost) {
    let h = (outs[0].first_nonce % 3) as usize;
    for (p, o) in outs.iter().enumerate() {
        let (b, r) = cost.for_party(p, h);
        assert_eq!(
            (o.bytes, o.rounds),
            (b, r),
            "party P{p} (h = {h}): metered vs stated"
        );
    }
}

/// floor(a * b / 2^f) with a, b signed ring values (the exact truncated product).
pub fn trunc_prod(a: u64, b: u64, f: u32) -> i64 {
    let p = (a as i64 as i128) * (b as i64 as i128);
    (p >> f) as i64
}

/// Every received message of a run on all-zero secrets must look uniformly random: from 64
/// bytes on, its number of ones is within 5 standard deviations of half its bits (a uniform
/// message fails this with probability 6e-7; a fixed 0.45..0.55 of ones would be 2.3 sigma at
/// 64 bytes, failing 2% of uniform messages, and 50 sigma, far too loose, at 200 kB), and from
/// 512 bytes on no 64-bit word repeats. An unmasked opening of a zero secret fails this.
pub fn assert_masked(received: &[(PartyId, Vec<u8>)], what: &str) {
    for (from, m) in received {
        if m.len() < 64 {
            continue;
        }
        let bits = 8.0 * m.len() as f64;
        let ones: u64 = m.iter().map(|b| b.count_ones() as u64).sum();
        let sigmas = (ones as f64 - bits / 2.0) / (bits.sqrt() / 2.0);
        assert!(
            sigmas.abs() < 5.0,
            "{what}: message of {} bytes from P{from} is {sigmas:.1} sigma off balance",
            m.len()
        );
        if m.len() >= 8 * 64 && m.len() % 8 == 0 {
            let mut words: Vec<u64> = m
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            words.sort_unstable();
            words.dedup();
            assert_eq!(
                words.len(),
                m.len() / 8,
                "{what}: message from P{from} repeats a word"
            );
        }
    }
}
