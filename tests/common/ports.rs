//! Loopback ports for test servers. Shared as a file with the unit tests' S3 server
//! (`crates/backupd/src/remote/test_server.rs`), which cannot reach this harness.

/// A free loopback port for a server that must be told its port up front (moto, aiosmtpd).
/// It is taken below the kernel's ephemeral range, so that no listener bound to port 0 by a
/// test running meanwhile can get it between this check and the server's bind.
pub fn port_for_a_server() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = ephemeral_low.saturating_sub(10_000).max(1024);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    (0..1000u32)
        .map(|i| below + u16::try_from((seed.wrapping_add(i * 7919)) % 10_000).unwrap_or(0))
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A loopback TCP port bound but not listening, held while this lives: connections to it are
/// refused, and no listener of another test can take it, as it could a port bound and freed.
#[derive(Debug)]
pub struct RefusingPort {
    _socket: rustix::fd::OwnedFd,
    pub port: u16,
}

pub fn refusing_port() -> RefusingPort {
    use rustix::net::{AddressFamily, SocketType};
    let socket =
        rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    let loopback = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
    rustix::net::bind(&socket, &loopback).expect("bind");
    let bound =
        std::net::SocketAddrV4::try_from(rustix::net::getsockname(&socket).expect("getsockname"));
    RefusingPort {
        port: bound.expect("an IPv4 address").port(),
        _socket: socket,
    }
}
