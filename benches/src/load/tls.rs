//! TLS as the load sees it: a rustls client that trusts one CA (the
//! benchmark's own, made with rcgen), and the handshake-rate load.
//!
//! [`handshakes`] runs `concurrency` loops, each: connect, handshake, one
//! GET, close. The GET is there so the client reads the server's session
//! tickets, which TLS 1.3 sends after the handshake. With `resume` each
//! loop has its own session cache, so every handshake after its first can
//! resume the previous one (tickets or session IDs, whatever the server
//! offers); without it every handshake is a full one. The server name is
//! the IP address, so no SNI is sent and every peer picks its one
//! certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;

use super::{Dialer, Samples, Target};
use crate::procs::{self, CpuShare, Watched};
use crate::stats::{self, Summary};

/// A TLS client trusting the CA certificate in `ca_pem` (and nothing
/// else), resuming sessions or not.
pub fn connector(ca_pem: &Path, resume: bool) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("read {}", ca_pem.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = if resume {
        Resumption::in_memory_sessions(16)
    } else {
        Resumption::disabled()
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What a handshake run does.
#[derive(Clone)]
pub struct HandshakeSpec {
    /// An `https://` URL.
    pub target: Target,
    /// Sources and timeout (its TLS client is replaced per loop).
    pub dialer: Dialer,
    /// The CA the client trusts.
    pub ca: std::path::PathBuf,
    /// Resume sessions.
    pub resume: bool,
    /// Loops running at once.
    pub concurrency: usize,
    /// Handshakes before the window, not counted.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Processes whose CPU use over the window is reported.
    pub watched: Vec<Watched>,
}

/// The figures of one handshake run.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeResult {
    /// Connections (handshake + GET) completed in the window.
    pub handshakes: u64,
    /// Of those, resumed ones.
    pub resumed: u64,
    /// `handshakes` / window.
    pub per_sec: f64,
    /// Connect + handshake + GET, ms.
    pub latency: Summary,
    /// Failed connections in the window.
    pub errors: u64,
    /// The first few distinct errors.
    pub error_samples: Vec<String>,
    /// CPU use over the window, % of one core.
    pub cpu: Vec<CpuShare>,
}

/// Run the handshake load.
pub async fn handshakes(spec: HandshakeSpec) -> anyhow::Result<HandshakeResult> {
    let begin = Instant::now() + Duration::from_millis(50);
    let (w0, w1) = (begin + spec.warmup, begin + spec.warmup + spec.duration);
    let cpu = procs::meter(spec.watched.clone(), w0, w1);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..spec.concurrency {
        let mut dialer = spec.dialer.clone();
        dialer.tls = Some(connector(&spec.ca, spec.resume)?);
        let spec = spec.clone();
        tasks.spawn(async move {
            let (mut times, mut resumed, mut errors, mut samples) =
                (Vec::new(), 0, 0, Samples::default());
            let mut buf = BytesMut::with_capacity(4096);
            tokio::time::sleep_until(begin.into()).await;
            let mut i = n;
            while Instant::now() < w1 {
                let t0 = Instant::now();
                let request = super::http::request(&spec.target, i);
                let once = async {
                    let mut conn = dialer.open(&spec.target, i).await?;
                    buf.clear();
                    let (status, _) =
                        super::http::exchange(&mut conn.io, &request, &mut buf).await?;
                    anyhow::ensure!((200..300).contains(&status), "status {status}");
                    let was_resumed = conn.resumed;
                    let _ = conn.io.shutdown().await;
                    Ok(was_resumed)
                };
                let outcome = tokio::time::timeout(dialer.timeout, once).await;
                let in_window = t0 >= w0 && t0 < w1;
                match outcome {
                    Ok(Ok(r)) if in_window => {
                        times.push(t0.elapsed().as_nanos() as u64);
                        resumed += u64::from(r);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if in_window => {
                        errors += 1;
                        samples.add(format!("{e:#}"));
                    }
                    Err(_) if in_window => {
                        errors += 1;
                        samples.add("timed out");
                    }
                    _ => {}
                }
                i += spec.concurrency;
            }
            (times, resumed, errors, samples.0)
        });
    }
    let (mut times, mut resumed, mut errors, mut samples) = (Vec::new(), 0, 0, Samples::default());
    while let Some(done) = tasks.join_next().await {
        let (t, r, e, s) = done?;
        times.extend(t);
        resumed += r;
        errors += e;
        s.into_iter().for_each(|e| samples.add(e));
    }
    Ok(HandshakeResult {
        handshakes: times.len() as u64,
        resumed,
        per_sec: times.len() as f64 / spec.duration.as_secs_f64(),
        latency: stats::summarize(times),
        errors,
        error_samples: samples.0,
        cpu: cpu.await?,
    })
}
