//! Where the built-in `webhook` and `health_check` handlers may connect.
//!
//! Whoever may enqueue those task types chooses the target. Left open, a
//! client could make the agent call addresses only the agent can reach
//! (cloud metadata at 169.254.169.254, an admin port on loopback, services on
//! the private network) and read the answers back in task results. So by
//! default they refuse loopback, private, link-local, shared (CGNAT),
//! multicast and unspecified addresses, checked after DNS resolution, so a
//! public name that resolves inward is refused too, and checked again when
//! the connection is made and on every redirect. Hosts an operator trusts
//! are listed in `TASKPLANE_TRUSTED_HOSTS` (names or addresses, exactly).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use taskplane_agent::TaskError;

/// The loopback host names and addresses, which `taskplane dev` trusts.
pub const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The guard and the HTTP client that honours it.
#[derive(Clone)]
pub struct Egress {
    trusted: Arc<BTreeSet<String>>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// A guard that lets through internal addresses only for these hosts
    /// (names or IP addresses, compared without case).
    pub fn trusting<S: AsRef<str>>(hosts: impl IntoIterator<Item = S>) -> Self {
        let trusted: Arc<BTreeSet<String>> = Arc::new(
            hosts
                .into_iter()
                .map(|host| normalized(host.as_ref()))
                .filter(|host| !host.is_empty())
                .collect(),
        );
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("taskplane-agent/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                trusted: Arc::clone(&trusted),
            }))
            .redirect(redirect_policy(Arc::clone(&trusted)))
            .build()
            .expect("the HTTP client builds with static settings");
        Egress { trusted, client }
    }

    /// The same guard, also trusting the host of `url` (one an operator
    /// configured, such as the payment gateway's).
    pub fn also_trusting_url(&self, url: &str) -> Self {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned));
        Egress::trusting(self.trusted.iter().cloned().chain(host))
    }

    /// Whether `host` is one this guard lets through to internal addresses.
    pub fn trusts(&self, host: &str) -> bool {
        self.trusted.contains(&normalized(host))
    }

    /// The HTTP client: its resolver drops internal addresses of untrusted
    /// names, and it follows only redirects the guard allows.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Refuses `url` if its host is not trusted and is, or resolves only
    /// to, internal addresses.
    pub async fn check_url(&self, url: &str) -> Result<(), TaskError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| TaskError::Permanent(format!("'{url}' is not a URL: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| TaskError::Permanent(format!("'{url}' names no host")))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        self.resolve(host, port).await.map(drop)
    }

    /// The addresses of `host` this guard lets a connection reach: all of
    /// them for a trusted host, else its public ones; an error naming the
    /// host when there are none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, TaskError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TaskError::Retryable(format!("cannot resolve {host}: {e}")))?
            .collect();
        allowed(&self.trusted, host, addresses).map_err(TaskError::Permanent)
    }
}

/// `addresses` of `host` without the internal ones unless `host` is trusted;
/// why not, when none is left.
fn allowed(
    trusted: &BTreeSet<String>,
    host: &str,
    addresses: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    if trusted.contains(&normalized(host)) {
        return Ok(addresses);
    }
    let (inward, outward): (Vec<_>, Vec<_>) = addresses
        .into_iter()
        .partition(|address| is_internal(address.ip()));
    if outward.is_empty() {
        let shown: Vec<String> = inward.iter().map(|a| a.ip().to_string()).collect();
        return Err(format!(
            "refused: {host} is an internal address ({}), which the built-in handlers do not reach unless an operator trusts it in TASKPLANE_TRUSTED_HOSTS",
            shown.join(", ")
        ));
    }
    Ok(outward)
}

fn normalized(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// Whether `ip` is an address only the agent's own networks reach:
/// loopback, private, link-local (cloud metadata included), shared (CGNAT),
/// multicast, broadcast, unspecified, or an IPv4 address mapped into IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

/// Resolves names for the HTTP client, dropping internal addresses of
/// untrusted names: checked again at connect time, so a name that changes
/// its answer after [`Egress::check_url`] is still refused.
struct GuardedResolver {
    trusted: Arc<BTreeSet<String>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let trusted = Arc::clone(&self.trusted);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed(&trusted, &host, addresses)?;
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Follows up to five redirects, none to an untrusted internal address
/// written as an IP (names are checked by the resolver).
fn redirect_policy(trusted: Arc<BTreeSet<String>>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("more than 5 redirects");
        }
        let host = attempt.url().host_str().map(normalized).unwrap_or_default();
        let inward = host
            .parse::<IpAddr>()
            .is_ok_and(|ip| is_internal(ip) && !trusted.contains(&host));
        if inward {
            attempt.error(format!(
                "refused a redirect to {host}, an internal address not in TASKPLANE_TRUSTED_HOSTS"
            ))
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_trusted_host_keeps_its_internal_addresses_and_others_lose_them() {
        let trusted = BTreeSet::from(["gateway.internal".to_owned()]);
        let inward = vec![SocketAddr::from(([10, 0, 0, 5], 443))];
        assert_eq!(
            allowed(&trusted, "GATEWAY.internal", inward.clone()).unwrap(),
            inward
        );
        let refused = allowed(&trusted, "evil.example", inward.clone()).unwrap_err();
        assert!(refused.contains("10.0.0.5") && refused.contains("TASKPLANE_TRUSTED_HOSTS"));
        let mixed = vec![inward[0], SocketAddr::from(([93, 184, 216, 34], 443))];
        assert_eq!(
            allowed(&trusted, "rebinding.example", mixed).unwrap(),
            [SocketAddr::from(([93, 184, 216, 34], 443))]
        );
    }
}
