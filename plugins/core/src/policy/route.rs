//! Routes: which requests a rule covers (methods, an exact path or path
//! template, a prefix) and what each plugin does on it. Every plugin has its
//! own sub-object on the route (`exchange` for token-exchange, `mcp` for the
//! tools an MCP endpoint serves); a field no plugin knows is an error.

use super::template::{check_prefix, Params, PathTemplate};
use super::tools::{McpRoute, ToolRefusal};
use super::{invalid, PolicyError};
use crate::approval::ApprovalRule;
use crate::fga::FgaRule;
use serde::Deserialize;

/// A route and what it requires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Route {
    /// Which requests the route covers.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// No token needed; a token that is sent is still verified.
    #[serde(default)]
    pub public: bool,
    /// Scopes the route needs (advertised in the metadata): RFC 6749 scope
    /// tokens, none on a public route.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(inner(regex(pattern = r#"^[!#-\[\]-~]+$"#)))
    )]
    pub scopes: Vec<String>,
    /// Send the user's token (`Authorization`, the token header, the token
    /// query parameter) on to the upstream; otherwise it is removed. Not
    /// with `exchange`.
    #[serde(default)]
    pub forward_token: bool,
    /// token-exchange: the upstream token that replaces the user's.
    #[serde(default)]
    pub exchange: Option<RouteExchange>,
    /// The MCP tools this route's endpoint serves.
    #[serde(default)]
    pub mcp: Option<McpRoute>,
    /// ciba-hold: the user approves requests of this route (those `when`
    /// selects) before they go on; needs the top-level `approval` section.
    #[serde(default)]
    pub approval: Option<ApprovalRule>,
    /// scope-fga: required scopes and relationship checks (needs the `fga`
    /// section).
    #[serde(default)]
    pub fga: Option<FgaRule>,
}

/// token-exchange on a route: which vault connection's upstream token
/// replaces the user's, for which audience and scopes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RouteExchange {
    /// Vault connection (e.g. `stocktrade`); needs the `vault` section.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub connection: String,
    /// Audience (RFC 8693 `audience`) requested for the upstream token.
    #[serde(default)]
    pub audience: Option<String>,
    /// Scopes requested for the upstream token (empty: the connection's defaults).
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(inner(regex(pattern = r#"^[!#-\[\]-~]+$"#)))
    )]
    pub scopes: Vec<String>,
}

/// What a request that matches no route gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Unmatched {
    /// 403 `access_denied`: only what the routes list is reachable.
    #[default]
    Deny,
    /// A valid token is needed, nothing more.
    Authenticated,
    /// No token needed (a token that is sent is still verified).
    Public,
}

/// Request matching: every given condition must hold. Paths are compared
/// after RFC 3986 normalisation (`//` merged, dot segments removed,
/// encoded unreserved characters decoded), as Envoy's `normalize_path` does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RouteMatch {
    /// HTTP methods (upper case); empty matches any, and `HEAD` matches
    /// wherever `GET` does.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[A-Z]+$"))))]
    pub methods: Vec<String>,
    /// Exact path (query excluded), with or without one trailing `/`; a
    /// segment `{name}` matches any one non-empty segment (`/orders/{id}`).
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(
            with = "Option<String>",
            regex(pattern = r"^(/|(/([^/{}?#\s]+|\{[A-Za-z_][A-Za-z0-9_]*\}))+/?)$")
        )
    )]
    pub path: Option<PathTemplate>,
    /// Path prefix, on segment boundaries (`/api` matches `/api/x`, not `/apix`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/[^{}?#\s]*$")))]
    pub path_prefix: Option<String>,
}

impl RouteMatch {
    /// Whether a request with this method and normalised path (query
    /// excluded) matches. Allocates nothing.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        // A server answers HEAD as it answers GET, handler included.
        let method_matches = |m: &String| m == method || (method == "HEAD" && m == "GET");
        if !self.methods.is_empty() && !self.methods.iter().any(method_matches) {
            return false;
        }
        if let Some(exact) = &self.path {
            if !exact.matches(path) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let prefix = prefix.trim_end_matches('/');
            let rest = match path.strip_prefix(prefix) {
                Some(rest) => rest,
                None => return false,
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                return false;
            }
        }
        true
    }

    /// The path parameters of a request this matcher [`matches`](Self::matches);
    /// empty when the path names none.
    pub fn params<'a>(&'a self, path: &'a str) -> Params<'a> {
        self.path
            .as_ref()
            .and_then(|t| t.capture(path))
            .unwrap_or_default()
    }
}

impl Route {
    /// Scopes calling MCP tool `name` on this route needs besides
    /// [`Route::scopes`]: see [`McpRoute::tool_scopes`]. A route without an
    /// `mcp` section adds none.
    pub fn tool_scopes(&self, name: &str) -> Result<&[String], ToolRefusal> {
        match &self.mcp {
            Some(mcp) => mcp.tool_scopes(name),
            None => Ok(&[]),
        }
    }

    /// Whether the route's path template captures parameter `name`.
    pub fn has_param(&self, name: &str) -> bool {
        self.matcher
            .path
            .as_ref()
            .is_some_and(|t| t.has_param(name))
    }

    /// Checks what the types cannot; `at` is the route's field path
    /// (`routes[2]`), `has_vault` and `has_fga` whether the policy has a
    /// `vault` and an `fga` section.
    pub(super) fn validate(
        &self,
        at: &str,
        has_vault: bool,
        has_fga: bool,
    ) -> Result<(), PolicyError> {
        crate::scopes::validate_route(self).map_err(|(f, m)| invalid(format!("{at}.{f}"), m))?;
        let m = &self.matcher;
        if let Some(prefix) = &m.path_prefix {
            check_prefix(prefix).map_err(|e| invalid(format!("{at}.match.path_prefix"), e))?;
        }
        if m.methods
            .iter()
            .any(|x| x.is_empty() || x.to_uppercase() != *x)
        {
            return Err(invalid(
                format!("{at}.match.methods"),
                "upper-case method names",
            ));
        }
        if let Some(exchange) = &self.exchange {
            if self.forward_token {
                return Err(invalid(
                    format!("{at}.forward_token"),
                    "an `exchange` route sends the exchanged token upstream, never the user's",
                ));
            }
            if exchange.connection.is_empty() {
                return Err(invalid(
                    format!("{at}.exchange.connection"),
                    "must not be empty",
                ));
            }
            if !has_vault {
                return Err(invalid(
                    format!("{at}.exchange.connection"),
                    "a connection needs the `vault` section",
                ));
            }
            if let Some(j) = exchange
                .scopes
                .iter()
                .position(|s| !crate::scopes::is_scope_token(s))
            {
                return Err(invalid(
                    format!("{at}.exchange.scopes[{j}]"),
                    "a scope token (RFC 6749 §3.3): printable ASCII without space, `\"` or `\\`",
                ));
            }
        }
        if let Some(rule) = &self.fga {
            if !has_fga {
                return Err(invalid(
                    format!("{at}.fga"),
                    "relationship checks need the `fga` section",
                ));
            }
            if self.public {
                return Err(invalid(
                    format!("{at}.fga"),
                    "a public route takes requests without a token, so it cannot check who sends them",
                ));
            }
            rule.validate(&format!("{at}.fga"), |p| self.has_param(p), false)?;
        }
        if let Some(mcp) = &self.mcp {
            mcp.validate(&format!("{at}.mcp"), self.public, has_fga, |p| {
                self.has_param(p)
            })?;
        }
        self.validate_approvals(at)
    }

    /// Every approval rule of the route, with its field path: the route's
    /// own and its MCP tools'.
    pub fn approvals(&self, at: &str) -> Vec<(String, &ApprovalRule)> {
        let mut out = Vec::new();
        if let Some(rule) = &self.approval {
            out.push((format!("{at}.approval"), rule));
        }
        if let Some(mcp) = &self.mcp {
            for (name, tool) in &mcp.tools.0 {
                if let Some(rule) = &tool.approval {
                    out.push((format!("{at}.mcp.tools.{name}.approval"), rule));
                }
            }
        }
        out
    }

    /// Whether one of the route's MCP tools has an approval rule (then
    /// ciba-hold reads every POST's JSON-RPC body).
    pub fn has_tool_approvals(&self) -> bool {
        self.mcp
            .as_ref()
            .is_some_and(|m| m.tools.0.values().any(|t| t.approval.is_some()))
    }

    fn validate_approvals(&self, at: &str) -> Result<(), PolicyError> {
        if self.approval.is_some() && self.has_tool_approvals() {
            return Err(invalid(
                format!("{at}.approval"),
                "a route whose MCP tools have approval rules takes no route-level rule: each tool's rule decides its calls",
            ));
        }
        // `{name}` segments of the route's path template.
        let template = self.matcher.path.as_ref().map(|t| t.as_str()).unwrap_or("");
        let has_param = |name: &str| {
            template
                .split('/')
                .any(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) == Some(name))
        };
        for (field, rule) in self.approvals(at) {
            if self.public {
                return Err(invalid(
                    field,
                    "a public route takes requests without a token: nobody to ask for approval",
                ));
            }
            rule.validate(&field, has_param)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{base, parse, vault};
    use super::*;
    use serde_json::json;

    fn matcher(methods: &[&str], path: Option<&str>, prefix: Option<&str>) -> RouteMatch {
        RouteMatch {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: path.map(|p| PathTemplate::parse(p).unwrap()),
            path_prefix: prefix.map(str::to_string),
        }
    }

    #[test]
    fn route_prefix_matches_on_segment_boundaries() {
        let m = matcher(&["GET"], None, Some("/prices"));
        assert!(m.matches("GET", "/prices"));
        assert!(m.matches("GET", "/prices/ACME"));
        assert!(!m.matches("GET", "/pricesx"));
        assert!(!m.matches("POST", "/prices"));
    }

    #[test]
    fn head_matches_wherever_get_does() {
        let m = matcher(&["GET"], Some("/broker/portfolio"), None);
        assert!(m.matches("HEAD", "/broker/portfolio"));
        assert!(!m.matches("POST", "/broker/portfolio"));
        let post = matcher(&["POST"], Some("/broker/portfolio"), None);
        assert!(!post.matches("HEAD", "/broker/portfolio"));
    }

    #[test]
    fn exact_path_matches_with_or_without_a_trailing_slash() {
        let m = matcher(&[], Some("/trades"), None);
        assert!(m.matches("POST", "/trades"));
        assert!(m.matches("POST", "/trades/"));
        assert!(!m.matches("POST", "/trades/x"));
        assert!(!m.matches("POST", "/tradesx"));
        let root = matcher(&[], Some("/"), None);
        assert!(root.matches("GET", "/"));
        assert!(!root.matches("GET", "/x"));
    }

    #[test]
    fn a_template_route_gives_its_parameters() {
        let m = matcher(&["GET"], Some("/orders/{id}"), None);
        assert!(m.matches("GET", "/orders/7"));
        assert_eq!(m.params("/orders/7").get("id"), Some("7"));
        assert!(matcher(&[], Some("/x"), None).params("/x").is_empty());
    }

    #[test]
    fn unmatched_defaults_to_deny_and_names_its_values() {
        assert_eq!(parse(base()).unwrap().unmatched, Unmatched::Deny);
        for (name, value) in [
            ("deny", Unmatched::Deny),
            ("authenticated", Unmatched::Authenticated),
            ("public", Unmatched::Public),
        ] {
            let mut v = base();
            v["unmatched"] = json!(name);
            assert_eq!(parse(v).unwrap().unmatched, value);
        }
        let mut v = base();
        v["unmatched"] = json!("allow");
        assert_eq!(parse(v).unwrap_err().field, "unmatched");
    }

    #[test]
    fn route_paths_that_are_not_normalised_are_refused() {
        for (field, path) in [
            ("path", "/a//b"),
            ("path", "/a/../b"),
            ("path_prefix", "/%61pi"),
            ("path", "/a?x=1"),
            ("path_prefix", "api"),
            ("path", "/a%2Fb"),
            ("path", "/orders/{id"),
            ("path", "/{a}/{a}"),
            ("path_prefix", "/orders/{id}"),
        ] {
            let mut v = base();
            v["routes"] = json!([{"match": {field: path}}]);
            assert_eq!(
                parse(v).unwrap_err().field,
                format!("routes[0].match.{field}"),
                "{path}"
            );
        }
    }

    #[test]
    fn exchange_is_a_sub_object_of_the_route() {
        let mut v = base();
        v["vault"] = vault();
        v["routes"] = json!([{"match": {"path": "/p"},
            "exchange": {"connection": "c", "audience": "https://up", "scopes": ["a", "b"]}}]);
        let p = parse(v).unwrap();
        let exchange = p.routes[0].exchange.as_ref().unwrap();
        assert_eq!(exchange.connection, "c");
        assert_eq!(exchange.audience.as_deref(), Some("https://up"));
        assert_eq!(exchange.scopes, ["a", "b"]);
    }

    #[test]
    fn the_old_flat_exchange_fields_and_unknown_plugin_sections_are_refused() {
        for field in ["connection", "upstream_scopes", "audience"] {
            let mut v = base();
            v["vault"] = vault();
            v["routes"] = json!([{"match": {"path": "/p"}, field: "x"}]);
            let e = parse(v).unwrap_err();
            assert_eq!(e.field, format!("routes[0].{field}"));
            assert!(e.message.contains("unknown field"), "{e}");
        }
    }

    #[test]
    fn forward_token_on_an_exchange_route_is_refused() {
        let mut v = base();
        v["vault"] = vault();
        v["routes"] = json!([{"match": {"path": "/p"}, "exchange": {"connection": "c"}, "forward_token": true}]);
        assert_eq!(parse(v).unwrap_err().field, "routes[0].forward_token");
    }

    #[test]
    fn bad_exchange_sections_name_their_field() {
        for (exchange, with_vault, field) in [
            (
                json!({"connection": "stocktrade"}),
                false,
                "routes[0].exchange.connection",
            ),
            (
                json!({"connection": ""}),
                true,
                "routes[0].exchange.connection",
            ),
            (
                json!({"connection": "c", "scopes": ["a b"]}),
                true,
                "routes[0].exchange.scopes[0]",
            ),
            (
                json!({"connection": "c", "scope": "a"}),
                true,
                "routes[0].exchange.scope",
            ),
            (json!({"audience": "a"}), true, "routes[0].exchange"),
        ] {
            let mut v = base();
            if with_vault {
                v["vault"] = vault();
            }
            v["routes"] = json!([{"match": {"path": "/p"}, "exchange": exchange}]);
            assert_eq!(parse(v).unwrap_err().field, field, "{exchange}");
        }
    }
}
