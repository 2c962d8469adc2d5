//! A connected byte stream to one peer (plain TCP or TLS over TCP), and its split into a read
//! half and a write half that two threads drive at the same time.
//!
//! A rustls connection is one state machine for both directions, so the TLS halves share it
//! behind a mutex, but neither half holds the lock during socket I/O: the reader takes
//! ciphertext off the socket and only locks to decrypt, the writer only locks to encrypt. Two
//! parties both writing large messages therefore never stop each other's readers (which would
//! deadlock once the kernel buffers fill).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(TcpStream, Box<rustls::Connection>),
}

/// The sending half: a byte sink that can close its direction in an orderly way.
pub(crate) trait WriteHalf: Write + Send {
    /// Ends this direction (TLS close_notify, then TCP FIN).
    fn close(&mut self) -> io::Result<()>;
}

pub(crate) struct Halves {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn WriteHalf>,
    /// Shutting this down wakes a reader blocked in `read`.
    pub socket: TcpStream,
}

impl Stream {
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) | Stream::Tls(s, _) => s,
        }
    }

    pub fn split(self) -> io::Result<Halves> {
        match self {
            Stream::Plain(sock) => Ok(Halves {
                reader: Box::new(sock.try_clone()?),
                socket: sock.try_clone()?,
                writer: Box::new(PlainWriter(sock)),
            }),
            Stream::Tls(sock, conn) => {
                let conn = Arc::new(Mutex::new(conn));
                Ok(Halves {
                    reader: Box::new(TlsReader {
                        sock: sock.try_clone()?,
                        conn: conn.clone(),
                        buf: vec![0; 64 << 10].into_boxed_slice(),
                        start: 0,
                        end: 0,
                        eof: false,
                    }),
                    socket: sock.try_clone()?,
                    writer: Box::new(TlsWriter {
                        sock,
                        conn,
                        out: Vec::with_capacity(80 << 10),
                    }),
                })
            }
        }
    }
}

/// Blocking reads and writes, used by the handshake before the stream is split.
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s, c) => loop {
                match c.reader().read(buf) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if c.read_tls(s)? == 0 {
                            return Err(ErrorKind::UnexpectedEof.into());
                        }
                        c.process_new_packets().map_err(tls_err)?;
                    }
                    r => return r,
                }
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s, c) => {
                let n = c.writer().write(buf)?;
                while c.wants_write() {
                    c.write_tls(s)?;
                }
                Ok(n)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s, c) => {
                while c.wants_write() {
                    c.write_tls(s)?;
                }
                s.flush()
            }
        }
    }
}

struct PlainWriter(TcpStream);

impl Write for PlainWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl WriteHalf for PlainWriter {
    fn close(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

type SharedConn = Arc<Mutex<Box<rustls::Connection>>>;

fn lock(conn: &SharedConn) -> MutexGuard<'_, Box<rustls::Connection>> {
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("TLS: {e}"))
}

struct TlsReader {
    sock: TcpStream,
    conn: SharedConn,
    /// Ciphertext read from the socket and not yet given to rustls: `buf[start..end]`.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut c = lock(&self.conn);
                match c.reader().read(out) {
                    // Ok(0) is a clean close_notify; a TCP close without it is UnexpectedEof.
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.start < self.end {
                    let mut pending = &self.buf[self.start..self.end];
                    self.start += c.read_tls(&mut pending)?;
                    c.process_new_packets().map_err(tls_err)?;
                    continue;
                }
                if self.eof {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
            }
            let n = self.sock.read(&mut self.buf)?;
            (self.start, self.end) = (0, n);
            if n == 0 {
                self.eof = true;
                let mut c = lock(&self.conn);
                c.read_tls(&mut &[][..])?;
                c.process_new_packets().map_err(tls_err)?;
            }
        }
    }
}

struct TlsWriter {
    sock: TcpStream,
    conn: SharedConn,
    out: Vec<u8>,
}

/// Moves the records rustls has produced onto the socket, outside the lock.
fn drain(
    mut c: MutexGuard<'_, Box<rustls::Connection>>,
    out: &mut Vec<u8>,
    sock: &mut TcpStream,
) -> io::Result<()> {
    out.clear();
    while c.wants_write() {
        c.write_tls(out)?;
    }
    drop(c);
    sock.write_all(out)
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // rustls accepts at most its send buffer limit (64 KiB) per call.
        let chunk = &buf[..buf.len().min(64 << 10)];
        let mut c = lock(&self.conn);
        let n = c.writer().write(chunk)?;
        drain(c, &mut self.out, &mut self.sock)?;
        if n == 0 && !chunk.is_empty() {
            return Err(ErrorKind::WriteZero.into());
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        let c = lock(&self.conn);
        drain(c, &mut self.out, &mut self.sock)?;
        self.sock.flush()
    }
}

impl WriteHalf for TlsWriter {
    fn close(&mut self) -> io::Result<()> {
        let mut c = lock(&self.conn);
        c.send_close_notify();
        drain(c, &mut self.out, &mut self.sock)?;
        self.sock.shutdown(Shutdown::Write)
    }
}
