//! Byte and round accounting per party, attributed to the protocol that sent the traffic.
//!
//! Protocols open a [`MeterScope`] with their name; every byte sent while the scope is open is
//! charged to it (nested scopes charge the innermost). A *round* is counted each time the party
//! sends after having received since its previous send: a protocol whose messages all go out
//! before any reply is awaited costs one round, whatever its number of messages. A pipelined
//! protocol that sends one logical message in pieces, interleaved with the pieces it receives,
//! sends every piece after the first as a continuation ([`Meter::record_continuation`]): the
//! piece is counted in bytes and messages but not as a round, and does not end the receive phase
//! that the next ordinary send is counted against.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Cost charged to one protocol label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CostRecord {
    pub bytes: u64,
    pub messages: u64,
    pub rounds: u64,
}

#[derive(Default)]
struct Inner {
    stack: Vec<&'static str>,
    by_label: BTreeMap<&'static str, CostRecord>,
    total: CostRecord,
    received_since_send: bool,
    ever_sent: bool,
}

/// The counters of one party.
#[derive(Default)]
pub struct Meter {
    inner: Mutex<Inner>,
}

/// Charges traffic to a label until dropped.
pub struct MeterScope<'a> {
    meter: &'a Meter,
}

impl Drop for MeterScope<'_> {
    fn drop(&mut self) {
        self.meter.lock().stack.pop();
    }
}

impl Meter {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned meter only means another thread panicked mid-update; the counts are still
        // the best we have.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charge everything sent until the returned guard drops to `label`.
    pub fn scope(&self, label: &'static str) -> MeterScope<'_> {
        self.lock().stack.push(label);
        MeterScope { meter: self }
    }

    /// Called by transports for every message sent.
    pub fn record_send(&self, bytes: usize) {
        self.record(bytes, false);
    }

    /// Called by transports for a message sent as a later piece of a message this party began
    /// sending in an earlier send (a pipelined protocol's piece whose contents depend on
    /// nothing received since that message's round began): bytes and a message, never a round.
    pub fn record_continuation(&self, bytes: usize) {
        self.record(bytes, true);
    }

    fn record(&self, bytes: usize, continuation: bool) {
        let mut m = self.lock();
        // A continuation of nothing (the first send since a reset) is an ordinary send.
        let continuation = continuation && m.ever_sent;
        let new_round = !continuation && (m.received_since_send || !m.ever_sent);
        if !continuation {
            m.received_since_send = false;
        }
        m.ever_sent = true;
        let label = m.stack.last().copied().unwrap_or("unattributed");
        let rec = m.by_label.entry(label).or_default();
        rec.bytes += bytes as u64;
        rec.messages += 1;
        if new_round {
            rec.rounds += 1;
        }
        m.total.bytes += bytes as u64;
        m.total.messages += 1;
        if new_round {
            m.total.rounds += 1;
        }
    }

    /// Called by transports for every message received.
    pub fn record_recv(&self) {
        self.lock().received_since_send = true;
    }

    /// Totals over all labels.
    pub fn total(&self) -> CostRecord {
        self.lock().total.clone()
    }

    /// Per-label costs, sorted by label.
    pub fn by_label(&self) -> Vec<(&'static str, CostRecord)> {
        self.lock()
            .by_label
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Zero every counter (scopes stay open).
    pub fn reset(&self) {
        let mut m = self.lock();
        m.by_label.clear();
        m.total = CostRecord::default();
        m.received_since_send = false;
        m.ever_sent = false;
    }
}
