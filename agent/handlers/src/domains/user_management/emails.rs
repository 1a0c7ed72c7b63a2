//! The user-management emails: welcome, password reset and, behind the
//! `login_alerts` flag, the new-sign-in alert.

use crate::builtin::email::EmailTemplate;
use crate::domains::factories::email;
use crate::services::AppServices;
use taskplane_agent::handler::TaskHandler;

/// `welcome_email`: the welcome message.
pub fn welcome_email(services: &AppServices) -> Box<dyn TaskHandler> {
    let template = EmailTemplate {
        subject: "Welcome, {{ name }}!".into(),
        body: "Hi {{ name }},\n\nyour account is ready. Sign in any time.\n\n— The team\n".into(),
    };
    email(
        services,
        Some(template),
        "Sends the welcome email to a new user (payload: to, name)",
    )
}

/// `password_reset`: the reset link message.
pub fn password_reset(services: &AppServices) -> Box<dyn TaskHandler> {
    let template = EmailTemplate {
        subject: "Reset your password".into(),
        body: "Hi {{ name }},\n\nreset your password here: {{ reset_url }}\n\nIf you did not ask for this, ignore this email.\n".into(),
    };
    email(
        services,
        Some(template),
        "Sends a password-reset link (payload: to, name, reset_url)",
    )
}

/// `login_alert`: tells a user about a new sign-in. Registered only while
/// the `login_alerts` flag is on: a whole handler behind a flag.
pub fn login_alert(services: &AppServices) -> Box<dyn TaskHandler> {
    let template = EmailTemplate {
        subject: "New sign-in to your account".into(),
        body: "Hi {{ name }},\n\nyour account was signed in to from {{ location }} at {{ at }}.\nIf this was not you, reset your password now.\n".into(),
    };
    email(
        services,
        Some(template),
        "Alerts a user to a new sign-in (payload: to, name, location, at)",
    )
}
