//! TLS, both ways: terminating clients' TLS on listeners ([`server`]:
//! certificates by SNI, ALPN, resumption) and speaking verified TLS to
//! upstream servers ([`upstream`]), with certificate files read and checked
//! in [`certs`]. All on rustls with the ring provider, TLS 1.2 and 1.3 only.

pub mod certs;
pub mod server;
pub mod upstream;

pub use server::{ServerTls, SessionState};
pub use upstream::UpstreamTlsConfig;
