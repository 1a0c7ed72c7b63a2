//! The console's page chrome, its assets, and how values are shown:
//! times, statuses, JSON (always as escaped text) and errors.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use prost_types::Timestamp;
use taskplane_proto::v1::TaskStatus;

use super::sessions::Session;

const STYLE: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// `GET /assets/{file}`: the stylesheet and the script, from the binary.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `/`.
    Overview,
    /// `/tasks` and a task.
    Tasks,
    /// `/agents`.
    Agents,
    /// `/types`.
    Types,
}

/// A page with no navigation (sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main.narrow { (body) } }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · taskplane" }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/console.js" defer {}
        }
    }
}

/// A console page: navigation, the notice of the last action, and `body`.
/// The part of `body` inside `#live` is swapped in again whenever the
/// queue changes.
pub fn page(
    title: &str,
    section: Section,
    session: &Session,
    notice: &Notice,
    body: Markup,
) -> Markup {
    let link = |href: &str, name: &str, this: Section| {
        html! {
            a href=(href) aria-current=[(section == this).then_some("page")] { (name) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-csrf=(session.csrf) {
                header.top {
                    a.brand href="/" { "taskplane" }
                    nav {
                        (link("/", "Overview", Section::Overview))
                        (link("/tasks", "Tasks", Section::Tasks))
                        (link("/agents", "Agents", Section::Agents))
                        (link("/types", "Task types", Section::Types))
                    }
                    div.session {
                        span #live-state.live-state title="Live updates" { "○" }
                        button #theme type="button" title="Switch between light and dark" { "◐" }
                        @if let Some(principal) = &session.principal {
                            span.who { (principal.name) " · " (principal.role.as_str())
                                @if principal.is_scoped() { " · " (principal.domains.to_list().join(", ")) } }
                            form method="post" action=(action_url("/logout", session)) {
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(text) = &notice.done { p.notice.done role="status" { (text) } }
                    @if let Some(text) = &notice.error { p.notice.error role="alert" { (text) } }
                    (body)
                }
            }
        }
    }
}

/// The outcome of the action that led to a page, from its query string.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Notice {
    /// What the action did.
    pub done: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The URL an action form posts to, carrying the session's secret.
pub fn action_url(path: &str, session: &Session) -> String {
    format!("{path}?csrf={}", session.csrf)
}

/// A form of one button that posts to `path`, returning to `back`.
pub fn action_button(path: &str, label: &str, back: &str, session: &Session) -> Markup {
    html! {
        form.inline method="post" action=(action_url(path, session)) {
            input type="hidden" name="back" value=(back);
            button type="submit" { (label) }
        }
    }
}

/// A time as UTC, or a dash.
pub fn time(at: &Option<Timestamp>) -> Markup {
    match at
        .as_ref()
        .and_then(|at| chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32))
    {
        Some(at) => html! {
            time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) }
        },
        None => html! { "—" },
    }
}

/// A status's name in capitals, as the CLI and gRPC show it.
pub fn status_name(status: i32) -> &'static str {
    TaskStatus::try_from(status)
        .map(TaskStatus::short_name)
        .unwrap_or("UNKNOWN")
}

/// A status as a coloured badge.
pub fn status_badge(status: i32) -> Markup {
    let name = status_name(status);
    html! { span class={ "badge " (name.to_lowercase()) } { (name) } }
}

/// A JSON object as indented, escaped text.
pub fn json(value: &Option<prost_types::Struct>) -> Markup {
    match value {
        Some(value) => {
            let object = taskplane_proto::json::struct_to_json(value);
            let text = serde_json::to_string_pretty(&object).unwrap_or_default();
            html! { pre.json { (text) } }
        }
        None => html! { p.muted { "none" } },
    }
}

/// A gRPC call's refusal as a page: its status message, with the HTTP
/// status that means the same.
pub struct ConsoleError(pub tonic::Status);

impl From<tonic::Status> for ConsoleError {
    fn from(status: tonic::Status) -> Self {
        ConsoleError(status)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = http_status(self.0.code());
        let body = bare(
            "Error",
            html! {
                h1 { "Not shown" }
                p.notice.error role="alert" { (self.0.message()) }
                p { a href="/" { "Back to the overview" } }
            },
        );
        (status, body).into_response()
    }
}

/// The HTTP status meaning what a gRPC code means.
pub fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists | tonic::Code::Aborted => StatusCode::CONFLICT,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}
