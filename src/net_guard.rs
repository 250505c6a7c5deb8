//! Egress rules for URLs a tenant chose and the gateway calls from its own hosts (SPEC §8):
//! `http` tool plugins today, webhook URLs later. One place decides which addresses such a call
//! may reach:
//!
//! - cloud metadata addresses (169.254.169.254, fd00:ec2::254, in any IPv6 embedding) never;
//! - loopback, private, link-local, unique-local, unspecified, shared (CGNAT), multicast,
//!   broadcast and reserved addresses only when the URL's `host:port` is listed in
//!   `tools.allowed_http_hosts`;
//! - anything else.
//!
//! The check is on the address actually connected to: [`GuardedClient`] resolves names through
//! a resolver that drops refused addresses (so a name that re-resolves to 127.0.0.1 after the
//! install check does not pass), checks IP-literal URLs itself (they are never resolved), ignores
//! proxy settings, and never follows a redirect. [`EgressPolicy::check_url`] is the same rule
//! applied ahead of time, at install.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// How long an install waits for DNS.
const INSTALL_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("{0}")]
    BadUrl(String),
    #[error("the address {addr} of {host} is a cloud metadata address; it is never called")]
    Metadata { host: String, addr: IpAddr },
    #[error(
        "the address {addr} of {host} is a {range} address; list `{listing}` in \
         tools.allowed_http_hosts to allow it"
    )]
    Internal {
        host: String,
        addr: IpAddr,
        range: &'static str,
        listing: String,
    },
    #[error("{host} does not resolve: {reason}")]
    Unresolvable { host: String, reason: String },
}

/// The operator's exceptions (`tools.allowed_http_hosts`) and the fixed rules.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// `host:port`, lowercase, IPv6 hosts in brackets (as URLs write them).
    allowed: BTreeSet<String>,
}

impl EgressPolicy {
    pub fn new<S: AsRef<str>>(allowed_hosts: &[S]) -> Self {
        EgressPolicy {
            allowed: allowed_hosts
                .iter()
                .map(|h| h.as_ref().trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Parses a URL the gateway may call: `http` or `https`, with a host.
    pub fn parse_url(url: &str) -> Result<Url, EgressError> {
        let parsed =
            Url::parse(url).map_err(|e| EgressError::BadUrl(format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EgressError::BadUrl(
                "the URL must start with http:// or https://".into(),
            ));
        }
        if parsed.host_str().is_none() || parsed.port_or_known_default().is_none() {
            return Err(EgressError::BadUrl("the URL has no host".into()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EgressError::BadUrl(
                "the URL must not carry credentials".into(),
            ));
        }
        Ok(parsed)
    }

    /// Whether the operator listed this URL's `host:port`.
    pub fn is_listed(&self, url: &Url) -> bool {
        self.allowed.contains(&listing(url))
    }

    /// Checks one address for a URL whose `host:port` is (or is not) listed.
    pub fn check_addr(&self, host: &str, addr: IpAddr, listed: bool) -> Result<(), EgressError> {
        if is_metadata(addr) {
            return Err(EgressError::Metadata {
                host: host.to_owned(),
                addr,
            });
        }
        match refused_range(addr) {
            Some(range) if !listed => Err(EgressError::Internal {
                host: host.to_owned(),
                addr,
                range,
                listing: String::new(),
            }),
            _ => Ok(()),
        }
    }

    /// The rule ahead of time (at install): the URL parses, and every address its host resolves
    /// to now may be called. Calls are checked again on the address they connect to.
    pub async fn check_url(&self, url: &str) -> Result<Url, EgressError> {
        let parsed = Self::parse_url(url)?;
        let listed = self.is_listed(&parsed);
        let host = host_of(&parsed);
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<IpAddr> = match literal_ip(&parsed) {
            Some(ip) => vec![ip],
            None => {
                let unresolvable = |reason: String| EgressError::Unresolvable {
                    host: host.clone(),
                    reason,
                };
                // A slow resolver must not hold an admin request for long.
                tokio::time::timeout(
                    INSTALL_LOOKUP_TIMEOUT,
                    tokio::net::lookup_host((host.as_str(), port)),
                )
                .await
                .map_err(|_| unresolvable("the lookup timed out".into()))?
                .map_err(|e| unresolvable(e.to_string()))?
                .map(|a| a.ip())
                .collect()
            }
        };
        if addrs.is_empty() {
            return Err(EgressError::Unresolvable {
                host,
                reason: "no addresses".into(),
            });
        }
        for addr in addrs {
            self.check_addr(&host, addr, listed)
                .map_err(|e| with_listing(e, &parsed))?;
        }
        Ok(parsed)
    }
}

/// An HTTP client that only reaches what the [`EgressPolicy`] allows and never follows redirects.
#[derive(Clone)]
pub struct GuardedClient {
    policy: Arc<EgressPolicy>,
    /// For URLs whose `host:port` is not listed: internal ranges are dropped at resolution.
    strict: reqwest::Client,
    /// For listed URLs: only metadata addresses are dropped. Used for nothing else, and with
    /// redirects off it connects only to the listed `host:port`.
    listed: reqwest::Client,
}

impl GuardedClient {
    pub fn new(policy: EgressPolicy, connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let build = |listed: bool| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // A proxy would be the address connected to, and it would resolve the name.
                .no_proxy()
                .connect_timeout(connect_timeout)
                .dns_resolver(Arc::new(GuardedResolver {
                    policy: Arc::clone(&policy),
                    listed,
                }))
                .build()
        };
        Ok(GuardedClient {
            strict: build(false)?,
            listed: build(true)?,
            policy,
        })
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// A POST to `url`, or why it may not be sent. IP-literal URLs are checked here (no
    /// resolver sees them); names are checked on every address they resolve to when connecting.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, EgressError> {
        let parsed = EgressPolicy::parse_url(url)?;
        let listed = self.policy.is_listed(&parsed);
        if let Some(ip) = literal_ip(&parsed) {
            self.policy
                .check_addr(&host_of(&parsed), ip, listed)
                .map_err(|e| with_listing(e, &parsed))?;
        }
        let client = if listed { &self.listed } else { &self.strict };
        Ok(client.post(parsed))
    }

    /// The egress refusal behind a failed request, if that is why it failed.
    pub fn refusal(error: &reqwest::Error) -> Option<EgressError> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<EgressError>() {
                return Some(refused.clone());
            }
            source = e.source();
        }
        None
    }
}

/// Resolves names and keeps only the addresses the policy allows; none left is an error that
/// names the first refused address.
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    listed: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let listed = self.listed;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| EgressError::Unresolvable {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            let mut first_refusal = None;
            let mut allowed = Vec::new();
            for addr in resolved {
                match policy.check_addr(&host, addr.ip(), listed) {
                    Ok(()) => allowed.push(addr),
                    Err(e) => {
                        first_refusal.get_or_insert(e);
                    }
                }
            }
            if allowed.is_empty() {
                let refusal = first_refusal.unwrap_or(EgressError::Unresolvable {
                    host,
                    reason: "no addresses".into(),
                });
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// `host:port` as `tools.allowed_http_hosts` lists it.
fn listing(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// Names the listing an internal-address refusal would need.
fn with_listing(e: EgressError, url: &Url) -> EgressError {
    match e {
        EgressError::Internal {
            host, addr, range, ..
        } => EgressError::Internal {
            host,
            addr,
            range,
            listing: listing(url),
        },
        other => other,
    }
}

/// The host as a resolver is asked for it (IPv6 literals without brackets).
fn host_of(url: &Url) -> String {
    match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => String::new(),
    }
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// A cloud metadata address, also when an IPv6 address embeds the IPv4 one.
pub fn is_metadata(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4 == METADATA_V4,
        IpAddr::V6(v6) => v6 == METADATA_V6 || embedded_v4(v6) == Some(METADATA_V4),
    }
}

/// The range an address belongs to when it is not a public unicast address.
pub fn refused_range(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => refused_v4(v4).or(refused_v6(v6)),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        () if a == 0 => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if ip.is_private() => "private",
        () if ip.is_link_local() => "link-local",
        () if a == 100 && (64..128).contains(&b) => "shared (CGNAT)",
        () if ip.is_broadcast() => "broadcast",
        () if ip.is_multicast() => "multicast",
        () if a >= 240 => "reserved",
        () if a == 192 && b == 0 && c == 0 => "reserved",
        () if a == 198 && (b == 18 || b == 19) => "benchmarking",
        () => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match () {
        () if ip.is_unspecified() => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if s[0] & 0xfe00 == 0xfc00 => "unique-local",
        () if s[0] & 0xffc0 == 0xfe80 => "link-local",
        () if s[0] & 0xffc0 == 0xfec0 => "site-local",
        () if s[0] & 0xff00 == 0xff00 => "multicast",
        // Translation prefixes whose IPv4 address is not decoded here, so refused whole: SIIT
        // (`::ffff:0:a.b.c.d`), local-use NAT64 (`64:ff9b:1::/48`), Teredo (`2001::/32`), and
        // the discard-only `100::/64`.
        () if s[..6] == [0, 0, 0, 0, 0xffff, 0] => "translated",
        () if s[..3] == [0x64, 0xff9b, 1] => "translated",
        () if s[..2] == [0x2001, 0] => "translated",
        () if s[..4] == [0x100, 0, 0, 0] => "discard-only",
        () => return None,
    })
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail()),
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused_and_public_addresses_pass() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "::ffff:0:10.0.0.1",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378::1",
            "100::1",
        ] {
            assert!(refused_range(ip(internal)).is_some(), "{internal}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(refused_range(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn metadata_is_refused_even_when_listed_and_in_every_embedding() {
        let policy = EgressPolicy::new(&["169.254.169.254:80"]);
        for meta in [
            "169.254.169.254",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_metadata(ip(meta)), "{meta}");
            assert!(matches!(
                policy.check_addr("h", ip(meta), true),
                Err(EgressError::Metadata { .. })
            ));
        }
        assert!(policy.check_addr("h", ip("127.0.0.1"), true).is_ok());
        assert!(policy.check_addr("h", ip("127.0.0.1"), false).is_err());
    }

    #[test]
    fn a_listing_is_the_exact_host_and_port() {
        let policy = EgressPolicy::new(&["127.0.0.1:8088", "LocalHost:9000", "[::1]:7000"]);
        let listed = |u: &str| policy.is_listed(&EgressPolicy::parse_url(u).unwrap());
        assert!(listed("http://127.0.0.1:8088/x"));
        assert!(!listed("http://127.0.0.1:8089/x"));
        assert!(listed("http://localhost:9000/"));
        assert!(!listed("http://localhost:8088/"));
        assert!(listed("http://[::1]:7000/"));
        assert!(EgressPolicy::parse_url("file:///etc/passwd").is_err());
        assert!(EgressPolicy::parse_url("http://user:pw@example.com/").is_err());
    }

    #[tokio::test]
    async fn install_checks_resolve_names_and_literals() {
        let policy = EgressPolicy::new(&["localhost:9000"]);
        assert!(matches!(
            policy.check_url("http://localhost:8000/").await,
            Err(EgressError::Internal { .. })
        ));
        assert!(policy.check_url("http://localhost:9000/").await.is_ok());
        assert!(matches!(
            policy.check_url("http://[::ffff:7f00:1]:80/").await,
            Err(EgressError::Internal { .. })
        ));
        // WHATWG URL parsing turns these hosts into 127.0.0.1; they are literals, not names.
        for odd in ["http://2130706433/", "http://0x7f.0.0.1/", "http://127.1/"] {
            assert!(
                matches!(
                    policy.check_url(odd).await,
                    Err(EgressError::Internal { .. })
                ),
                "{odd}"
            );
        }
        let refusal = policy
            .check_url("http://127.0.0.1:5432/")
            .await
            .unwrap_err();
        assert!(
            refusal.to_string().contains("`127.0.0.1:5432`"),
            "{refusal}"
        );
    }
}
