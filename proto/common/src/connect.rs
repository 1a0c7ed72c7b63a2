//! How agents, handlers and the `taskplane` CLI reach the control plane: a
//! bearer token, and for `https://` servers a CA to verify the server by
//! (the public web roots when none is given) and an optional client
//! certificate for mutual TLS. The files are read at every connect, so
//! rotated certificates are picked up on the next reconnect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A connection to the control plane that carries the token on every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// Credentials and TLS settings for reaching the control plane.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The CA that signed the server's certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate, for servers that require mutual TLS (PEM).
    pub tls_cert: Option<PathBuf>,
    /// The key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
}

/// Why a connection could not be set up or made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings are wrong (bad URL, unreadable file, bad token).
    #[error("{0}")]
    Setup(String),
    /// The server could not be reached or the handshake failed.
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
}

impl ConnectOptions {
    /// Reads `TASKPLANE_TOKEN`, `TASKPLANE_TLS_CA`, `TASKPLANE_TLS_CERT` and
    /// `TASKPLANE_TLS_KEY` through `lookup` (a binary's environment); blank
    /// values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        ConnectOptions {
            token: var("TASKPLANE_TOKEN"),
            tls_ca: var("TASKPLANE_TLS_CA").map(PathBuf::from),
            tls_cert: var("TASKPLANE_TLS_CERT").map(PathBuf::from),
            tls_key: var("TASKPLANE_TLS_KEY").map(PathBuf::from),
        }
    }

    /// The token interceptor, checking that the token can be sent.
    pub fn bearer(&self) -> Result<BearerToken, ConnectError> {
        match &self.token {
            None => Ok(BearerToken(None)),
            Some(token) => format!("Bearer {}", token.trim())
                .parse::<MetadataValue<Ascii>>()
                .map(|value| BearerToken(Some(value)))
                .map_err(|_| {
                    ConnectError::Setup(
                        "the token has characters a header cannot carry: copy it again".into(),
                    )
                }),
        }
    }

    /// The endpoint for `url`, with TLS set up for `https://` URLs.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ConnectError> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| {
            ConnectError::Setup(format!(
                "'{url}' is not a server URL ({e}): use http://host:port or https://host:port"
            ))
        })?;
        if !url.starts_with("https://") {
            if self.tls_ca.is_some() || self.tls_cert.is_some() {
                return Err(ConnectError::Setup(format!(
                    "TLS files are set but '{url}' is not https://: use an https:// URL"
                )));
            }
            return Ok(endpoint.connect_timeout(Duration::from_secs(5)));
        }
        let mut tls = match &self.tls_ca {
            Some(ca) => {
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "CA")?))
            }
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "client certificate")?,
                    read(key, "client key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(ConnectError::Setup(
                    "a client certificate needs both TASKPLANE_TLS_CERT and TASKPLANE_TLS_KEY (--tls-cert and --tls-key)".into(),
                ));
            }
        }
        endpoint
            .tls_config(tls)
            .map(|endpoint| endpoint.connect_timeout(Duration::from_secs(5)))
            .map_err(|e| ConnectError::Setup(format!("TLS settings for {url}: {e}")))
    }

    /// Connects to `url`.
    pub async fn connect(&self, url: &str) -> Result<AuthChannel, ConnectError> {
        let bearer = self.bearer()?;
        let channel = self
            .endpoint(url)?
            .connect()
            .await
            .map_err(|e| ConnectError::Unreachable(url.to_owned(), error_chain(&e)))?;
        Ok(InterceptedService::new(channel, bearer))
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path)
        .map_err(|e| ConnectError::Setup(format!("reading the TLS {what} {}: {e}", path.display())))
}

/// An error and its causes, so a TLS failure says why (e.g. an unknown issuer).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Debug, Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
