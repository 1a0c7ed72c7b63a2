//! The tower layer in front of every gRPC service: authentication, then
//! the role check, before any request body is read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use super::{Access, Authenticator, Principal, access_for};

/// Admits requests whose token's role may call the method, and hands the
/// [`Principal`] to the service in the request's extensions. Without an
/// [`Authenticator`] every request passes untouched (local development).
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    /// Checks requests with `authenticator`, or lets all through with `None`.
    pub fn new(authenticator: Option<Arc<Authenticator>>) -> Self {
        AuthLayer { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the gRPC router.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Option<Arc<Authenticator>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            if let Some(authenticator) = authenticator {
                let method = request.uri().path().to_owned();
                let header = request.headers().get(http::header::AUTHORIZATION).cloned();
                match admit(&authenticator, &method, header).await {
                    Ok(Some(principal)) => {
                        request.extensions_mut().insert(principal);
                    }
                    Ok(None) => {}
                    Err(status) => return Ok(status.into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

/// The caller of a request, `None` for open methods, or why it is refused.
async fn admit(
    authenticator: &Authenticator,
    method: &str,
    header: Option<http::HeaderValue>,
) -> Result<Option<Principal>, Status> {
    let access = access_for(method);
    if access == Access::Open {
        return Ok(None);
    }
    let Some(header) = header else {
        tracing::warn!(%method, "denied: no token");
        return Err(Status::unauthenticated(
            "this server requires a token: send `authorization: Bearer <token>` (taskplane --token or TASKPLANE_TOKEN)",
        ));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            tracing::warn!(%method, "denied: malformed authorization header");
            Status::unauthenticated("the authorization header must read `Bearer <token>`")
        })?;
    let principal = authenticator.authenticate(token).await?;
    if !access.allows(principal.role) {
        tracing::warn!(token = %principal.token_id, name = %principal.name, role = principal.role.as_str(), %method, "denied: role may not call this method");
        return Err(Status::permission_denied(format!(
            "a {} token may not call {}: ask for a token with the right role",
            principal.role.as_str(),
            method.trim_start_matches("/taskplane.v1.")
        )));
    }
    Ok(Some(principal))
}
