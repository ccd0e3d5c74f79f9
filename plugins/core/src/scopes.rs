//! Route scopes: what a route needs against what a token was granted
//! (RFC 6749 §3.3 scope tokens, RFC 6750 §3.1 `insufficient_scope`). Until
//! scope-fga enforces richer rules, jwt-identity refuses a token that lacks
//! any scope its route lists.

use crate::policy::Route;

/// Whether `s` is a scope token (RFC 6749 §3.3: one or more of `%x21`,
/// `%x23-5B`, `%x5D-7E`): printable ASCII without space, `"` or `\`, so it
/// fits a space-separated list and a quoted challenge parameter as it is.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// The scopes of `required` that `granted` (space-separated, as in
/// `x-agentward-scope`) lacks, in `required`'s order. Every listed scope is
/// needed; the comparison is exact (scopes are case-sensitive).
pub fn missing<'a>(required: &'a [String], granted: &str) -> Vec<&'a str> {
    required
        .iter()
        .map(String::as_str)
        .filter(|need| !granted.split(' ').any(|g| g == *need))
        .collect()
}

/// A route's `scopes` as the policy must give them: scope tokens, and none
/// on a public route (which lets requests without a token through, so it
/// cannot ask a token for anything). The error names the field under the
/// route and says what is wrong.
pub fn validate_route(route: &Route) -> Result<(), (String, &'static str)> {
    if route.public && !route.scopes.is_empty() {
        return Err((
            "scopes".into(),
            "a public route takes requests without a token, so it cannot require scopes",
        ));
    }
    match route.scopes.iter().position(|s| !is_scope_token(s)) {
        Some(j) => Err((
            format!("scopes[{j}]"),
            "a scope token (RFC 6749 §3.3): printable ASCII without space, `\"` or `\\`",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_required_scope_must_be_granted() {
        let need = list(&["portfolio:read", "trade"]);
        assert!(missing(&need, "trade portfolio:read extra").is_empty());
        assert_eq!(missing(&need, "portfolio:read"), ["trade"]);
        assert_eq!(missing(&need, ""), ["portfolio:read", "trade"]);
        assert!(missing(&[], "").is_empty());
    }

    #[test]
    fn scopes_compare_exactly() {
        let need = list(&["trade"]);
        assert_eq!(missing(&need, "Trade"), ["trade"]);
        assert_eq!(missing(&need, "trades"), ["trade"]);
        assert_eq!(missing(&need, "trade:all"), ["trade"]);
    }

    #[test]
    fn policy_scopes_are_scope_tokens_and_not_on_public_routes() {
        let parse = |routes: serde_json::Value| {
            crate::Policy::parse(
                serde_json::json!({
                    "resource": "https://api",
                    "issuers": [{"issuer": "https://idp/", "audiences": ["https://api"],
                        "jwks_uri": "https://idp/jwks", "jwks_cluster": "idp"}],
                    "routes": routes
                })
                .to_string()
                .as_bytes(),
            )
        };
        let e =
            parse(serde_json::json!([{"match": {"path": "/a"}, "scopes": ["ok", "two words"]}]))
                .unwrap_err();
        assert_eq!(e.field, "routes[0].scopes[1]");
        let e = parse(serde_json::json!([{"match": {}}, {"match": {"path": "/p"}, "public": true, "scopes": ["x"]}]))
            .unwrap_err();
        assert_eq!(e.field, "routes[1].scopes");
        assert!(
            parse(serde_json::json!([{"match": {"path": "/a"}, "scopes": ["a:b", "c"]}])).is_ok()
        );
    }

    #[test]
    fn scope_tokens_are_printable_ascii_without_space_quote_or_backslash() {
        for ok in ["trade", "portfolio:read", "https://api/x.read", "a!#[]~"] {
            assert!(is_scope_token(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\u{7F}"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
