//! Opening a link: TCP connect (with retries until a deadline, so start order does not matter)
//! or accept, optional TLS, then the secdiff hello in which each side states its role, session
//! id and protocol version.
//!
//! ```text
//! hello:  magic "SDHS" | version u16 | role u8 | status u8 (0 ok, 1 refused) | session u64
//! refusal: a hello with status 1, then reason length u16 and the UTF-8 reason
//! ```
//! The dialer speaks first; the acceptor checks the hello (and, under TLS, that the dialer's
//! certificate names the role it claims) and answers with its own hello or with a refusal that
//! tells the dialer why, so a misconfigured participant gets a clear error on its own side too.

use crate::frame::PROTOCOL_VERSION;
use crate::stream::Stream;
use crate::tls::{check_peer_role, TlsIdentity};
use crate::{NetError, Peer};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HELLO_MAGIC: [u8; 4] = *b"SDHS";
const HELLO_LEN: usize = 16;
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;
/// Longest wait for an accepted connection's TLS handshake and hello, so that a silent
/// stranger cannot hold up the accept loop for the whole connect timeout.
const ACCEPT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a participant needs to open links.
#[derive(Clone, Copy)]
pub(crate) struct Handshake<'a> {
    pub me: Peer,
    pub session: u64,
    /// Bound on connecting and on each handshake step.
    pub connect_timeout: Duration,
    pub tls: Option<&'a TlsIdentity>,
    /// When set (another link of the same mesh failed), waiting stops early.
    pub cancel: Option<&'a AtomicBool>,
}

struct Hello {
    version: u16,
    role: u8,
    status: u8,
    session: u64,
}

fn encode_hello(role: Peer, session: u64, status: u8) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[0..4].copy_from_slice(&HELLO_MAGIC);
    h[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h[6] = role.code();
    h[7] = status;
    h[8..16].copy_from_slice(&session.to_le_bytes());
    h
}

fn read_hello(s: &mut impl Read) -> Result<Hello, String> {
    let mut h = [0u8; HELLO_LEN];
    s.read_exact(&mut h).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => "connection closed during the handshake".to_string(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "no hello within the timeout".to_string(),
        _ => e.to_string(),
    })?;
    if h[0..4] != HELLO_MAGIC {
        return Err(format!(
            "not a secdiff peer (hello starts with {:02x?}; plaintext talking to TLS?)",
            &h[0..4]
        ));
    }
    Ok(Hello {
        version: u16::from_le_bytes([h[4], h[5]]),
        role: h[6],
        status: h[7],
        session: u64::from_le_bytes(h[8..16].try_into().unwrap()),
    })
}

fn check_common(h: &Hello, session: u64) -> Result<Peer, String> {
    if h.version != PROTOCOL_VERSION {
        return Err(format!(
            "it speaks protocol version {}, this side speaks {PROTOCOL_VERSION}",
            h.version
        ));
    }
    let role = Peer::from_code(h.role).ok_or(format!("unknown role code {:#x}", h.role))?;
    if h.session != session {
        return Err(format!(
            "{role} is in session {:#x}, this side in session {session:#x}",
            h.session
        ));
    }
    Ok(role)
}

fn prepare(sock: &TcpStream, timeout: Duration) -> io::Result<()> {
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))
}

/// Drives a TLS handshake to completion on a blocking socket.
fn finish_tls(sock: &mut TcpStream, conn: &mut rustls::Connection) -> Result<(), String> {
    while conn.is_handshaking() {
        conn.complete_io(sock).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => "TLS handshake timed out".to_string(),
            ErrorKind::UnexpectedEof => {
                "connection closed during the TLS handshake (certificate refused?)".to_string()
            }
            _ => format!("TLS: {e}"),
        })?;
    }
    Ok(())
}

impl Handshake<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// Connects to `target` at `addr`, retrying refused connections until the connect timeout.
    pub fn dial(&self, target: Peer, addr: SocketAddr) -> Result<Stream, NetError> {
        let deadline = Instant::now() + self.connect_timeout;
        let mut sock = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = if left.is_zero() {
                Err(io::Error::from(ErrorKind::TimedOut))
            } else {
                TcpStream::connect_timeout(&addr, left)
            };
            match attempt {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline && retryable(&e) && !self.cancelled() => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(source) => {
                    return Err(NetError::Connect {
                        peer: target,
                        addr: addr.to_string(),
                        timeout: self.connect_timeout,
                        source,
                    })
                }
            }
        };
        let fail = |detail: String| NetError::Handshake {
            peer: target,
            detail,
        };
        prepare(&sock, self.connect_timeout).map_err(|e| fail(e.to_string()))?;
        let mut stream = match self.tls {
            None => Stream::Plain(sock),
            Some(id) => {
                let mut conn = id.dial(target)?;
                finish_tls(&mut sock, &mut conn).map_err(fail)?;
                Stream::Tls(sock, Box::new(conn))
            }
        };
        stream
            .write_all(&encode_hello(self.me, self.session, STATUS_OK))
            .and_then(|_| stream.flush())
            .map_err(|e| fail(format!("sending hello: {e}")))?;
        let reply = read_hello(&mut stream).map_err(fail)?;
        if reply.status == STATUS_REFUSED {
            let mut len = [0u8; 2];
            let mut reason = String::from("(no reason given)");
            if stream.read_exact(&mut len).is_ok() {
                let mut buf = vec![0u8; u16::from_le_bytes(len) as usize];
                if stream.read_exact(&mut buf).is_ok() {
                    reason = String::from_utf8_lossy(&buf).into_owned();
                }
            }
            return Err(fail(format!("{target} refused us: {reason}")));
        }
        let role = check_common(&reply, self.session).map_err(fail)?;
        if role != target {
            return Err(fail(format!(
                "expected {target} at {addr}, but {role} answered"
            )));
        }
        Ok(stream)
    }

    /// Accepts one connection before `deadline` and completes its handshake. `admit` says
    /// whether a role may connect here (and why not). Returns the dialer's role. A refused
    /// dialer is told why; the error is [`NetError::Handshake`] naming it if it proved its role,
    /// else [`NetError::Stranger`] (garbage, failed TLS, an impostor).
    pub fn accept(
        &self,
        listener: &TcpListener,
        deadline: Instant,
        waiting_for: &str,
        admit: &dyn Fn(Peer) -> Result<(), String>,
    ) -> Result<(Peer, Stream), NetError> {
        listener
            .set_nonblocking(true)
            .map_err(|e| NetError::Setup(format!("listener: {e}")))?;
        let (mut sock, from) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    if Instant::now() >= deadline || self.cancelled() {
                        return Err(NetError::AcceptTimeout {
                            waiting_for: waiting_for.to_string(),
                            timeout: self.connect_timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(NetError::Setup(format!("accepting a connection: {e}"))),
            }
        };
        let stranger = |detail: String| NetError::Stranger {
            addr: from.to_string(),
            detail,
        };
        sock.set_nonblocking(false)
            .and_then(|_| prepare(&sock, self.connect_timeout.min(ACCEPT_HELLO_TIMEOUT)))
            .map_err(|e| stranger(e.to_string()))?;
        let mut stream = match self.tls {
            None => Stream::Plain(sock),
            Some(id) => {
                let mut conn = id.accept()?;
                finish_tls(&mut sock, &mut conn).map_err(stranger)?;
                Stream::Tls(sock, Box::new(conn))
            }
        };
        let hello = read_hello(&mut stream).map_err(stranger)?;
        let verdict = check_common(&hello, self.session).and_then(|role| {
            if let Stream::Tls(_, conn) = &stream {
                check_peer_role(conn, role)
                    .map_err(|e| format!("it claims to be {role} but {e}"))?;
            }
            admit(role)?;
            Ok(role)
        });
        match verdict {
            Ok(role) => {
                stream
                    .write_all(&encode_hello(self.me, self.session, STATUS_OK))
                    .and_then(|_| stream.flush())
                    .map_err(|e| NetError::Handshake {
                        peer: role,
                        detail: format!("answering hello: {e}"),
                    })?;
                Ok((role, stream))
            }
            Err(reason) => {
                // Name the dialer only if it proved the role it claims (any role without TLS).
                let proven = Peer::from_code(hello.role).filter(|&r| match &stream {
                    Stream::Tls(_, conn) => check_peer_role(conn, r).is_ok(),
                    Stream::Plain(_) => true,
                });
                let mut refusal = encode_hello(self.me, self.session, STATUS_REFUSED).to_vec();
                let text = &reason.as_bytes()[..reason.len().min(1000)];
                refusal.extend_from_slice(&(text.len() as u16).to_le_bytes());
                refusal.extend_from_slice(text);
                let _ = stream.write_all(&refusal).and_then(|_| stream.flush());
                Err(match proven {
                    Some(peer) => NetError::Handshake {
                        peer,
                        detail: reason,
                    },
                    None => stranger(reason),
                })
            }
        }
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::TimedOut
            | ErrorKind::AddrNotAvailable
            | ErrorKind::Interrupted
    )
}
