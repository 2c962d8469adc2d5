//! Framing of the HE protocol's messages on a byte stream (TCP):
//!
//! ```text
//! magic "SDHE" | version u16 | kind u8 | seq u32 | length u64 | payload (length bytes)
//! ```
//!
//! Each direction numbers its frames from 0; a reader rejects a wrong magic, version, kind,
//! sequence number or an oversized length before reading the payload, and names the peer in every
//! error (a closed connection, a timeout, garbage). Timeouts are the stream's own (set on the
//! `TcpStream` by the caller).

use std::io::{ErrorKind, Read, Write};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"SDHE";
pub const PROTOCOL_VERSION: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + 1 + 4 + 8;
/// Far above any message of this protocol (a 4x64x64 step is ~2 MB, a batch of 256 MNIST latents
/// ~30 MB); a larger length is garbage or an attempt to make the peer allocate.
pub const MAX_PAYLOAD: u64 = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Ready = 2,
    Step = 3,
    StepResult = 4,
    Error = 5,
    Bye = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Ready,
            3 => Kind::Step,
            4 => Kind::StepResult,
            5 => Kind::Error,
            6 => Kind::Bye,
            _ => return None,
        })
    }
}

/// One end of a framed connection.
pub struct FramedStream<S> {
    stream: S,
    /// "server" or "client": who is at the other end.
    peer_role: &'static str,
    /// The role and address, for error messages.
    peer: String,
    send_seq: u32,
    recv_seq: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl<S: Read + Write> FramedStream<S> {
    /// `peer_role` ("server" or "client") and `addr` name the other side in errors.
    pub fn new(stream: S, peer_role: &'static str, addr: impl std::fmt::Display) -> Self {
        FramedStream {
            stream,
            peer_role,
            peer: format!("{peer_role} {addr}"),
            send_seq: 0,
            recv_seq: 0,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    fn io_error(&self, during: &str, e: std::io::Error) -> Error {
        let detail = match e.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
                format!("connection closed while {during}")
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("timed out while {during}"),
            _ => format!("{during}: {e}"),
        };
        Error::Network {
            peer: self.peer.clone(),
            detail,
        }
    }

    pub fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<()> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        header.push(kind as u8);
        header.extend_from_slice(&self.send_seq.to_le_bytes());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let during = format!("sending {kind:?} frame {}", self.send_seq);
        self.stream
            .write_all(&header)
            .and_then(|_| self.stream.write_all(payload))
            .and_then(|_| self.stream.flush())
            .map_err(|e| self.io_error(&during, e))?;
        self.send_seq = self.send_seq.wrapping_add(1);
        self.bytes_sent += (HEADER_LEN + payload.len()) as u64;
        Ok(())
    }

    /// Reads the next frame. A peer's `Error` frame becomes `Error::Remote`.
    pub fn recv(&mut self) -> Result<(Kind, Vec<u8>)> {
        let during = format!("waiting for frame {}", self.recv_seq);
        let mut header = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .map_err(|e| self.io_error(&during, e))?;
        let bad = |m: String| Error::Protocol(format!("from {}: {m}", self.peer));
        if &header[..4] != MAGIC {
            return Err(bad(format!(
                "not a secdiff HE frame (magic {:02x?})",
                &header[..4]
            )));
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != PROTOCOL_VERSION {
            return Err(bad(format!(
                "protocol version {version}, this build speaks {PROTOCOL_VERSION}"
            )));
        }
        let kind = Kind::from_u8(header[6])
            .ok_or_else(|| bad(format!("unknown frame kind {}", header[6])))?;
        let seq = u32::from_le_bytes(header[7..11].try_into().expect("4 bytes"));
        if seq != self.recv_seq {
            return Err(bad(format!(
                "frame sequence {seq}, expected {}",
                self.recv_seq
            )));
        }
        let len = u64::from_le_bytes(header[11..19].try_into().expect("8 bytes"));
        if len > MAX_PAYLOAD {
            return Err(bad(format!(
                "frame of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit"
            )));
        }
        let mut payload = vec![0u8; len as usize];
        let during = format!("reading the {len}-byte payload of {kind:?} frame {seq}");
        self.stream
            .read_exact(&mut payload)
            .map_err(|e| self.io_error(&during, e))?;
        self.recv_seq = self.recv_seq.wrapping_add(1);
        self.bytes_received += (HEADER_LEN + payload.len()) as u64;
        if kind == Kind::Error {
            let message = String::from_utf8_lossy(&payload).into_owned();
            return Err(Error::Remote {
                peer: self.peer_role,
                message,
            });
        }
        Ok((kind, payload))
    }

    /// Receives a frame that must be of `kind`.
    pub fn expect(&mut self, kind: Kind) -> Result<Vec<u8>> {
        let (got, payload) = self.recv()?;
        if got != kind {
            return Err(Error::Protocol(format!(
                "from {}: expected a {kind:?} frame, got {got:?}",
                self.peer
            )));
        }
        Ok(payload)
    }

    /// Best effort: tells the peer why we stop. Errors are ignored (the link may be dead).
    pub fn send_error(&mut self, message: &str) {
        let _ = self.send(Kind::Error, message.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream that reads from one buffer and writes to another.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }
    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn frames(list: &[(Kind, &[u8])]) -> Vec<u8> {
        let mut w = FramedStream::new(
            Duplex {
                input: Cursor::new(vec![]),
                output: vec![],
            },
            "client",
            "test",
        );
        for (k, p) in list {
            w.send(*k, p).unwrap();
        }
        w.stream.output
    }

    fn reader(bytes: Vec<u8>) -> FramedStream<Duplex> {
        FramedStream::new(
            Duplex {
                input: Cursor::new(bytes),
                output: vec![],
            },
            "server",
            "test",
        )
    }

    #[test]
    fn frames_round_trip_and_count_bytes() {
        let bytes = frames(&[(Kind::Hello, b"abc"), (Kind::Step, b"")]);
        let mut r = reader(bytes);
        assert_eq!(r.recv().unwrap(), (Kind::Hello, b"abc".to_vec()));
        assert_eq!(r.expect(Kind::Step).unwrap(), Vec::<u8>::new());
        assert_eq!(r.bytes_received, 2 * HEADER_LEN as u64 + 3);
        let e = r.recv().unwrap_err().to_string();
        assert!(e.contains("connection closed"), "{e}");
    }

    #[test]
    fn garbage_truncation_and_replay_are_errors() {
        let good = frames(&[(Kind::Hello, b"abcdef")]);
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(reader(bad_magic).recv(), Err(Error::Protocol(_))));
        let mut bad_version = good.clone();
        bad_version[4] = 9;
        assert!(matches!(
            reader(bad_version).recv(),
            Err(Error::Protocol(_))
        ));
        let mut bad_kind = good.clone();
        bad_kind[6] = 77;
        assert!(matches!(reader(bad_kind).recv(), Err(Error::Protocol(_))));
        let mut huge = good.clone();
        huge[11..19].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(reader(huge).recv(), Err(Error::Protocol(_))));
        let truncated = good[..good.len() - 2].to_vec();
        assert!(matches!(
            reader(truncated).recv(),
            Err(Error::Network { .. })
        ));
        // The same frame twice: the second has a stale sequence number.
        let mut replay = good.clone();
        replay.extend_from_slice(&good);
        let mut r = reader(replay);
        r.recv().unwrap();
        assert!(matches!(r.recv(), Err(Error::Protocol(_))));
        // The peer's error report surfaces as Error::Remote.
        let err = frames(&[(Kind::Error, b"model not found")]);
        match reader(err).recv() {
            Err(Error::Remote { message, .. }) => assert_eq!(message, "model not found"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
