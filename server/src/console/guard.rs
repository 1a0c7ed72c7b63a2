//! What stands in front of every console page: the session (signing in
//! with a token when authentication is on), cross-site request checks on
//! every action, and the security headers of every answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::Console;
use super::layout;
use super::sessions::{self, COOKIE, Session};

/// Where scripts, styles and images may come from: this console only. No
/// inline script or style runs, so a payload that slipped past escaping
/// still could not execute.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The id of the request's session, for signing out.
#[derive(Clone)]
pub struct SessionId(String);

/// Resolves the session (starting one when authentication is off),
/// refuses cross-site actions, sends a browser without a session to sign
/// in, and sets the security headers.
pub async fn guard(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let open = path.starts_with("/assets/") || path == "/login";
    let found = session_of(&console, request.headers()).or_else(|| console.anonymous.clone());
    if request.method() == Method::POST {
        if !same_origin(request.headers()) {
            return refused("this action came from another site: use the console's own pages");
        }
        if !open {
            let Some((_, session)) = &found else {
                return Redirect::to("/login").into_response();
            };
            let csrf = request
                .uri()
                .query()
                .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("csrf=")));
            if csrf != Some(session.csrf.as_str()) {
                return refused(
                    "this form is out of date or forged: reload the page and try again",
                );
            }
        }
    }
    match found {
        Some((id, session)) => {
            request.extensions_mut().insert(session);
            request.extensions_mut().insert(SessionId(id));
        }
        None if !open => return Redirect::to("/login").into_response(),
        None => {}
    }
    let page = request.method() == Method::GET && !open && path != "/events";
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    if page {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        console.render_micros.store(micros, Ordering::Relaxed);
    }
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn session_of(console: &Console, headers: &HeaderMap) -> Option<(String, Session)> {
    let header = headers.get(header::COOKIE)?.to_str().ok()?;
    let id = sessions::cookie(header, COOKIE)?;
    Some((id.to_owned(), console.sessions.get(id)?))
}

/// Whether a request comes from the console's own pages, as the browser
/// says (`Sec-Fetch-Site`, else `Origin` against `Host`). A request with
/// neither is not from a browser page; the form secret still guards it.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin" || site == "none";
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn refused(why: &str) -> Response {
    (StatusCode::FORBIDDEN, why.to_owned()).into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `GET /login`: asks for a token (the overview when none is needed).
pub async fn login_page(State(console): State<Arc<Console>>) -> Response {
    if console.plane.authenticator.is_none() {
        return Redirect::to("/").into_response();
    }
    login_form(None).into_response()
}

fn login_form(error: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            form.login method="post" action="/login" {
                h1 { "taskplane" }
                p { "This server checks tokens. Sign in with one: the console acts with its role and sees only its domains." }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
                p.hint { "Make one with " code { "taskplane token create --name you --role admin" } "." }
            }
        },
    )
}

/// `POST /login`: checks the token and starts a session acting with it.
pub async fn login(State(console): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    let Some(authenticator) = &console.plane.authenticator else {
        return Redirect::to("/").into_response();
    };
    let token = form.token.trim();
    match authenticator.authenticate(token).await {
        Ok(principal) => {
            tracing::info!(token = %principal.token_id, name = %principal.name, "console: signed in");
            let id = console.sessions.start(token.to_owned(), principal);
            let mut response = Redirect::to("/").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&sessions::set_cookie(&id, console.secure)) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(status) => {
            (StatusCode::UNAUTHORIZED, login_form(Some(status.message()))).into_response()
        }
    }
}

/// `POST /logout`: ends the session.
pub async fn logout(
    State(console): State<Arc<Console>>,
    axum::Extension(SessionId(id)): axum::Extension<SessionId>,
) -> Response {
    console.sessions.end(&id);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&sessions::clear_cookie()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn only_the_consoles_own_pages_may_act() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[])), "curl: the form secret decides");
    }
}
