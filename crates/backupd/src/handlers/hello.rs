//! `hello`: who is answering, for clients to check compatibility.

use proto::response::Hello;

pub fn handle() -> Hello {
    Hello {
        daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: proto::PROTOCOL_VERSION,
    }
}
