//! The policy document: one JSON document describes a deployment, and every
//! plugin reads the part it needs. Parsing is strict (unknown fields are
//! errors) and every error names the field, so a typo never silently weakens
//! a policy. The document's JSON Schema (`policies/agentward.schema.json`)
//! is generated from these types (feature `schema`).
//!
//! By topic: [`issuer`](Issuer) (trusted issuers and their keys),
//! [`algorithm`](Algorithm), [`identity`](IdentityOptions) (jwt-identity's
//! options), [`route`](Route) (matching, templates, one sub-object per
//! plugin), [`vault`](VaultClient) (token-exchange's way to the vault).

mod algorithm;
mod identity;
mod issuer;
mod json_path;
pub(crate) use json_path::{checked, parsed_str, Shape};
mod route;
#[cfg(feature = "schema")]
mod schema;
mod template;
mod tools;
mod vault;

pub use algorithm::Algorithm;
pub use identity::{ClaimToHeader, IdentityOptions};
pub use issuer::Issuer;
pub use route::{Route, RouteExchange, RouteMatch, Unmatched};
#[cfg(feature = "schema")]
pub use schema::{json_schema, json_schema_text};
pub use template::{Params, PathTemplate};
pub use tools::{
    is_tool_name, Entries, McpEntry, McpRoute, McpTool, Named, ToolRefusal, Tools, UnlistedTools,
};
pub use vault::{ExchangeDialect, VaultClient};

use serde::Deserialize;
use std::fmt;

/// A deployment's policy, as written in the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "agentward policy"))]
pub struct Policy {
    /// The document's JSON Schema (`./agentward.schema.json`), for editors;
    /// the parser ignores it.
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    /// The protected resource's identifier (RFC 9728 `resource`), an absolute URL.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^https?://[^/]")))]
    pub resource: String,
    /// Authorization servers advertised in the protected resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in the metadata; when empty, the scopes named by routes.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Trusted token issuers.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub issuers: Vec<Issuer>,
    /// Leeway for `exp`/`nbf`, in seconds.
    #[serde(default = "default_clock_skew")]
    #[cfg_attr(feature = "schema", schemars(range(max = 300)))]
    pub clock_skew_seconds: u64,
    /// Options of the jwt-identity plugin.
    #[serde(default)]
    pub identity: IdentityOptions,
    /// Routes with their requirements; the first that matches applies.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// What a request that no route matches gets.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// How the gateway reaches the vault (token exchange).
    #[serde(default)]
    pub vault: Option<VaultClient>,
    /// ciba-hold: how the gateway reaches the CIBA authority that asks
    /// users to approve (the vault, or any OpenID CIBA provider).
    #[serde(default)]
    pub approval: Option<crate::approval::Authority>,
    /// How scope-fga reaches its OpenFGA-compatible API.
    #[serde(default)]
    pub fga: Option<crate::fga::FgaService>,
}

/// The route a request matched: its index in `routes`, the route, and the
/// parameters its path template gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched<'a> {
    /// Index in [`Policy::routes`].
    pub index: usize,
    /// The path template's parameters (empty for a path without any).
    pub params: Params<'a>,
}

/// A policy that does not parse or validate; `field` is a path like `issuers[0].audiences`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Where the problem is.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy at `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for PolicyError {}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        message: message.into(),
    }
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(json: &[u8]) -> Result<Policy, PolicyError> {
        let policy: Policy = serde_json::from_slice(json).map_err(|e| {
            let syntax = e.classify() == serde_json::error::Category::Syntax;
            let path = json_path::at(json, e.line(), e.column(), syntax);
            // serde_json appends "at line L column C": keep only the message.
            let message = e.to_string();
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_string(),
                None => message,
            };
            invalid(
                if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                message,
            )
        })?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        if !is_absolute_url(&self.resource) {
            return Err(invalid("resource", "must be an absolute http(s) URL"));
        }
        if self.issuers.is_empty() {
            return Err(invalid("issuers", "at least one issuer is required"));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("issuers[{i}]"))?;
        }
        if self.clock_skew_seconds > 300 {
            return Err(invalid("clock_skew_seconds", "at most 300 seconds"));
        }
        self.identity.validate()?;
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(
                &format!("routes[{i}]"),
                self.vault.is_some(),
                self.fga.is_some(),
            )?;
        }
        if let Some(vault) = &self.vault {
            vault.validate()?;
        }
        if let Some(approval) = &self.approval {
            approval.validate("approval")?;
        }
        for (i, route) in self.routes.iter().enumerate() {
            for (field, rule) in route.approvals(&format!("routes[{i}]")) {
                let Some(authority) = &self.approval else {
                    return Err(invalid(
                        field,
                        "an approval rule needs the top-level `approval` section",
                    ));
                };
                let tool = field.contains(".mcp.tools.");
                let deferred = rule.mode == crate::approval::Mode::Deferred || tool;
                if deferred && authority.handle_key_env.is_none() {
                    return Err(invalid(
                        format!("{field}.mode"),
                        "deferred approvals (and MCP tools') need `approval.handle_key_env`, the key of approval ids",
                    ));
                }
                if tool && authority.approval_url.is_none() {
                    return Err(invalid(
                        "approval.approval_url",
                        format!("`{field}`: an MCP tool's approval sends the client to `approval_url` (where the user sees pending approvals)"),
                    ));
                }
            }
        }
        if let Some(fga) = &self.fga {
            fga.validate()?;
        }
        Ok(())
    }

    /// The first route that matches a normalised path, if any.
    pub fn route(&self, method: &str, path: &str) -> Option<&Route> {
        self.route_index(method, path).map(|i| &self.routes[i])
    }

    /// Index in `routes` of the first route that matches a normalised path
    /// ([`crate::path::normalize`]), if any. Allocates nothing.
    pub fn route_index(&self, method: &str, path: &str) -> Option<usize> {
        let path = path.split('?').next().unwrap_or(path);
        self.routes
            .iter()
            .position(|r| r.matcher.matches(method, path))
    }

    /// The first route that matches a normalised path, with its path
    /// parameters; allocates only when the route's path names parameters.
    pub fn matched<'a>(&'a self, method: &str, path: &'a str) -> Option<Matched<'a>> {
        let path = path.split('?').next().unwrap_or(path);
        let index = self
            .routes
            .iter()
            .position(|r| r.matcher.matches(method, path))?;
        let params = self.routes[index].matcher.params(path);
        Some(Matched { index, params })
    }

    /// Scopes advertised in the protected resource metadata: `scopes_supported`,
    /// or else every scope routes and their MCP tools name.
    pub fn advertised_scopes(&self) -> Vec<String> {
        if !self.scopes_supported.is_empty() {
            return self.scopes_supported.clone();
        }
        let tool_scopes = self
            .routes
            .iter()
            .filter_map(|r| r.mcp.as_ref())
            .flat_map(|m| m.tools.0.values())
            .flat_map(|t| t.scopes.iter());
        let mut scopes: Vec<String> = Vec::new();
        for s in self
            .routes
            .iter()
            .flat_map(|r| r.scopes.iter())
            .chain(tool_scopes)
        {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        scopes
    }
}

fn is_absolute_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn default_clock_skew() -> u64 {
    30
}

#[cfg(test)]
mod testing {
    use super::{Policy, PolicyError};

    /// A minimal valid policy.
    pub fn base() -> serde_json::Value {
        serde_json::json!({
            "resource": "https://api.example.com",
            "issuers": [{
                "issuer": "https://idp.example.com/",
                "audiences": ["https://api.example.com"],
                "jwks_uri": "https://idp.example.com/jwks.json",
                "jwks_cluster": "idp"
            }]
        })
    }

    /// A valid `vault` section.
    pub fn vault() -> serde_json::Value {
        serde_json::json!({"cluster": "vault", "client_id": "g", "client_secret": "s"})
    }

    pub fn parse(v: serde_json::Value) -> Result<Policy, PolicyError> {
        Policy::parse(v.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{base, parse};
    use serde_json::json;

    #[test]
    fn tool_approvals_need_the_approval_url_and_no_route_rule() {
        let mut p = base();
        p["routes"] = json!([
            {"match": {"path": "/mcp"}, "mcp": {"tools": {"u": {"approval": {"binding_message": "Call u"}}}}}
        ]);
        p["approval"] = json!({"cluster": "vault", "client_id": "g", "client_secret": "s",
                               "handle_key_env": "K"});
        let e = parse(p.clone()).unwrap_err();
        assert_eq!(e.field, "approval.approval_url");
        p["approval"]["approval_url"] = json!("https://vault.example.com/ciba/approvals");
        assert!(parse(p.clone()).is_ok());
        p["routes"][0]["approval"] = json!({"binding_message": "Call"});
        assert_eq!(parse(p).unwrap_err().field, "routes[0].approval");
    }

    #[test]
    fn minimal_policy_gets_safe_defaults() {
        let p = parse(base()).unwrap();
        assert_eq!(p.clock_skew_seconds, 30);
        assert!(p.routes.is_empty() && p.vault.is_none());
    }

    #[test]
    fn missing_resource_is_named() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("resource");
        let e = parse(v).unwrap_err();
        assert!(e.message.contains("resource"), "{e}");
    }

    #[test]
    fn a_schema_reference_is_accepted_and_ignored() {
        let mut v = base();
        v["$schema"] = json!("./agentward.schema.json");
        assert!(parse(v).is_ok());
        let mut v = base();
        v["$schema"] = json!(1);
        assert_eq!(parse(v).unwrap_err().field, "$schema");
    }

    #[test]
    fn the_first_matching_route_applies_and_templates_give_parameters() {
        let mut v = base();
        v["routes"] = json!([
            {"match": {"methods": ["GET"], "path": "/orders/export"}},
            {"match": {"methods": ["GET"], "path": "/orders/{id}"}},
            {"match": {"path": "/users/{user}/docs/{doc}"}},
        ]);
        let p = parse(v).unwrap();
        assert_eq!(p.route_index("GET", "/orders/export"), Some(0));
        let m = p.matched("GET", "/orders/export?x=1").unwrap();
        assert_eq!((m.index, m.params.is_empty()), (0, true));
        let m = p.matched("GET", "/orders/42?x=1").unwrap();
        assert_eq!((m.index, m.params.get("id")), (1, Some("42")));
        assert_eq!(p.route_index("GET", "/orders/42"), Some(1));
        let m = p.matched("DELETE", "/users/alice/docs/7").unwrap();
        assert_eq!(m.index, 2);
        assert_eq!(
            (m.params.get("user"), m.params.get("doc")),
            (Some("alice"), Some("7"))
        );
        assert_eq!(p.matched("POST", "/orders/42"), None);
        assert_eq!(p.route_index("GET", "/orders"), None);
    }

    #[test]
    fn advertised_scopes_include_mcp_tool_scopes_once() {
        let mut v = base();
        v["routes"] = json!([
            {"match": {"path": "/a"}, "scopes": ["read"]},
            {"match": {"path": "/mcp"}, "scopes": ["read"],
             "mcp": {"tools": {"buy": {"scopes": ["trade"]}, "sell": {"scopes": ["trade"]}}}},
        ]);
        assert_eq!(parse(v).unwrap().advertised_scopes(), ["read", "trade"]);
    }
}
