//! A route's `mcp` section: the MCP tools its endpoint serves, by name, with
//! the scopes each needs, and what a tool the policy does not list gets.
//! Which tool a request calls is [`crate::mcp`]'s business.

use super::{invalid, PolicyError};
use crate::response::{access_denied, LocalResponse};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

/// MCP tools served on a route (a Streamable HTTP endpoint), by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct McpRoute {
    /// Tools by name (1 to 128 of `A-Z a-z 0-9 _ - .`), each with what it
    /// needs on top of the route's own scopes.
    #[serde(default)]
    pub tools: Tools,
    /// What a call of a tool `tools` does not name gets: `deny` (403) or
    /// `allow` (the route's scopes suffice).
    #[serde(default)]
    pub unlisted_tools: UnlistedTools,
    /// scope-fga: prompts by name, each with the scopes and checks that
    /// getting it (and seeing it in `prompts/list`) needs.
    #[serde(default)]
    pub prompts: Entries,
    /// scope-fga: resources by URI, each with the scopes and checks that
    /// reading it (and seeing it in `resources/list`) needs.
    #[serde(default)]
    pub resources: Entries,
    /// What a prompt `prompts` does not name gets: `allow` (the default:
    /// listed and got as the server says) or `deny` (left out of
    /// `prompts/list`, refused at `prompts/get`).
    #[serde(default = "allow")]
    pub unlisted_prompts: UnlistedTools,
    /// What a resource `resources` does not name gets: `allow` (the
    /// default) or `deny`, as for prompts.
    #[serde(default = "allow")]
    pub unlisted_resources: UnlistedTools,
}

fn allow() -> UnlistedTools {
    UnlistedTools::Allow
}

/// Prompts by name or resources by URI; a key given twice is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries(pub BTreeMap<String, McpEntry>);

/// What getting one prompt or reading one resource needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct McpEntry {
    /// Scopes a token needs, besides the route's.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(inner(regex(pattern = r#"^[!#-\[\]-~]+$"#)))
    )]
    pub scopes: Vec<String>,
    /// Relationship checks (no placeholder names the prompt or resource:
    /// write its object out, `prompt:brief`).
    #[serde(default)]
    pub fga: Option<crate::fga::FgaRule>,
}

/// Which of an MCP route's named things a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// A prompt, by name (`prompts/get`, `prompts/list`).
    Prompt,
    /// A resource, by URI (`resources/read`, `resources/list`).
    Resource,
}

/// Tools by name; a name given twice is an error, not a silent override.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools(pub BTreeMap<String, McpTool>);

/// What calling one tool needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct McpTool {
    /// Scopes a token needs to call the tool, besides the route's.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(inner(regex(pattern = r#"^[!#-\[\]-~]+$"#)))
    )]
    pub scopes: Vec<String>,
    /// ciba-hold: the user approves calls of this tool (those `when`
    /// selects; `body.` names the call's `arguments`).
    #[serde(default)]
    pub approval: Option<crate::approval::ApprovalRule>,
    /// scope-fga: the tool's required scopes and relationship checks
    /// (`{tool}` is its name; `body` its call's `arguments`).
    #[serde(default)]
    pub fga: Option<crate::fga::FgaRule>,
}

/// What a call of a tool the policy does not list gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum UnlistedTools {
    /// 403 `access_denied`: only listed tools can be called.
    #[default]
    Deny,
    /// The route's scopes suffice.
    Allow,
}

/// A tool call the route's `mcp` section does not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolRefusal {
    /// The tool is not listed and `unlisted_tools` is `deny`.
    Unlisted,
}

impl ToolRefusal {
    /// The answer: 403 `access_denied`, reason `tool_not_allowed` (the tool's
    /// name is not echoed).
    pub fn response(self) -> LocalResponse {
        match self {
            ToolRefusal::Unlisted => access_denied(
                "tool_not_allowed",
                "the policy does not list this tool for this endpoint",
            ),
        }
    }
}

impl McpRoute {
    /// The rule for a prompt or resource: `Ok(Some)` when listed,
    /// `Ok(None)` when unlisted ones are allowed, `Err` when they are not.
    pub fn entry(&self, kind: Named, key: &str) -> Result<Option<&McpEntry>, ToolRefusal> {
        let (entries, unlisted) = match kind {
            Named::Prompt => (&self.prompts, self.unlisted_prompts),
            Named::Resource => (&self.resources, self.unlisted_resources),
        };
        match (entries.0.get(key), unlisted) {
            (Some(entry), _) => Ok(Some(entry)),
            (None, UnlistedTools::Allow) => Ok(None),
            (None, UnlistedTools::Deny) => Err(ToolRefusal::Unlisted),
        }
    }

    /// Scopes calling tool `name` needs besides the route's: the tool's own
    /// when listed, none when unlisted tools are allowed.
    pub fn tool_scopes(&self, name: &str) -> Result<&[String], ToolRefusal> {
        match (self.tools.0.get(name), self.unlisted_tools) {
            (Some(tool), _) => Ok(&tool.scopes),
            (None, UnlistedTools::Allow) => Ok(&[]),
            (None, UnlistedTools::Deny) => Err(ToolRefusal::Unlisted),
        }
    }

    /// Checks names and scopes; `at` is the section's field path, `public`
    /// whether the route takes requests without a token.
    pub(super) fn validate(
        &self,
        at: &str,
        public: bool,
        has_fga: bool,
        has_param: impl Fn(&str) -> bool,
    ) -> Result<(), PolicyError> {
        for (name, tool) in &self.tools.0 {
            if let Some(rule) = &tool.fga {
                let field = format!("{at}.tools.{name}.fga");
                if !has_fga {
                    return Err(invalid(field, "relationship checks need the `fga` section"));
                }
                if public {
                    return Err(invalid(
                        field,
                        "a public route takes requests without a token, so its tools cannot check who calls them",
                    ));
                }
                rule.validate(&field, &has_param, true)?;
            }
            if !is_tool_name(name) {
                return Err(invalid(
                    format!("{at}.tools"),
                    format!(
                        "tool names are 1 to 128 of `A-Z a-z 0-9 _ - .`; `{}` is not",
                        name.escape_default()
                    ),
                ));
            }
            if public && !tool.scopes.is_empty() {
                return Err(invalid(
                    format!("{at}.tools.{name}.scopes"),
                    "a public route takes requests without a token, so its tools cannot require scopes",
                ));
            }
            if let Some(j) = tool
                .scopes
                .iter()
                .position(|s| !crate::scopes::is_scope_token(s))
            {
                return Err(invalid(
                    format!("{at}.tools.{name}.scopes[{j}]"),
                    "a scope token (RFC 6749 §3.3): printable ASCII without space, `\"` or `\\`",
                ));
            }
        }
        for (section, entries) in [("prompts", &self.prompts), ("resources", &self.resources)] {
            for (key, entry) in &entries.0 {
                let field = format!("{at}.{section}.{key}");
                if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_control) {
                    return Err(invalid(
                        format!("{at}.{section}"),
                        "names and URIs are 1 to 1024 bytes without control characters",
                    ));
                }
                if !has_fga {
                    return Err(invalid(
                        field,
                        "prompt and resource rules are scope-fga's: they need the `fga` section",
                    ));
                }
                if public {
                    return Err(invalid(
                        field,
                        "a public route takes requests without a token, so it cannot check who gets a prompt or resource",
                    ));
                }
                if let Some(j) = entry
                    .scopes
                    .iter()
                    .position(|s| !crate::scopes::is_scope_token(s))
                {
                    return Err(invalid(
                        format!("{field}.scopes[{j}]"),
                        "a scope token (RFC 6749 §3.3): printable ASCII without space, `\"` or `\\`",
                    ));
                }
                if let Some(rule) = &entry.fga {
                    rule.validate(&format!("{field}.fga"), &has_param, false)?;
                }
            }
        }
        Ok(())
    }
}

/// MCP's tool names (2025-11-25): 1 to 128 of `A-Z a-z 0-9 _ - .`.
pub fn is_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl<'de> Deserialize<'de> for Tools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ToolsVisitor;
        impl<'de> Visitor<'de> for ToolsVisitor {
            type Value = Tools;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of tools by name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tools, A::Error> {
                let mut tools = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if tools.contains_key(&name) {
                        return Err(serde::de::Error::custom(format!(
                            "tool `{}` is listed twice",
                            name.escape_default()
                        )));
                    }
                    let tool = map.next_value::<McpTool>()?;
                    tools.insert(name, tool);
                }
                Ok(Tools(tools))
            }
        }
        deserializer.deserialize_map(ToolsVisitor)
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of prompts by name or resources by URI")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "`{}` is listed twice",
                            key.escape_default()
                        )));
                    }
                    let entry = map.next_value::<McpEntry>()?;
                    entries.insert(key, entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Entries {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "McpEntries".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 1024},
            "additionalProperties": generator.subschema_for::<McpEntry>(),
        })
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Tools {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Tools".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9_.-]{1,128}$"},
            "additionalProperties": generator.subschema_for::<McpTool>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{base, parse};
    use super::*;
    use serde_json::json;

    fn with_mcp(mcp: serde_json::Value, public: bool) -> serde_json::Value {
        let mut v = base();
        v["routes"] =
            json!([{"match": {"methods": ["POST"], "path": "/mcp"}, "public": public, "mcp": mcp}]);
        v
    }

    #[test]
    fn listed_tools_need_their_scopes_and_unlisted_ones_are_denied_by_default() {
        let p = parse(with_mcp(
            json!({"tools": {"place_order": {"scopes": ["trade"]}, "get_quote": {}}}),
            false,
        ))
        .unwrap();
        let route = &p.routes[0];
        assert_eq!(
            route.tool_scopes("place_order"),
            Ok(&["trade".to_string()][..])
        );
        assert_eq!(route.tool_scopes("get_quote"), Ok(&[][..]));
        assert_eq!(route.tool_scopes("drop_tables"), Err(ToolRefusal::Unlisted));
        let answer = ToolRefusal::Unlisted.response();
        assert_eq!(answer.status, 403);
        assert!(!answer.body.contains("drop_tables"));
    }

    #[test]
    fn unlisted_tools_may_be_allowed_explicitly() {
        let p = parse(with_mcp(json!({"unlisted_tools": "allow"}), false)).unwrap();
        assert_eq!(p.routes[0].tool_scopes("anything"), Ok(&[][..]));
        let e = parse(with_mcp(json!({"unlisted_tools": "maybe"}), false)).unwrap_err();
        assert_eq!(e.field, "routes[0].mcp.unlisted_tools");
    }

    #[test]
    fn a_route_without_an_mcp_section_adds_no_tool_rule() {
        let mut v = base();
        v["routes"] = json!([{"match": {"path": "/mcp"}}]);
        assert_eq!(parse(v).unwrap().routes[0].tool_scopes("x"), Ok(&[][..]));
    }

    #[test]
    fn prompts_and_resources_have_rules_and_unlisted_ones_pass_unless_denied() {
        let mut v = with_mcp(
            json!({"prompts": {"brief": {"scopes": ["docs:read"]}},
                   "resources": {"notes://a": {}}, "unlisted_resources": "deny"}),
            false,
        );
        v["fga"] = json!({"cluster": "vault", "store_id": "S1"});
        let p = parse(v.clone()).unwrap();
        let mcp = p.routes[0].mcp.as_ref().unwrap();
        assert!(mcp.entry(Named::Prompt, "brief").unwrap().is_some());
        assert_eq!(mcp.entry(Named::Prompt, "other"), Ok(None));
        assert!(mcp.entry(Named::Resource, "notes://a").unwrap().is_some());
        assert_eq!(
            mcp.entry(Named::Resource, "notes://b"),
            Err(ToolRefusal::Unlisted)
        );
        // Scope-fga's: without the `fga` section, on a public route, bad scopes.
        let mut no_fga = v.clone();
        no_fga.as_object_mut().unwrap().remove("fga");
        assert_eq!(
            parse(no_fga).unwrap_err().field,
            "routes[0].mcp.prompts.brief"
        );
        let mut public = v.clone();
        public["routes"][0]["public"] = json!(true);
        assert_eq!(
            parse(public).unwrap_err().field,
            "routes[0].mcp.prompts.brief"
        );
        let mut bad = v.clone();
        bad["routes"][0]["mcp"]["prompts"]["brief"]["scopes"] = json!(["a b"]);
        assert_eq!(
            parse(bad).unwrap_err().field,
            "routes[0].mcp.prompts.brief.scopes[0]"
        );
        let mut tool = v;
        tool["routes"][0]["mcp"]["prompts"]["brief"]["fga"] =
            json!({"checks": [{"relation": "viewer", "object": "prompt:{tool}"}]});
        assert!(parse(tool)
            .unwrap_err()
            .field
            .starts_with("routes[0].mcp.prompts.brief.fga"));
    }

    #[test]
    fn bad_mcp_sections_are_refused_with_the_field_named() {
        for (mcp, public, field) in [
            (json!({"tools": {"a b": {}}}), false, "routes[0].mcp.tools"),
            (
                json!({"tools": {"t": {"scopes": ["a b"]}}}),
                false,
                "routes[0].mcp.tools.t.scopes[0]",
            ),
            (
                json!({"tools": {"t": {"scopes": ["x"]}}}),
                true,
                "routes[0].mcp.tools.t.scopes",
            ),
            (
                json!({"tools": {"t": {"approval": {}}}}),
                false,
                "routes[0].mcp.tools.t.approval",
            ),
            (json!({"tool": {}}), false, "routes[0].mcp.tool"),
        ] {
            let e = parse(with_mcp(mcp.clone(), public)).unwrap_err();
            assert_eq!(e.field, field, "{mcp}: {e}");
        }
        let twice = base().to_string().replace(
            "\"resource\"",
            r#""routes": [{"match": {"path": "/mcp"}, "mcp": {"tools": {"t": {"scopes": ["a"]}, "t": {}}}}], "resource""#,
        );
        let e = crate::Policy::parse(twice.as_bytes()).unwrap_err();
        assert!(e.message.contains("listed twice"), "{e}");
    }
}
