//! TCP transport of the HE protocol: connecting with a timeout, and a server loop that runs each
//! client session on its own thread. Every read and write has a timeout, so a dead peer ends the
//! session with an error naming it instead of hanging.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::{serve_session, ServerModel};
use crate::wire::FramedStream;

fn configure(stream: &TcpStream, io_timeout: Duration, peer: &str) -> Result<()> {
    let net = |e: std::io::Error| Error::Network {
        peer: peer.to_string(),
        detail: format!("configuring the socket: {e}"),
    };
    stream.set_read_timeout(Some(io_timeout)).map_err(net)?;
    stream.set_write_timeout(Some(io_timeout)).map_err(net)?;
    stream.set_nodelay(true).map_err(net)
}

/// Connects to an HE server.
pub fn connect(addr: &str, io_timeout: Duration) -> Result<FramedStream<TcpStream>> {
    let peer = format!("server {addr}");
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Error::Network {
            peer: peer.clone(),
            detail: format!("cannot resolve the address: {e}"),
        })?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, Duration::from_secs(10)) {
            Ok(stream) => {
                configure(&stream, io_timeout, &peer)?;
                return Ok(FramedStream::new(stream, "server", addr));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Network {
        peer,
        detail: match last {
            Some(e) => format!("cannot connect: {e}"),
            None => "the address resolves to nothing".into(),
        },
    })
}

/// Receives each session's outcome, with the client's name.
pub type SessionReport = Arc<dyn Fn(&str, Result<()>) + Send + Sync>;

/// Accepts clients forever (or `max_sessions` of them), one thread per session. Session errors
/// are passed to `report` (and to the client), never ending the loop.
pub fn serve(
    listener: TcpListener,
    model: Arc<dyn ServerModel>,
    io_timeout: Duration,
    max_sessions: Option<usize>,
    report: SessionReport,
) -> Result<()> {
    let mut handles = Vec::new();
    let mut served = 0usize;
    // (`Option::is_none_or` would need Rust 1.82; the workspace supports 1.80.)
    while match max_sessions {
        Some(m) => served < m,
        None => true,
    } {
        let (stream, addr) = listener.accept().map_err(|e| Error::Network {
            peer: "listener".into(),
            detail: format!("accept failed: {e}"),
        })?;
        served += 1;
        let (model, report) = (model.clone(), report.clone());
        handles.push(std::thread::spawn(move || {
            let peer = format!("client {addr}");
            let result = configure(&stream, io_timeout, &peer).and_then(|_| {
                let mut framed = FramedStream::new(stream, "client", addr);
                serve_session(&mut framed, model.as_ref(), None)
            });
            report(&peer, result);
        }));
        handles.retain(|h| !h.is_finished());
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}
