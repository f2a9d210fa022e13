//! The listening socket, with the backlog the service asks for.
//!
//! `std::net::TcpListener::bind` listens with a backlog of 128, and actix takes
//! a listener as it is. A reconnect storm brings thousands of connections at
//! once: past 128 waiting in the accept queue the kernel drops the handshakes
//! that follow, and each client waits a second for its retransmission.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `address` (the first of its resolved addresses that binds) and listens
/// with `backlog` (the kernel caps it at `net.core.somaxconn`).
pub fn bind(address: &str, backlog: u32) -> io::Result<TcpListener> {
    let mut last_error = None;
    for address in address.to_socket_addrs()? {
        match bind_one(address, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

fn bind_one(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // As std does on Unix: a restart can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    /// Connections nobody accepts yet: what the accept queue must hold.
    const WAITING: usize = 300;

    #[test]
    fn holds_more_waiting_connections_than_std_would() -> io::Result<()> {
        let listener = bind("127.0.0.1:0", 1024)?;
        let address = listener.local_addr()?;
        let mut waiting = Vec::with_capacity(WAITING);
        for _ in 0..WAITING {
            waiting.push(TcpStream::connect_timeout(
                &address,
                Duration::from_secs(2),
            )?);
        }
        assert_eq!(waiting.len(), WAITING);
        Ok(())
    }

    #[test]
    fn an_address_in_use_is_an_error() -> io::Result<()> {
        let taken = bind("127.0.0.1:0", 16)?;
        let address = taken.local_addr()?.to_string();
        assert!(bind(&address, 16).is_err());
        Ok(())
    }

    #[test]
    fn a_name_that_resolves_binds() -> io::Result<()> {
        let listener = bind("localhost:0", 16)?;
        assert!(listener.local_addr()?.ip().is_loopback());
        Ok(())
    }
}
