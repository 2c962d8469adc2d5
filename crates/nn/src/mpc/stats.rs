//! Per-op accounting of a backend run: wall time, bytes sent and rounds of each `Backend` op
//! (conv2d, silu, softmax, ...), measured as the difference of the party's meter totals around
//! the op. This is the model-level view of the report; the protocol-level view is the meter's
//! own per-label records.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use net::Meter;

/// What one op cost, summed over its calls.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpCost {
    pub calls: u64,
    pub seconds: f64,
    pub bytes: u64,
    pub rounds: u64,
}

/// Running totals per op name. Nested ops (an op implemented with others) are charged to the
/// outermost one only.
#[derive(Default)]
pub struct OpStats {
    ops: RefCell<BTreeMap<&'static str, OpCost>>,
    depth: Cell<u32>,
}

impl OpStats {
    /// Runs `f` as op `name`, charging its time and its traffic on `meter`.
    pub fn track<T>(&self, name: &'static str, meter: &Meter, f: impl FnOnce() -> T) -> T {
        if self.depth.get() > 0 {
            return f();
        }
        self.depth.set(1);
        let before = meter.total();
        let start = Instant::now();
        let out = f();
        let seconds = start.elapsed().as_secs_f64();
        let after = meter.total();
        self.depth.set(0);
        let mut ops = self.ops.borrow_mut();
        let c = ops.entry(name).or_default();
        c.calls += 1;
        c.seconds += seconds;
        c.bytes += after.bytes - before.bytes;
        c.rounds += after.rounds - before.rounds;
        out
    }

    /// The totals so far, by op name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, OpCost> {
        self.ops.borrow().clone()
    }

    pub fn reset(&self) {
        self.ops.borrow_mut().clear();
    }
}
