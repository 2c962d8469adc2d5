//! The in-process three-party runner: the same party code as the multi-process runner, in three
//! threads over the in-memory mesh (tests, benchmarks, `--local` runs).

use std::time::Duration;

use net::{LocalMesh, Transport};
use rand::SeedableRng;

use crate::config::FixedConfig;
use crate::error::{MpcError, Result};
use crate::party::Party;

/// Receive timeout of the in-process mesh.
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `f` at three parties connected by an in-memory mesh, each in its own thread, after key
/// setup. `seed` makes the PRF keys deterministic (tests); `None` draws them from the OS.
/// Returns the three results in party order, or the first error (a party that fails drops its
/// links, so the others fail promptly with an error that names it).
pub fn run_local<R: Send>(
    cfg: FixedConfig,
    seed: Option<u64>,
    f: impl Fn(&Party) -> Result<R> + Sync,
) -> Result<[R; 3]> {
    let [a, b, c] = LocalMesh::triple(LOCAL_TIMEOUT);
    run_with(vec![Box::new(a), Box::new(b), Box::new(c)], cfg, seed, f)
}

/// [`run_local`] over any three transports (one per party, in party order).
pub fn run_with<R: Send>(
    nets: Vec<Box<dyn Transport>>,
    cfg: FixedConfig,
    seed: Option<u64>,
    f: impl Fn(&Party) -> Result<R> + Sync,
) -> Result<[R; 3]> {
    if nets.len() != 3 {
        return Err(MpcError::invalid(
            "run_with",
            format!("{} transports for 3 parties", nets.len()),
        ));
    }
    let f = &f;
    let results: Vec<Result<R>> = std::thread::scope(|s| {
        let handles: Vec<_> = nets
            .into_iter()
            .map(|net| {
                s.spawn(move || {
                    let id = net.id();
                    let party = match seed {
                        Some(sd) => {
                            let mut rng = rand::rngs::StdRng::seed_from_u64(
                                sd.wrapping_mul(31).wrapping_add(id as u64),
                            );
                            Party::setup_with_rng(net, cfg, &mut rng)?
                        }
                        None => Party::setup(net, cfg)?,
                    };
                    f(&party)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(MpcError::invalid("run_local", "a party thread panicked"))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(3);
    let mut first_err: Option<MpcError> = None;
    for r in results {
        match r {
            Ok(v) => out.push(v),
            // Keep the root cause rather than the "link closed" errors it causes at the others.
            Err(e) => {
                let is_closed =
                    |e: &MpcError| matches!(e, MpcError::Net(net::NetError::Closed { .. }));
                if first_err.as_ref().is_none_or(is_closed) {
                    first_err = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(out
        .try_into()
        .unwrap_or_else(|_| unreachable!("three results")))
}

/// A transport held by the party and by the code that runs it, so that the runner can still
/// reach it (e.g. to abort a TCP session with a reason the other parties will see) after the
/// party failed.
pub struct SharedTransport<T: Transport>(pub std::sync::Arc<T>);

impl<T: Transport> Transport for SharedTransport<T> {
    fn id(&self) -> net::PartyId {
        self.0.id()
    }
    fn send(&self, to: net::PartyId, payload: Vec<u8>) -> std::result::Result<(), net::NetError> {
        self.0.send(to, payload)
    }
    fn send_continuation(
        &self,
        to: net::PartyId,
        payload: Vec<u8>,
    ) -> std::result::Result<(), net::NetError> {
        self.0.send_continuation(to, payload)
    }
    fn recv(&self, from: net::PartyId) -> std::result::Result<Vec<u8>, net::NetError> {
        self.0.recv(from)
    }
    fn meter(&self) -> &net::Meter {
        self.0.meter()
    }
}
