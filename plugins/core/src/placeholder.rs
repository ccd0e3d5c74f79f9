//! Placeholders: a field of a request as a policy names it (`body.order.qty`,
//! `path.account`, `sub`, `issuer`, `agent`, `tool`), the facts of one
//! request it is looked up in, and strings with placeholders
//! (`Buy {body.qty} {body.ticker}`, `document:{path.id}`). Shared by the
//! rules that read requests: approvals (ciba-hold) and relationship checks
//! (scope-fga). In an MCP tool's rule, `body` is the call's `arguments`
//! object. `{{` and `}}` write a brace.

use crate::approval::canonical::number_text;
use serde::{Deserialize, Deserializer};
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

/// A string with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(FieldRef),
}

/// One piece of a [`Template`]: literal text or a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text (braces unescaped).
    Text(&'a str),
    /// A placeholder.
    Field(&'a FieldRef),
}

/// Why a template could not be filled for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillError {
    /// The placeholder (`body.qty`), or `binding_message` for a message
    /// that came out outside the character rule.
    pub field: String,
    /// What is wrong.
    pub why: &'static str,
}

impl Template {
    /// Parses a template; an unknown placeholder root, an empty or
    /// unclosed placeholder and a lone `}` are errors.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err("a `{` without its `}` (write `{{` for a brace)".into())
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(FieldRef::parse(name.trim())?));
                }
                '}' => return Err("a `}` without its `{` (write `}}` for a brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// The fields the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &FieldRef> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f),
            Part::Text(_) => None,
        })
    }

    /// `text` followed by one placeholder (`user:{sub}`).
    pub fn prefixed(text: &str, field: FieldRef) -> Template {
        Template {
            parts: vec![Part::Text(text.to_string()), Part::Field(field)],
        }
    }

    /// The template piece by piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        self.parts.iter().map(|p| match p {
            Part::Text(t) => Piece::Text(t),
            Part::Field(f) => Piece::Field(f),
        })
    }

    /// The literal text (placeholders left out).
    pub fn literal_chars(&self) -> impl Iterator<Item = char> + '_ {
        self.parts.iter().flat_map(|p| match p {
            Part::Text(t) => t.chars(),
            Part::Field(_) => "".chars(),
        })
    }

    /// The one field, when the template is exactly one placeholder.
    pub(crate) fn single_field(&self) -> Option<&FieldRef> {
        match self.parts.as_slice() {
            [Part::Field(f)] => Some(f),
            _ => None,
        }
    }

    /// Fills the placeholders with strings, numbers and booleans of the
    /// request; an absent field, `null`, an object or an array is an error.
    pub fn fill(&self, facts: &Facts<'_>) -> Result<String, FillError> {
        self.fill_checked(facts, |_| Ok(()))
    }

    /// [`Template::fill`], with every value put in first passed through
    /// `check` (an `Err` names why it cannot stand there): a value must not
    /// change the meaning of the text around it.
    pub fn fill_checked(
        &self,
        facts: &Facts<'_>,
        check: impl Fn(&str) -> Result<(), &'static str>,
    ) -> Result<String, FillError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(field) => {
                    let error = |why| FillError {
                        field: field.to_string(),
                        why,
                    };
                    let value = match facts.lookup(field).as_deref() {
                        None => return Err(error("the request has no such field")),
                        Some(Value::String(s)) => Cow::Owned(s.clone()),
                        Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
                        Some(Value::Number(n)) => Cow::Owned(
                            number_text(n).ok_or_else(|| error("a number out of range"))?,
                        ),
                        Some(_) => return Err(error("not a string, number or boolean")),
                    };
                    check(&value).map_err(error)?;
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Template, D::Error> {
        crate::policy::parsed_str(deserializer, Template::parse)
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
