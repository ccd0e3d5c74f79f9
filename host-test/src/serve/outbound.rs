//! Spin's `allowed_outbound_hosts`: the destinations a component may call,
//! as `scheme://host[:port]` patterns. `*` stands for any scheme or host,
//! `*.example.com` for its subdomains, a missing port for the scheme's
//! default (80, 443), `:*` for any port. A call elsewhere is refused before
//! it is made (`HttpRequestDenied`), as Spin refuses it.

/// One allowed destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    Exact(String),
    /// `*.example.com`: a subdomain of `example.com`.
    Under(String),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses `scheme://host[:port]` (a path, query or user part is an error).
    pub fn parse(pattern: &str) -> Result<AllowedHost, String> {
        let bad = |why: &str| format!("allowed outbound host {pattern:?}: {why}");
        let (scheme, rest) = pattern
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(bad("only scheme://host[:port]"));
        }
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_string()),
            _ => return Err(bad("the scheme must be http, https or *")),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, "*")) => (host, None),
            Some((host, port)) => {
                let port = port.parse().map_err(|_| bad("not a port"))?;
                (host, Some(port))
            }
            None => {
                let port = match &scheme {
                    Some(s) => default_port(s),
                    None => return Err(bad("`*://` needs a port (or `:*`)")),
                };
                (rest, port)
            }
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            Host::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            Host::Under(domain.to_string())
        } else if host.contains('*') || host.is_empty() {
            return Err(bad("`*` only as the whole host or its first label"));
        } else {
            Host::Exact(host)
        };
        Ok(AllowedHost { scheme, host, port })
    }

    /// Whether a call to `scheme://host:port` (port: the URL's, or the
    /// scheme's default) fits this pattern.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        let port = port.or_else(|| default_port(scheme));
        self.scheme.as_deref().is_none_or(|s| s == scheme)
            && match &self.host {
                Host::Any => true,
                Host::Exact(h) => *h == host,
                Host::Under(domain) => host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            }
            && self.port.is_none_or(|p| Some(p) == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, scheme: &str, host: &str, port: Option<u16>) -> bool {
        AllowedHost::parse(pattern)
            .unwrap()
            .allows(scheme, host, port)
    }

    #[test]
    fn patterns_match_as_spin_reads_them() {
        assert!(allows(
            "http://127.0.0.1:8787",
            "http",
            "127.0.0.1",
            Some(8787)
        ));
        assert!(!allows(
            "http://127.0.0.1:8787",
            "http",
            "127.0.0.1",
            Some(8788)
        ));
        assert!(!allows(
            "http://127.0.0.1:8787",
            "https",
            "127.0.0.1",
            Some(8787)
        ));
        assert!(allows(
            "https://vault.example.com",
            "https",
            "vault.example.com",
            None
        ));
        assert!(!allows(
            "https://vault.example.com",
            "https",
            "vault.example.com",
            Some(8443)
        ));
        assert!(allows(
            "http://scope-fga.spin.internal",
            "http",
            "scope-fga.spin.internal",
            None
        ));
        assert!(!allows(
            "http://scope-fga.spin.internal",
            "http",
            "ciba-hold.spin.internal",
            None
        ));
        assert!(allows(
            "http://*.spin.internal",
            "http",
            "ciba-hold.spin.internal",
            None
        ));
        assert!(!allows(
            "http://*.spin.internal",
            "http",
            "spin.internal",
            None
        ));
        assert!(!allows(
            "http://*.spin.internal",
            "http",
            "evilspin.internal",
            None
        ));
        assert!(allows("*://*:*", "https", "anywhere.example", Some(1)));
        assert!(allows("http://127.0.0.1:*", "http", "127.0.0.1", Some(9)));
    }

    #[test]
    fn a_bad_pattern_is_refused_with_the_reason() {
        for bad in [
            "127.0.0.1:8787",
            "ftp://x",
            "http://x/path",
            "http://user@x",
            "http://x:port",
            "http://a*b",
            "*://x",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }
}
