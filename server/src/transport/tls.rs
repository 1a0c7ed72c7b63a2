//! TLS on the gRPC listener (rustls): the certificate, key and optional
//! client CA are read from PEM files and can be replaced while the server
//! runs (see [`crate::transport::reload`]); connections accepted after a reload use the
//! new files, open connections keep theirs. Handshakes run off the accept
//! loop with a deadline, so a slow or hostile client holds up nobody else.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;
use crate::error::{Error, Result};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS settings, replaceable while serving.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Reads the certificate, key and client CA named by `files`.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let config = server_config(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The files it reads, to watch for changes.
    pub fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.files.cert.as_path(), self.files.key.as_path()];
        paths.extend(self.files.client_ca.as_deref());
        paths
    }

    /// Re-reads the files; on error the settings in force stay.
    pub fn reload(&self) -> Result<()> {
        let config = server_config(&self.files)?;
        *self.current.write().expect("tls config lock") = Arc::new(config);
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// An acceptor offering `alpn` (`h2` for gRPC, `http/1.1` for the
    /// console), with the certificate in force.
    fn acceptor(&self, alpn: &'static [u8]) -> TlsAcceptor {
        let current = self.current.read().expect("tls config lock").clone();
        if current.alpn_protocols.iter().any(|p| p == alpn) {
            return TlsAcceptor::from(current);
        }
        let mut config = (*current).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::Config(format!(
                "reading the TLS certificate {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "the TLS certificate file {} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Config(format!("reading the TLS key {}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| {
                Error::Config(format!("reading the client CA {}: {e}", ca.display()))
            })? {
                let cert = cert.map_err(|e| {
                    Error::Config(format!("reading the client CA {}: {e}", ca.display()))
                })?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("the client CA {}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(format!("the client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("the TLS certificate does not match its key: {e}")))?;
    config.alpn_protocols = vec![ALPN_GRPC.to_vec()];
    Ok(config)
}

/// The ALPN name of gRPC's HTTP/2.
pub const ALPN_GRPC: &[u8] = b"h2";
/// The ALPN name of the console's HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Accepts TCP connections and yields those that complete a TLS handshake
/// offering `alpn`; failed handshakes are logged and dropped. Stops when
/// `stop` is cancelled.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    alpn: &'static [u8],
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            crate::transport::listener::send_at_once(&stream);
            let acceptor = tls.acceptor(alpn);
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, %error, "TLS handshake refused");
                    }
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
