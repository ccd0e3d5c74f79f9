//! Route paths: an exact path that may name parameters as whole segments
//! (`/orders/{id}`, `/users/{user}/docs/{doc}`), and the parameters a
//! request's path fills in. A path without parameters is compared as one
//! string, as before templates existed: matching it allocates nothing.

use serde::{Deserialize, Deserializer};

/// An exact route path, possibly with `{name}` segments. Parsed once, with
/// the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// As written in the policy.
    source: String,
    /// `source` without its trailing `/` (the root is empty): compared
    /// whole when there are no parameters.
    exact: String,
    /// The segments after the first `/`, when any is a parameter; empty
    /// otherwise.
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// Parameters a request's path gave a template, by name; values are the
/// path's segments as they came (percent-encodings kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    /// The value of parameter `name`, if the template has it.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// Names and values, in the template's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.pairs.iter().copied()
    }

    /// Whether the template has no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
}

impl PathTemplate {
    /// Parses a route path: a normalised path ([`crate::path::normalize`]
    /// leaves it as it is), where `{name}` is one whole segment, `name` an
    /// identifier, each name once.
    pub fn parse(source: &str) -> Result<PathTemplate, String> {
        check_normal(source)?;
        let exact = source.trim_end_matches('/').to_string();
        let mut segments = Vec::new();
        let mut params = 0;
        for part in exact.split('/').skip(1) {
            if !part.contains(['{', '}']) {
                segments.push(Segment::Literal(part.to_string()));
                continue;
            }
            let name = part
                .strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .filter(|name| is_identifier(name))
                .ok_or_else(|| {
                    "a parameter is a whole segment `{name}`, the name a letter or `_` \
                     then letters, digits or `_`"
                        .to_string()
                })?;
            if segments.contains(&Segment::Param(name.to_string())) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            segments.push(Segment::Param(name.to_string()));
            params += 1;
        }
        if params == 0 {
            segments.clear();
        }
        Ok(PathTemplate {
            source: source.to_string(),
            exact,
            segments,
        })
    }

    /// The path as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template names parameters.
    pub fn has_params(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Whether the template names parameter `name`.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p == name))
    }

    /// Whether a normalised path (query excluded) matches, with or without
    /// one trailing `/`. Allocates nothing.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.strip_suffix('/').unwrap_or(path);
        if self.segments.is_empty() {
            return self.exact == path;
        }
        self.walk(path, |_, _| ())
    }

    /// The parameters of a path that [`PathTemplate::matches`]; `None` if
    /// it does not. Allocates only for a template with parameters.
    pub fn capture<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if self.segments.is_empty() {
            return (self.exact == path).then(Params::default);
        }
        let mut pairs = Vec::new();
        self.walk(path, |name, value| pairs.push((name, value)))
            .then_some(Params { pairs })
    }

    /// Walks the template and the path segment by segment, reporting each
    /// parameter's value; `false` at the first difference.
    fn walk<'a>(&'a self, path: &'a str, mut found: impl FnMut(&'a str, &'a str)) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Literal(literal) if literal != part => return false,
                Segment::Literal(_) => {}
                Segment::Param(_) if part.is_empty() => return false,
                Segment::Param(name) => found(name, part),
            }
        }
        parts.next().is_none()
    }
}

impl<'de> Deserialize<'de> for PathTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::json_path::parsed_str(deserializer, PathTemplate::parse)
    }
}

/// A route path prefix: normalised, no parameters.
pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
    check_normal(prefix)?;
    if prefix.contains(['{', '}']) {
        return Err("a prefix has no parameters: templates go in `path`".into());
    }
    Ok(())
}

fn check_normal(path: &str) -> Result<(), String> {
    let normal = crate::path::normalize(path).is_ok_and(|t| t.was_normal() && t.query.is_none());
    if normal {
        Ok(())
    } else {
        Err(
            "a normalised path: starts with `/`, no `//`, `.` or `..` segments, \
             no query, no percent-encoded letters or digits"
                .into(),
        )
    }
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap()
    }

    #[test]
    fn a_parameter_takes_one_whole_non_empty_segment() {
        let orders = t("/orders/{id}");
        let p = orders.capture("/orders/42").unwrap();
        assert_eq!(p.get("id"), Some("42"));
        assert_eq!(p.len(), 1);
        assert_eq!(orders.capture("/orders/42/").unwrap().get("id"), Some("42"));
        for miss in [
            "/orders",
            "/orders/",
            "/orders/42/items",
            "/orders//",
            "/order/42",
            "/",
        ] {
            assert!(!orders.matches(miss), "{miss}");
            assert!(orders.capture(miss).is_none(), "{miss}");
        }
    }

    #[test]
    fn several_parameters_and_literals_between_them() {
        let docs = t("/users/{user}/docs/{doc}");
        let p = docs.capture("/users/alice/docs/d%20one").unwrap();
        assert_eq!(p.get("user"), Some("alice"));
        assert_eq!(
            p.get("doc"),
            Some("d%20one"),
            "percent-encodings stay as they came"
        );
        assert_eq!(p.get("other"), None);
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [("user", "alice"), ("doc", "d%20one")]
        );
        assert!(!docs.matches("/users/alice/files/d"));
        assert!(!docs.matches("/users/alice/docs"));
    }

    #[test]
    fn a_path_without_parameters_matches_exactly_with_or_without_a_trailing_slash() {
        let trades = t("/trades");
        assert!(!trades.has_params());
        assert!(trades.matches("/trades") && trades.matches("/trades/"));
        assert!(!trades.matches("/trades/x") && !trades.matches("/tradesx"));
        assert_eq!(trades.capture("/trades"), Some(Params::default()));
        let root = t("/");
        assert!(root.matches("/") && !root.matches("/x"));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "/orders/{}",
            "/orders/{1d}",
            "/orders/{id",
            "/orders/id}",
            "/orders/x{id}",
            "/orders/{id}x",
            "/orders/{a-b}",
            "/{id}/{id}",
            "orders/{id}",
            "/orders//{id}",
            "/orders/./{id}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(check_prefix("/orders/{id}").is_err());
        assert!(check_prefix("/orders").is_ok());
    }
}
