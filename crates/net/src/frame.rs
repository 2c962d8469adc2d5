//! The wire format of every link: fixed 32-byte headers followed by a payload.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SDFM"
//!      4     2  protocol version (little-endian u16)
//!      6     2  kind: 0 data, 1 goodbye (orderly close), 2 abort (payload: UTF-8 reason)
//!      8     8  session id
//!     16     8  sequence number: 0, 1, 2, ... per link and direction
//!     24     8  payload length in bytes (at most the link's configured maximum)
//! ```
//!
//! Sequence numbers and the session id catch frames from another session, replayed, dropped or
//! reordered frames, and desynchronised streams even without TLS; the length bound keeps a
//! corrupted or hostile header from making the reader allocate without limit.

use crate::{NetError, Peer};
use std::io::{self, BufWriter, ErrorKind, Read, Write};

pub const FRAME_MAGIC: [u8; 4] = *b"SDFM";
pub const PROTOCOL_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
/// Default bound on one payload: 4 GiB.
pub const DEFAULT_MAX_FRAME: u64 = 4 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum FrameKind {
    Data = 0,
    Goodbye = 1,
    Abort = 2,
}

/// A decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data(Vec<u8>),
    /// The peer closes the link on purpose; nothing follows.
    Goodbye,
    /// The peer gives up on the whole session, for the reason given.
    Abort(String),
}

/// Encodes one header.
pub fn encode_header(kind: FrameKind, session: u64, seq: u64, len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    h[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&(kind as u16).to_le_bytes());
    h[8..16].copy_from_slice(&session.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&len.to_le_bytes());
    h
}

/// Writes frames with consecutive sequence numbers. Payloads larger than the internal buffer go
/// straight to the stream without a copy.
pub struct FrameWriter<W: Write> {
    out: BufWriter<W>,
    session: u64,
    next_seq: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W, session: u64) -> Self {
        Self {
            out: BufWriter::with_capacity(64 << 10, inner),
            session,
            next_seq: 0,
        }
    }

    pub fn write_frame(&mut self, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
        let header = encode_header(kind, self.session, self.next_seq, payload.len() as u64);
        self.out.write_all(&header)?;
        self.out.write_all(payload)?;
        self.out.flush()?;
        self.next_seq += 1;
        Ok(())
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut W {
        self.out.get_mut()
    }

    /// The underlying stream (after a flush).
    #[cfg(test)]
    pub fn into_inner(self) -> io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Reads frames and rejects anything that is not the next frame of this session.
pub struct FrameReader<R: Read> {
    inner: R,
    peer: Peer,
    session: u64,
    max_len: u64,
    next_seq: u64,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R, peer: Peer, session: u64, max_len: u64) -> Self {
        Self {
            inner,
            peer,
            session,
            max_len,
            next_seq: 0,
        }
    }

    fn bad(&self, detail: String) -> NetError {
        NetError::BadFrame {
            peer: self.peer,
            detail,
        }
    }

    fn io(&self, e: io::Error) -> NetError {
        match e.kind() {
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                NetError::Died { peer: self.peer }
            }
            // A TLS record that fails to decrypt or parse.
            ErrorKind::InvalidData => self.bad(e.to_string()),
            _ => NetError::Io {
                peer: self.peer,
                source: e,
            },
        }
    }

    /// Fills `buf`, returning how many bytes arrived before end of stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // rustls reports a TCP close without TLS close_notify this way.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(got)
    }

    /// The next frame. End of stream exactly between frames is [`NetError::Died`] (an orderly
    /// close sends [`Frame::Goodbye`] first); anywhere else it is a truncated frame.
    pub fn read_frame(&mut self) -> Result<Frame, NetError> {
        let mut h = [0u8; HEADER_LEN];
        let got = self.fill(&mut h)?;
        if got == 0 {
            return Err(NetError::Died { peer: self.peer });
        }
        if got < HEADER_LEN {
            return Err(self.bad(format!(
                "truncated header of frame #{}: stream ended after {got} of {HEADER_LEN} bytes",
                self.next_seq
            )));
        }
        if h[0..4] != FRAME_MAGIC {
            return Err(self.bad(format!(
                "bad magic {:02x?} (expected {:02x?}): not a secdiff frame or stream out of sync",
                &h[0..4],
                FRAME_MAGIC
            )));
        }
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap());
        let version = u16_at(4);
        if version != PROTOCOL_VERSION {
            return Err(self.bad(format!(
                "protocol version {version}, expected {PROTOCOL_VERSION}"
            )));
        }
        let kind = match u16_at(6) {
            0 => FrameKind::Data,
            1 => FrameKind::Goodbye,
            2 => FrameKind::Abort,
            k => return Err(self.bad(format!("unknown frame kind {k}"))),
        };
        let (session, seq, len) = (u64_at(8), u64_at(16), u64_at(24));
        if session != self.session {
            return Err(self.bad(format!(
                "session id {session:#x}, expected {:#x}",
                self.session
            )));
        }
        if seq != self.next_seq {
            return Err(self.bad(format!(
                "sequence number {seq}, expected {} (frame lost, replayed or reordered)",
                self.next_seq
            )));
        }
        if len > self.max_len {
            return Err(self.bad(format!(
                "frame #{seq} claims {len} bytes, more than the limit of {} bytes",
                self.max_len
            )));
        }
        let len = usize::try_from(len)
            .map_err(|_| self.bad(format!("frame #{seq} length {len} does not fit in memory")))?;
        // Reserve at most 256 MiB up front so a lying header cannot make us allocate its full
        // claim; larger payloads grow as they arrive (realloc of large blocks is a remap).
        let mut payload = Vec::with_capacity(len.min(256 << 20));
        let read = (&mut self.inner).take(len as u64).read_to_end(&mut payload);
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(self.io(e)),
        }
        if payload.len() < len {
            return Err(self.bad(format!(
                "truncated frame #{seq}: stream ended after {} of {len} payload bytes",
                payload.len()
            )));
        }
        self.next_seq += 1;
        match kind {
            FrameKind::Data => Ok(Frame::Data(payload)),
            FrameKind::Goodbye => Ok(Frame::Goodbye),
            FrameKind::Abort => Ok(Frame::Abort(String::from_utf8_lossy(&payload).into_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(session: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new(), session);
        for p in payloads {
            w.write_frame(FrameKind::Data, p).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn reader(bytes: &[u8]) -> FrameReader<&[u8]> {
        FrameReader::new(bytes, Peer::Party(1), 7, 1 << 20)
    }

    #[test]
    fn frames_round_trip_in_order() {
        let bytes = frames(7, &[b"hello", b"", &[9; 1000]]);
        assert_eq!(bytes.len(), 3 * HEADER_LEN + 1005);
        let mut r = reader(&bytes);
        assert_eq!(r.read_frame().unwrap(), Frame::Data(b"hello".to_vec()));
        assert_eq!(r.read_frame().unwrap(), Frame::Data(vec![]));
        assert_eq!(r.read_frame().unwrap(), Frame::Data(vec![9; 1000]));
        assert!(matches!(
            r.read_frame(),
            Err(NetError::Died {
                peer: Peer::Party(1)
            })
        ));
    }

    fn detail(e: NetError) -> String {
        match e {
            NetError::BadFrame { peer, detail } => {
                assert_eq!(peer, Peer::Party(1));
                detail
            }
            other => panic!("expected BadFrame, got {other:?}"),
        }
    }

    #[test]
    fn each_kind_of_bad_frame_is_named() {
        let good = frames(7, &[b"abc", b"def"]);

        let mut garbage = good.clone();
        garbage[0] = b'X';
        assert!(detail(reader(&garbage).read_frame().unwrap_err()).contains("bad magic"));

        let other_session = frames(8, &[b"abc"]);
        assert!(detail(reader(&other_session).read_frame().unwrap_err()).contains("session id"));

        // The second frame alone: sequence number 1 where 0 is expected.
        let skipped = &good[HEADER_LEN + 3..];
        assert!(detail(reader(skipped).read_frame().unwrap_err()).contains("sequence number 1"));

        let truncated_payload = &good[..HEADER_LEN + 2];
        let d = detail(reader(truncated_payload).read_frame().unwrap_err());
        assert!(
            d.contains("truncated frame #0") && d.contains("2 of 3"),
            "{d}"
        );

        let truncated_header = &good[..10];
        assert!(detail(reader(truncated_header).read_frame().unwrap_err()).contains("10 of 32"));

        let huge = encode_header(FrameKind::Data, 7, 0, 1 << 40);
        assert!(detail(reader(&huge).read_frame().unwrap_err()).contains("more than the limit"));

        let mut bad_version = good.clone();
        bad_version[4] = 9;
        assert!(detail(reader(&bad_version).read_frame().unwrap_err()).contains("version 9"));
    }
}
