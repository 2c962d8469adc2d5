//! The party context: who I am, my links, the session's fixed-point settings, and the PRF keys
//! agreed at session start.
//!
//! Keys. Party P_j samples k_j and sends it to P_{j-1}, so P_i holds k_i (shared with P_{i-1}) and
//! k_{i+1} (shared with P_{i+1}). Key k_m is held by exactly the two parties that hold share
//! component m (P_i holds components i and i+1), which is what makes correlated randomness free:
//! the holders of a component can draw the same random tensor for it. Each party also sends a
//! seed to both others; their XOR is a key known to all three (public coins), and each keeps a
//! private key. Setup costs one round and 16 + 32 bytes per party.
//!
//! Every protocol starts with [`Party::begin`], which takes the next nonce (all parties run the
//! same protocols in the same order, so nonces agree), opens a meter scope with the protocol's
//! name and picks the *helper rotation* `h = nonce mod 3`: protocols whose roles are asymmetric
//! describe them for relative parties R0, R1, R2 = P_h, P_{h+1}, P_{h+2}, so that the extra load
//! moves around the three parties from call to call.

use crate::config::FixedConfig;
use crate::error::{MpcError, Result};
use crate::prf::Prf;
use net::{MeterScope, PartyId, Transport, PARTIES};
use rand::{Rng, RngCore, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};

/// One party of the three-party computation.
pub struct Party {
    id: PartyId,
    net: Box<dyn Transport>,
    cfg: FixedConfig,
    /// k_id: shared with P_{id-1}; generates component `id`.
    key_prev: Prf,
    /// k_{id+1}: shared with P_{id+1}; generates component `id + 1`.
    key_next: Prf,
    /// Known to all three parties.
    key_all: Prf,
    /// Known to this party only.
    key_own: Prf,
    nonce: AtomicU64,
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Party(P{})", self.id)
    }
}

/// Purpose numbers of the setup exchange.
const SETUP: &str = "setup";

impl Party {
    /// Agree on keys with the other two parties (one round), with seeds from the OS.
    pub fn setup(net: Box<dyn Transport>, cfg: FixedConfig) -> Result<Party> {
        let mut rng = rand::rngs::StdRng::from_entropy();
        Self::setup_with_rng(net, cfg, &mut rng)
    }

    /// Agree on keys with seeds from `rng` (deterministic tests and benchmarks).
    pub fn setup_with_rng(
        net: Box<dyn Transport>,
        cfg: FixedConfig,
        rng: &mut impl RngCore,
    ) -> Result<Party> {
        if cfg.frac_bits == 0 || cfg.frac_bits > 40 {
            return Err(MpcError::invalid(
                SETUP,
                format!("fractional bits must be in 1..=40, got {}", cfg.frac_bits),
            ));
        }
        let id = net.id();
        if id >= PARTIES {
            return Err(MpcError::invalid(
                SETUP,
                format!("party id {id} is not 0, 1 or 2"),
            ));
        }
        let mut own_k: [u8; 16] = rng.gen();
        let mut all_seed: [u8; 16] = rng.gen();
        let private: [u8; 16] = rng.gen();
        let (prev, next) = ((id + 2) % 3, (id + 1) % 3);
        let (key_next_bytes, all) = {
            let _s = net.meter().scope(SETUP);
            let mut to_prev = own_k.to_vec();
            to_prev.extend_from_slice(&all_seed);
            net.send(prev, to_prev)?;
            net.send(next, all_seed.to_vec())?;
            let from_next = net.recv(next)?;
            let from_prev = net.recv(prev)?;
            if from_next.len() != 32 {
                return Err(MpcError::BadMessage {
                    protocol: SETUP,
                    from: next,
                    expected: 32,
                    got: from_next.len(),
                });
            }
            if from_prev.len() != 16 {
                return Err(MpcError::BadMessage {
                    protocol: SETUP,
                    from: prev,
                    expected: 16,
                    got: from_prev.len(),
                });
            }
            let kn: [u8; 16] = from_next[..16].try_into().expect("16 bytes");
            let mut all = all_seed;
            for i in 0..16 {
                all[i] ^= from_next[16 + i] ^ from_prev[i];
            }
            (kn, all)
        };
        let party = Party {
            id,
            net,
            cfg,
            key_prev: Prf::new(own_k),
            key_next: Prf::new(key_next_bytes),
            key_all: Prf::new(all),
            key_own: Prf::new(private),
            nonce: AtomicU64::new(0),
        };
        own_k.fill(0);
        all_seed.fill(0);
        Ok(party)
    }

    pub fn id(&self) -> PartyId {
        self.id
    }
    pub fn config(&self) -> FixedConfig {
        self.cfg
    }
    pub fn set_config(&mut self, cfg: FixedConfig) {
        self.cfg = cfg;
    }
    pub fn frac_bits(&self) -> u32 {
        self.cfg.frac_bits
    }
    pub fn net(&self) -> &dyn Transport {
        self.net.as_ref()
    }
    pub fn meter(&self) -> &net::Meter {
        self.net.meter()
    }

    /// The nonce the next protocol will take (tests use it to predict the helper rotation).
    pub fn peek_nonce(&self) -> u64 {
        self.nonce.load(Ordering::Relaxed)
    }

    /// Start a protocol: take a nonce, open the meter scope `label`, pick the helper rotation.
    pub fn begin(&self, label: &'static str) -> Ctx<'_> {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        Ctx {
            party: self,
            label,
            nonce,
            h: (nonce % 3) as usize,
            _scope: self.net.meter().scope(label),
        }
    }

    /// Random words known to the holders of absolute component `comp` (which must be one of
    /// mine): the same tensor at both holders.
    pub(crate) fn comp_prf(&self, comp: usize) -> &Prf {
        if comp % 3 == self.id {
            &self.key_prev
        } else if comp % 3 == (self.id + 1) % 3 {
            &self.key_next
        } else {
            panic!("P{} does not hold component {comp}: protocol bug", self.id)
        }
    }

    pub(crate) fn prf_all(&self) -> &Prf {
        &self.key_all
    }
    pub(crate) fn prf_own(&self) -> &Prf {
        &self.key_own
    }
}

/// One protocol invocation at one party (see [`Party::begin`]).
pub struct Ctx<'a> {
    pub party: &'a Party,
    pub label: &'static str,
    pub nonce: u64,
    /// Helper rotation: relative party R_j is absolute party (h + j) mod 3.
    pub h: usize,
    _scope: MeterScope<'a>,
}

impl Ctx<'_> {
    /// My relative role: 0, 1 or 2.
    pub fn role(&self) -> usize {
        (self.party.id + 3 - self.h) % 3
    }
    /// The absolute id of relative party (or component) `rel`.
    pub fn abs(&self, rel: usize) -> PartyId {
        (self.h + rel) % 3
    }
    /// The PRF key of relative component `rel_comp` (I must hold it).
    pub(crate) fn prf_rel(&self, rel_comp: usize) -> &Prf {
        self.party.comp_prf(self.abs(rel_comp))
    }
    /// Draw `n` words for relative component `rel_comp` (I must hold it).
    pub fn draw_comp(&self, rel_comp: usize, purpose: u32, n: usize) -> Vec<u64> {
        self.party
            .comp_prf(self.abs(rel_comp))
            .words(self.nonce, purpose, n)
    }
    /// Draw `n` words for absolute component `comp`.
    pub fn draw_abs(&self, comp: usize, purpose: u32, n: usize) -> Vec<u64> {
        self.party.comp_prf(comp).words(self.nonce, purpose, n)
    }
    /// Words known to all three parties.
    pub fn draw_all(&self, purpose: u32, n: usize) -> Vec<u64> {
        self.party.prf_all().words(self.nonce, purpose, n)
    }
    /// Words known to me only.
    pub fn draw_own(&self, purpose: u32, n: usize) -> Vec<u64> {
        self.party.prf_own().words(self.nonce, purpose, n)
    }
    /// My share of a fresh additive zero-sharing: F(k_id) - F(k_{id+1}) (the three sum to 0).
    pub fn zero_share(&self, purpose: u32, n: usize) -> Vec<u64> {
        let a = self.draw_abs(self.party.id, purpose, n);
        let b = self.draw_abs(self.party.id + 1, purpose, n);
        a.iter().zip(&b).map(|(x, y)| x.wrapping_sub(*y)).collect()
    }
    /// Add my share of a fresh additive zero-sharing to `out` (no allocation).
    pub fn add_zero_share(&self, purpose: u32, out: &mut [u64]) {
        let id = self.party.id;
        self.party
            .comp_prf(id)
            .add_into(self.nonce, purpose, out, false);
        self.party
            .comp_prf(id + 1)
            .add_into(self.nonce, purpose, out, true);
    }
    /// XOR my share of a fresh XOR zero-sharing into `out` (no allocation).
    pub fn xor_zero_share(&self, purpose: u32, out: &mut [u64]) {
        let id = self.party.id;
        self.party.comp_prf(id).xor_into(self.nonce, purpose, out);
        self.party
            .comp_prf(id + 1)
            .xor_into(self.nonce, purpose, out);
    }
    /// My share of a fresh XOR zero-sharing.
    pub fn zero_share_xor(&self, purpose: u32, n: usize) -> Vec<u64> {
        let a = self.draw_abs(self.party.id, purpose, n);
        let b = self.draw_abs(self.party.id + 1, purpose, n);
        a.iter().zip(&b).map(|(x, y)| x ^ y).collect()
    }
    pub fn send_abs(&self, to: PartyId, bytes: Vec<u8>) -> Result<()> {
        Ok(self.party.net.send(to, bytes)?)
    }
    pub fn recv_abs(&self, from: PartyId) -> Result<Vec<u8>> {
        Ok(self.party.net.recv(from)?)
    }
    /// Send to relative party `rel`.
    pub fn send(&self, rel: usize, bytes: Vec<u8>) -> Result<()> {
        self.send_abs(self.abs(rel), bytes)
    }
    /// Send piece `index` of a message that a pipelined protocol sends in pieces to relative
    /// party `rel`: piece 0 is metered as any send, later pieces as its continuation (bytes and
    /// messages, not rounds: their contents depend on nothing received after piece 0 went out
    /// but what piece 0's round already depended on).
    pub fn send_piece(&self, rel: usize, index: usize, bytes: Vec<u8>) -> Result<()> {
        if index == 0 {
            return self.send(rel, bytes);
        }
        Ok(self.party.net.send_continuation(self.abs(rel), bytes)?)
    }
    /// Receive from relative party `rel`.
    pub fn recv(&self, rel: usize) -> Result<Vec<u8>> {
        self.recv_abs(self.abs(rel))
    }
    pub fn id(&self) -> PartyId {
        self.party.id
    }
}
