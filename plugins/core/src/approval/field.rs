//! What predicates and templates read from a request: a field reference
//! (`body.order.qty`, `path.account`, `sub`, `issuer`, `agent`, `tool`) and
//! the facts of one request it is looked up in. In an MCP tool's rule,
//! `body` is the call's `arguments` object.

use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// Where a field reference starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// The JSON body (an MCP tool call's `arguments`); the rest is a path
    /// of object keys and array indexes.
    Body,
    /// A path parameter of the route's template (`/orders/{id}` → `path.id`).
    Path,
    /// The user (`x-agentward-sub`).
    Sub,
    /// The user's issuer.
    Issuer,
    /// The agent (`azp`/`client_id`); absent for a token without one.
    Agent,
    /// The MCP tool's name; absent outside a tool call.
    Tool,
}

/// A field of a request, as a policy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    /// Where it starts.
    pub root: Root,
    /// Keys (and array indexes) below the root.
    pub path: Vec<String>,
}

impl FieldRef {
    /// Parses `body.a.b`, `path.id`, `sub`, `issuer`, `agent` or `tool`.
    pub fn parse(source: &str) -> Result<FieldRef, String> {
        let mut parts = source.split('.');
        let first = parts.next().unwrap_or_default();
        let path: Vec<String> = parts.map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("`{}`: an empty segment", source.escape_default()));
        }
        let root = match first {
            "body" => Root::Body,
            "path" => Root::Path,
            "sub" => Root::Sub,
            "issuer" => Root::Issuer,
            "agent" => Root::Agent,
            "tool" => Root::Tool,
            _ => {
                return Err(format!(
                    "`{}`: unknown placeholder root (body, path, sub, issuer, agent, tool)",
                    source.escape_default()
                ))
            }
        };
        match (root, path.len()) {
            (Root::Body, _) => {}
            (Root::Path, 1) => {}
            (Root::Path, _) => {
                return Err(format!(
                    "`{}`: name one path parameter (`path.id`)",
                    source.escape_default()
                ))
            }
            (_, 0) => {}
            _ => {
                return Err(format!(
                    "`{}`: `{first}` has no fields",
                    source.escape_default()
                ))
            }
        }
        Ok(FieldRef { root, path })
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.root {
            Root::Body => "body",
            Root::Path => "path",
            Root::Sub => "sub",
            Root::Issuer => "issuer",
            Root::Agent => "agent",
            Root::Tool => "tool",
        })?;
        for segment in &self.path {
            write!(f, ".{segment}")?;
        }
        Ok(())
    }
}

/// The facts of one request that rules read.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The parsed JSON body (an MCP call's `arguments`); `None` without one.
    pub body: Option<&'a Value>,
    /// The path parameters the route's template captured.
    pub params: &'a [(&'a str, &'a str)],
    /// The user.
    pub sub: &'a str,
    /// The user's issuer.
    pub issuer: &'a str,
    /// The agent, when the token names one.
    pub agent: Option<&'a str>,
    /// The MCP tool called, on a tool call.
    pub tool: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// The value of a field, when the request has it.
    pub fn lookup(&self, field: &FieldRef) -> Option<Cow<'a, Value>> {
        let text = |s: &str| Some(Cow::Owned(Value::String(s.to_string())));
        match field.root {
            Root::Body => {
                let mut at = self.body?;
                for segment in &field.path {
                    at = match at {
                        Value::Object(map) => map.get(segment)?,
                        Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                Some(Cow::Borrowed(at))
            }
            Root::Path => {
                let name = field.path.first()?;
                self.params
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, v)| text(v))
            }
            Root::Sub => text(self.sub),
            Root::Issuer => text(self.issuer),
            Root::Agent => self.agent.and_then(text),
            Root::Tool => self.tool.and_then(text),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Facts<'static> {
        Facts {
            body: None,
            params: &[("account", "acc-7")],
            sub: "alice",
            issuer: "https://idp.example.com/",
            agent: Some("trading-agent"),
            tool: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_parse_and_print_back() {
        for source in [
            "body",
            "body.a.0.b",
            "path.id",
            "sub",
            "issuer",
            "agent",
            "tool",
        ] {
            assert_eq!(FieldRef::parse(source).unwrap().to_string(), source);
        }
        for bad in [
            "", "bodyx", "body..a", "body.", "path", "path.a.b", "sub.x", "claims.x",
        ] {
            assert!(FieldRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lookups() {
        let body = json!({"qty": 5, "legs": [{"t": "A"}]});
        let facts = Facts {
            body: Some(&body),
            ..Facts::for_tests()
        };
        let get = |s: &str| {
            facts
                .lookup(&FieldRef::parse(s).unwrap())
                .map(Cow::into_owned)
        };
        assert_eq!(get("body.qty"), Some(json!(5)));
        assert_eq!(get("body.legs.0.t"), Some(json!("A")));
        assert_eq!(get("body.legs.x"), None);
        assert_eq!(get("body.qty.x"), None);
        assert_eq!(get("path.account"), Some(json!("acc-7")));
        assert_eq!(get("path.other"), None);
        assert_eq!(get("sub"), Some(json!("alice")));
        assert_eq!(get("agent"), Some(json!("trading-agent")));
        assert_eq!(get("tool"), None);
    }
}
