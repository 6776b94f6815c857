//! Outbound HTTP guarded against SSRF: an endpoint URL must be https (http only when settings allow
//! it), and every address it resolves to must be public unless its network is allow-listed. The
//! check happens in the resolver, so the address checked is the address connected to (no DNS
//! rebinding between check and connect); redirects are not followed (Standard Webhooks treats 3xx
//! as a failure) and environment proxies are ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("is not a valid URL")]
    Unparsable,
    #[error("must use https")]
    InsecureScheme,
    #[error("must name a host")]
    MissingHost,
    #[error("must not carry credentials")]
    Credentials,
    /// The address is not named: a caller must not learn what a name resolves to inside.
    #[error("is not an allowed destination")]
    ForbiddenAddress,
}

#[derive(Debug, Clone)]
pub struct EgressPolicy {
    allowed_networks: Vec<IpNet>,
    allow_insecure_http: bool,
}

impl EgressPolicy {
    pub fn new(allowed_networks: Vec<IpNet>, allow_insecure_http: bool) -> EgressPolicy {
        EgressPolicy {
            allowed_networks,
            allow_insecure_http,
        }
    }

    pub fn allows(&self, address: IpAddr) -> bool {
        self.allowed_networks
            .iter()
            .any(|network| network.contains(&address))
            || is_public(address)
    }

    /// Validates an endpoint URL as far as can be done without resolving it.
    pub fn check_url(&self, url: &str) -> Result<Url, EgressError> {
        let parsed = Url::parse(url).map_err(|_| EgressError::Unparsable)?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http => {}
            _ => return Err(EgressError::InsecureScheme),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EgressError::Credentials);
        }
        match parsed.host() {
            None => return Err(EgressError::MissingHost),
            Some(url::Host::Ipv4(address)) => self.check_address(IpAddr::V4(address))?,
            Some(url::Host::Ipv6(address)) => self.check_address(IpAddr::V6(address))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(parsed)
    }

    fn check_address(&self, address: IpAddr) -> Result<(), EgressError> {
        if self.allows(address) {
            return Ok(());
        }
        Err(EgressError::ForbiddenAddress)
    }
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [first, second, ..] = address.octets();
    let shared = first == 100 && (64..128).contains(&second); // 100.64.0.0/10, carrier-grade NAT
    let reserved = first >= 240; // 240.0.0.0/4
    let benchmarking = first == 198 && (second == 18 || second == 19); // 198.18.0.0/15
    let protocol_assignments = first == 192 && second == 0 && address.octets()[2] == 0; // 192.0.0.0/24
    let relay_anycast = first == 192 && second == 88 && address.octets()[2] == 99; // 192.88.99.0/24
    !(address.is_private()
        || address.is_loopback()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_documentation()
        || address.is_multicast()
        || first == 0
        || shared
        || reserved
        || benchmarking
        || protocol_assignments
        || relay_anycast)
}

/// IPv6 addresses that carry or reach an IPv4 address through a translator or tunnel are refused
/// outright (a webhook has no reason to use them, and each could reach an internal IPv4 host):
/// NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48, RFC 6052 and 8215), IPv4-compatible
/// ::a.b.c.d (::/96, RFC 4291), 6to4 (2002::/16, RFC 3056) and Teredo (2001::/32, RFC 4380).
fn is_public_v6(address: Ipv6Addr) -> bool {
    if let Some(mapped) = address.to_ipv4_mapped() {
        return is_public_v4(mapped);
    }
    let segments = address.segments();
    let [first, second, ..] = segments;
    let ipv4_compatible = segments[..6].iter().all(|segment| *segment == 0); // ::/96, :: and ::1 too
    let nat64 = first == 0x0064 && second == 0xff9b; // 64:ff9b::/96 and 64:ff9b:1::/48
    let six_to_four = first == 0x2002;
    let teredo = first == 0x2001 && second == 0;
    let discard = first == 0x0100 && segments[1..4].iter().all(|segment| *segment == 0); // 100::/64
    let unique_local = (first & 0xfe00) == 0xfc00; // fc00::/7
    let link_local = (first & 0xffc0) == 0xfe80; // fe80::/10
    let site_local = (first & 0xffc0) == 0xfec0; // fec0::/10, deprecated but still routed inside
    let documentation = first == 0x2001 && second == 0x0db8; // 2001:db8::/32
    let benchmarking = first == 0x2001 && second == 0x0002 && segments[2] == 0; // 2001:2::/48
    !(address.is_multicast()
        || ipv4_compatible
        || nat64
        || six_to_four
        || teredo
        || discard
        || unique_local
        || link_local
        || site_local
        || documentation
        || benchmarking)
}

pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// Resolves names and drops every address the policy refuses.
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|address| policy.allows(address.ip()))
                .collect();
            if allowed.is_empty() {
                // What the name resolved to stays here: a partner must not map internal DNS.
                tracing::debug!(%host, addresses = ?resolved, "webhook host resolves only to refused addresses");
                return Err(format!("{host} {}", EgressError::ForbiddenAddress).into());
            }
            let addresses: Addrs = Box::new(allowed.into_iter());
            Ok(addresses)
        })
    }
}

pub fn http_client(
    policy: Arc<EgressPolicy>,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .user_agent("Picket-Webhooks/1")
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EgressPolicy {
        EgressPolicy::new(Vec::new(), false)
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.0.170",
            "192.88.99.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::5db8:d822",
            "64:ff9b:1::a00:1",
            "::7f00:1",
            "::a00:1",
            "2002:7f00:1::",
            "2002:5db8:d822::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "100::1",
            "::",
        ] {
            let address: IpAddr = address.parse().expect("valid address");
            assert!(!strict().allows(address), "{address} allowed");
        }
        assert!(strict().allows("93.184.216.34".parse().expect("valid")));
        assert!(strict().allows("2606:2800:220:1::1".parse().expect("valid")));
    }

    #[test]
    fn allow_listed_network_is_reachable() {
        let policy = EgressPolicy::new(vec!["127.0.0.0/8".parse().expect("valid")], true);
        assert!(policy.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(!policy.allows("10.0.0.1".parse().expect("valid")));
    }

    #[test]
    fn url_checks_name_the_problem() {
        assert_eq!(
            strict().check_url("http://example.com/").err(),
            Some(EgressError::InsecureScheme)
        );
        assert_eq!(
            strict().check_url("ftp://example.com/").err(),
            Some(EgressError::InsecureScheme)
        );
        assert_eq!(
            strict().check_url("not a url").err(),
            Some(EgressError::Unparsable)
        );
        assert_eq!(
            strict().check_url("https://u:p@example.com/").err(),
            Some(EgressError::Credentials)
        );
        assert_eq!(
            strict().check_url("https://169.254.169.254/latest").err(),
            Some(EgressError::ForbiddenAddress)
        );
        assert_eq!(
            strict()
                .check_url("https://[64:ff9b::a9fe:a9fe]/latest")
                .err(),
            Some(EgressError::ForbiddenAddress)
        );
        assert!(
            strict()
                .check_url("https://hooks.example.com/picket")
                .is_ok()
        );
    }

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_to_loopback() {
        let resolver = GuardedResolver {
            policy: Arc::new(strict()),
        };
        let name: Name = "localhost".parse().expect("valid name");
        let error = resolver.resolve(name).await.err().expect("refused");
        assert_eq!(error.to_string(), "localhost is not an allowed destination");
    }
}
