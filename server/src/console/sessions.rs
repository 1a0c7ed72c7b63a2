//! Who is signed in to the console: a session per browser, named by an
//! HTTP-only, SameSite=Strict cookie, holding the token it acts with and
//! the secret its forms must carry (cross-site request protection).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Principal;

/// The cookie naming a session.
pub const COOKIE: &str = "taskplane_console";

/// How long a session lasts from sign-in.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// One browser's session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token the console acts with; `None` when authentication is off.
    pub token: Option<String>,
    /// Who the token is; `None` when authentication is off.
    pub principal: Option<Principal>,
    /// The secret every form of this session carries (`?csrf=`): a page of
    /// another site cannot read it, so cannot forge an action.
    pub csrf: String,
    /// `None` for the shared session of a console without authentication.
    expires: Option<Instant>,
}

impl Session {
    /// The domains this session may see: `None` for every domain.
    pub fn scope(&self) -> Option<Vec<String>> {
        self.principal
            .as_ref()
            .filter(|principal| principal.is_scoped())
            .map(|principal| principal.domains.to_list())
    }

    fn is_live(&self) -> bool {
        self.expires.is_none_or(|expires| expires > Instant::now())
    }

    /// Whether this session may see `domain`.
    pub fn sees(&self, domain: &str) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|principal| principal.domains.allows(domain))
    }
}

/// The sessions of one console.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session acting with `token` (as `principal`) and returns
    /// its id, the cookie's value.
    pub fn start(&self, token: String, principal: Principal) -> String {
        let id = random_hex();
        let session = Session {
            token: Some(token),
            principal: Some(principal),
            csrf: random_hex(),
            expires: Some(Instant::now() + LIFETIME),
        };
        let mut sessions = self.by_id.lock().expect("sessions lock");
        sessions.retain(|_, session| session.is_live());
        sessions.insert(id.clone(), session);
        id
    }

    /// The session of a console without authentication: never stored,
    /// never ending.
    pub fn anonymous(&self) -> (String, Session) {
        let session = Session {
            token: None,
            principal: None,
            csrf: random_hex(),
            expires: None,
        };
        (random_hex(), session)
    }

    /// The live session named `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let sessions = self.by_id.lock().expect("sessions lock");
        sessions
            .get(id)
            .filter(|session| session.is_live())
            .cloned()
    }

    /// Ends the session named `id`.
    pub fn end(&self, id: &str) {
        self.by_id.lock().expect("sessions lock").remove(id);
    }
}

/// 256 random bits, in hex.
fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// The `Set-Cookie` value carrying session `id`; `secure` when served
/// over TLS.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_their_cookie_until_ended() {
        let sessions = Sessions::default();
        let principal = Principal {
            token_id: "tp_x".into(),
            token_sha256: String::new(),
            name: "ops".into(),
            role: crate::auth::Role::Admin,
            domains: crate::auth::DomainScope::All,
        };
        let id = sessions.start("tp_x".into(), principal);
        let header = format!("theme=dark; {COOKIE}={id}; other=1");
        let found = cookie(&header, COOKIE).unwrap();
        let session = sessions.get(found).unwrap();
        assert_eq!(session.token.as_deref(), Some("tp_x"));
        assert_eq!(session.csrf.len(), 64);
        assert!(sessions.get("forged").is_none());
        sessions.end(&id);
        assert!(sessions.get(&id).is_none());
        assert!(set_cookie(&id, true).contains("HttpOnly; SameSite=Strict"));
        assert!(set_cookie(&id, true).ends_with("; Secure"));
    }
}
