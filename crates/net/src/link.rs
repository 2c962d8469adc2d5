//! One framed link to one peer. A reader thread decodes frames as they arrive (so the peer's
//! sends never wait for us, whatever we are doing) and a sender thread fed by a channel writes
//! large messages (so `send` never waits for the peer). A small message sent while nothing is
//! queued is written by the caller itself, which saves a thread hand-off per message on the
//! latency-bound rounds of the protocols. `recv` waits on the reader's channel for at most the
//! timeout; once the link is known dead, every `recv` fails at once with the same error.

use crate::frame::{Frame, FrameKind, FrameReader, FrameWriter};
use crate::stream::{Halves, Stream, WriteHalf};
use crate::{NetError, Peer};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::io::ErrorKind;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest payload the caller writes itself; it fits in the kernel's socket buffer, so such a
/// write does not wait for the peer in practice.
const DIRECT_MAX: usize = 64 << 10;

/// Framing and timing rules of a link.
#[derive(Clone, Copy, Debug)]
pub struct LinkOptions {
    pub session: u64,
    pub recv_timeout: Duration,
    pub max_frame: u64,
}

pub(crate) enum Outgoing {
    /// A frame queued by `send` (counted in `queued`).
    Frame(FrameKind, Vec<u8>),
    /// A frame from another link's failure hook (an abort notice; not counted).
    Relay(FrameKind, Vec<u8>),
    /// Send a goodbye frame, close the stream and stop.
    Close,
}

/// Called once by the reader thread when the link fails abnormally (not on an orderly close).
pub(crate) type FailureHook = Box<dyn FnOnce(&NetError) + Send>;

/// The write side, shared by the sender thread and callers that write small messages directly.
struct WriteSide {
    frames: FrameWriter<Box<dyn WriteHalf>>,
    broken: bool,
}

/// State shared by the link handle and its threads.
struct Shared {
    peer: Peer,
    opts: LinkOptions,
    writer: Mutex<WriteSide>,
    /// Frames handed to the sender thread and not yet written; direct writes wait for zero so
    /// that frames keep their order.
    queued: AtomicUsize,
    /// The first fatal error seen on this link.
    failure: Mutex<Option<NetError>>,
    closing: AtomicBool,
    socket: TcpStream,
}

impl Shared {
    fn remember(&self, err: &NetError) {
        let mut s = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = Some(err.replicate());
        }
    }

    fn failed(&self) -> NetError {
        let f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match &*f {
            Some(e) => e.replicate(),
            None => NetError::Closed { peer: self.peer },
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, WriteSide> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one frame with the write side held; a failure ends the link.
    fn write(&self, w: &mut WriteSide, kind: FrameKind, payload: &[u8]) -> Result<(), NetError> {
        if w.broken {
            return Err(self.failed());
        }
        w.frames.write_frame(kind, payload).map_err(|source| {
            let peer = self.peer;
            let err = match source.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => NetError::Timeout {
                    peer,
                    timeout: self.opts.recv_timeout,
                },
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => NetError::Died { peer },
                _ => NetError::Io { peer, source },
            };
            w.broken = true;
            self.remember(&err);
            let _ = self.socket.shutdown(Shutdown::Both);
            err
        })
    }
}

pub(crate) struct Link {
    shared: Arc<Shared>,
    outgoing: Sender<Outgoing>,
    incoming: Receiver<Result<Vec<u8>, NetError>>,
    threads: Vec<JoinHandle<()>>,
}

impl Link {
    /// Starts the two threads. `outgoing` is created by the caller so that other links' failure
    /// hooks can hold a sender to this one before it exists.
    pub fn spawn(
        peer: Peer,
        stream: Stream,
        opts: LinkOptions,
        outgoing: (Sender<Outgoing>, Receiver<Outgoing>),
        on_failure: Option<FailureHook>,
    ) -> Result<Link, NetError> {
        let io_err = |source| NetError::Io { peer, source };
        let sock = stream.socket();
        sock.set_read_timeout(None).map_err(io_err)?;
        // A peer that takes no bytes for a whole timeout is as dead as one that sends none.
        sock.set_write_timeout(Some(opts.recv_timeout))
            .map_err(io_err)?;
        let Halves {
            reader,
            writer,
            socket,
        } = stream.split().map_err(io_err)?;
        let shared = Arc::new(Shared {
            peer,
            opts,
            writer: Mutex::new(WriteSide {
                frames: FrameWriter::new(writer, opts.session),
                broken: false,
            }),
            queued: AtomicUsize::new(0),
            failure: Mutex::new(None),
            closing: AtomicBool::new(false),
            socket,
        });
        let (in_tx, in_rx) = unbounded();
        let (out_tx, out_rx) = outgoing;

        let reader_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("net-read-{peer}"))
                .spawn(move || {
                    let mut frames = FrameReader::new(reader, peer, opts.session, opts.max_frame);
                    let end = loop {
                        match frames.read_frame() {
                            Ok(Frame::Data(payload)) => {
                                if in_tx.send(Ok(payload)).is_err() {
                                    return;
                                }
                            }
                            Ok(Frame::Goodbye) => break NetError::Closed { peer },
                            Ok(Frame::Abort(reason)) => break NetError::Aborted { peer, reason },
                            Err(e) => {
                                if shared.closing.load(Ordering::SeqCst) {
                                    break NetError::Closed { peer };
                                }
                                if let Some(hook) = on_failure {
                                    hook(&e);
                                }
                                break e;
                            }
                        }
                    };
                    shared.remember(&end);
                    let _ = in_tx.send(Err(end));
                })
                .map_err(io_err)?
        };

        let writer_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("net-write-{peer}"))
                .spawn(move || {
                    loop {
                        let (kind, payload, counted) = match out_rx.recv() {
                            Ok(Outgoing::Frame(k, p)) => (k, p, true),
                            Ok(Outgoing::Relay(k, p)) => (k, p, false),
                            Ok(Outgoing::Close) | Err(_) => break,
                        };
                        let mut w = shared.lock_writer();
                        let written = shared.write(&mut w, kind, &payload);
                        if counted {
                            shared.queued.fetch_sub(1, Ordering::SeqCst);
                        }
                        if written.is_err() {
                            return;
                        }
                    }
                    let mut w = shared.lock_writer();
                    if shared.write(&mut w, FrameKind::Goodbye, &[]).is_ok() {
                        let _ = w.frames.get_mut().close();
                    }
                })
                .map_err(io_err)?
        };

        Ok(Link {
            shared,
            outgoing: out_tx,
            incoming: in_rx,
            threads: vec![writer_thread, reader_thread],
        })
    }

    pub fn send(&self, payload: Vec<u8>) -> Result<(), NetError> {
        self.send_frame(FrameKind::Data, payload)
    }

    pub fn send_frame(&self, kind: FrameKind, payload: Vec<u8>) -> Result<(), NetError> {
        if payload.len() <= DIRECT_MAX {
            let guard = match self.shared.writer.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut w) = guard {
                if self.shared.queued.load(Ordering::SeqCst) == 0 {
                    return self.shared.write(&mut w, kind, &payload);
                }
            }
        }
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        self.outgoing
            .send(Outgoing::Frame(kind, payload))
            .map_err(|_| self.shared.failed())
    }

    pub fn recv(&self) -> Result<Vec<u8>, NetError> {
        let timeout = self.shared.opts.recv_timeout;
        match self.incoming.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(NetError::Timeout {
                peer: self.shared.peer,
                timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(self.shared.failed()),
        }
    }
}

impl Drop for Link {
    /// Flushes everything queued, says goodbye, then stops the reader.
    fn drop(&mut self) {
        let _ = self.outgoing.send(Outgoing::Close);
        if !self.threads.is_empty() {
            let _ = self.threads.remove(0).join();
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        let _ = self.shared.socket.shutdown(Shutdown::Read);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
