//! SPDY/3.1, the framing Kubernetes' SPDY streaming (`X-Stream-Protocol-Version`
//! `v4.channel.k8s.io`, `portforward.k8s.io`) runs on: the frame codec ([`frame`]), header
//! blocks and their compression ([`headers`]) and the server side of a connection
//! ([`Connection`]). No maintained Rust crate speaks it.

pub(crate) mod frame;
pub(crate) mod headers;
mod session;

pub(crate) use session::{Connection, Stream, StreamWriter};

#[cfg(test)]
mod tests;
