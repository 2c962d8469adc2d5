//! One framed link to one peer, driven by two threads: a sender fed by a channel (so `send`
//! never waits for the peer) and a reader that decodes frames as they arrive (so the peer's
//! sends never wait for us). `recv` waits on the reader's channel for at most the timeout; once
//! the reader has seen the link die, every `recv` fails at once with the same error.

use crate::frame::{Frame, FrameKind, FrameReader, FrameWriter};
use crate::stream::{Halves, Stream};
use crate::{NetError, Peer};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Framing and timing rules of a link.
#[derive(Clone, Copy, Debug)]
pub struct LinkOptions {
    pub session: u64,
    pub recv_timeout: Duration,
    pub max_frame: u64,
}

pub(crate) enum Outgoing {
    Frame(FrameKind, Vec<u8>),
    /// Send a goodbye frame, close the stream and stop.
    Close,
}

/// Called once by the reader thread when the link fails abnormally (not on an orderly close).
pub(crate) type FailureHook = Box<dyn FnOnce(&NetError) + Send>;

pub(crate) struct Link {
    peer: Peer,
    outgoing: Sender<Outgoing>,
    incoming: Receiver<Result<Vec<u8>, NetError>>,
    recv_timeout: Duration,
    socket: TcpStream,
    /// The first fatal error seen by either thread.
    failure: Arc<Mutex<Option<NetError>>>,
    closing: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn remember(slot: &Mutex<Option<NetError>>, err: &NetError) {
    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
    if s.is_none() {
        *s = Some(err.replicate());
    }
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
            mut writer,
            socket,
        } = stream.split().map_err(io_err)?;
        let failure = Arc::new(Mutex::new(None));
        let closing = Arc::new(AtomicBool::new(false));
        let (in_tx, in_rx) = unbounded();
        let (out_tx, out_rx) = outgoing;

        let reader_thread = {
            let failure = failure.clone();
            let closing = closing.clone();
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
                                if closing.load(Ordering::SeqCst) {
                                    break NetError::Closed { peer };
                                }
                                if let Some(hook) = on_failure {
                                    hook(&e);
                                }
                                break e;
                            }
                        }
                    };
                    remember(&failure, &end);
                    let _ = in_tx.send(Err(end));
                })
                .map_err(io_err)?
        };

        let writer_thread = {
            let failure = failure.clone();
            let socket = socket.try_clone().map_err(io_err)?;
            std::thread::Builder::new()
                .name(format!("net-write-{peer}"))
                .spawn(move || {
                    let mut frames = FrameWriter::new(&mut writer, opts.session);
                    while let Ok(Outgoing::Frame(kind, payload)) = out_rx.recv() {
                        if let Err(source) = frames.write_frame(kind, &payload) {
                            let err = match source.kind() {
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                                    NetError::Timeout {
                                        peer,
                                        timeout: opts.recv_timeout,
                                    }
                                }
                                std::io::ErrorKind::BrokenPipe
                                | std::io::ErrorKind::ConnectionReset => NetError::Died { peer },
                                _ => NetError::Io { peer, source },
                            };
                            remember(&failure, &err);
                            let _ = socket.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                    let _ = frames.write_frame(FrameKind::Goodbye, &[]);
                    drop(frames);
                    let _ = writer.close();
                })
                .map_err(io_err)?
        };

        Ok(Link {
            peer,
            outgoing: out_tx,
            incoming: in_rx,
            recv_timeout: opts.recv_timeout,
            socket,
            failure,
            closing,
            threads: vec![writer_thread, reader_thread],
        })
    }

    fn failed(&self) -> NetError {
        let f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match &*f {
            Some(e) => e.replicate(),
            None => NetError::Closed { peer: self.peer },
        }
    }

    pub fn send(&self, payload: Vec<u8>) -> Result<(), NetError> {
        self.send_frame(FrameKind::Data, payload)
    }

    pub fn send_frame(&self, kind: FrameKind, payload: Vec<u8>) -> Result<(), NetError> {
        self.outgoing
            .send(Outgoing::Frame(kind, payload))
            .map_err(|_| self.failed())
    }

    pub fn recv(&self) -> Result<Vec<u8>, NetError> {
        match self.incoming.recv_timeout(self.recv_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(NetError::Timeout {
                peer: self.peer,
                timeout: self.recv_timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(self.failed()),
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
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.socket.shutdown(Shutdown::Read);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
