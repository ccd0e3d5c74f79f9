//! OpenFGA tuples as a policy writes them, with placeholders
//! (`{"user": "user:{sub}", "relation": "viewer", "object": "document:{path.id}"}`),
//! and as they are sent once filled. The type of the user and of the object
//! and the relation are always literal: a request's values only ever fill
//! ids, and a value that would change the tuple's meaning (`#`, `*`, `%`,
//! white space) is refused, never sent.

use crate::placeholder::{Facts, FieldRef, FillError, Piece, Template};
use serde::{Deserialize, Serialize};

/// Longest object (OpenFGA: 256 bytes).
pub const MAX_OBJECT_BYTES: usize = 256;
/// Longest user (OpenFGA: 512 bytes).
pub const MAX_USER_BYTES: usize = 512;
/// Longest relation (OpenFGA: 50 bytes).
pub const MAX_RELATION_BYTES: usize = 50;

/// A tuple key as the OpenFGA API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TupleKey {
    /// `type:id`, `type:id#relation` or `type:*`.
    pub user: String,
    /// The relation.
    pub relation: String,
    /// `type:id`.
    pub object: String,
}

/// A tuple with placeholders, as a rule writes it. `user` may be left out
/// in a rule's `checks`: the check is then made for the rule's principal
/// (the user, the agent, or both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TupleTemplate {
    /// `user:{sub}`, `agent:{agent}`, `group:{path.team}#member`, `user:*`.
    #[serde(default)]
    pub user: Option<Template>,
    /// A literal relation (`viewer`).
    pub relation: String,
    /// `document:{path.id}`: a literal type, then an id.
    pub object: Template,
}

/// Whether `name` may be an OpenFGA type or relation name: no `:`, `#`,
/// `@`, `*` or white space, 1 to `max` bytes.
pub fn is_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ":#@*".contains(c))
}

/// Checks one value a request puts into an id: not empty, at most 200
/// bytes, no white space or control characters, none of `#*%` (`#` would
/// turn a user into a userset, `*` into everyone, `%` hides an encoding
/// the upstream may decode). `:` and `@` may stand in an id (the type is
/// literal, before the first `:`): `user:{issuer}|{sub}`,
/// `user:alice@example.com`.
pub fn check_id_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty, so it cannot name an object or user");
    }
    if value.len() > 200 {
        return Err("longer than 200 bytes");
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "#*%".contains(c))
    {
        return Err("holds a character that cannot stand in an FGA id (`#*%`, space or control)");
    }
    Ok(())
}

/// Checks the shape of an object (`type:id`) or user template: the type
/// is literal, placeholders fill only the id, a user's `#relation` is
/// literal. `user` says which of the two it is.
pub fn check_template(template: &Template, user: bool) -> Result<(), String> {
    let mut pieces = template.pieces().peekable();
    let Some(Piece::Text(first)) = pieces.peek().copied() else {
        return Err("starts with a literal type and `:` (`document:{path.id}`)".into());
    };
    let Some((kind, _)) = first.split_once(':') else {
        return Err("starts with a literal type and `:` (`document:{path.id}`)".into());
    };
    if !is_name(kind, 254) {
        return Err(format!("`{}` is not a type name", kind.escape_default()));
    }
    // The id part, with every placeholder written as `x`.
    let mut id = String::new();
    let mut after_hash = false;
    for piece in template.pieces() {
        match piece {
            Piece::Text(t) => {
                after_hash |= t.contains('#');
                id.push_str(t);
            }
            Piece::Field(_) if after_hash => return Err("the relation after `#` is literal".into()),
            Piece::Field(_) => id.push('x'),
        }
    }
    let id = &id[kind.len() + 1..];
    let (id, rel) = match id.split_once('#') {
        Some((i, r)) if user => (i, Some(r)),
        Some(_) => return Err("an object has no `#relation`".into()),
        None => (id, None),
    };
    if let Some(rel) = rel {
        if !is_name(rel, MAX_RELATION_BYTES) {
            return Err("`#` is followed by a relation name".into());
        }
    }
    let wildcard = user && id == "*" && template.fields().next().is_none();
    if !wildcard
        && (id.is_empty()
            || id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ":#@*".contains(c)))
    {
        return Err(
            "the id after the type is placeholders and text without `:#@*` or space".into(),
        );
    }
    Ok(())
}

impl TupleTemplate {
    /// Checks the shape; `needs_user`: in `contextual_tuples` the user is
    /// required. Errors name the field under the tuple.
    pub fn validate(&self, needs_user: bool) -> Result<(), (&'static str, String)> {
        match &self.user {
            Some(user) => check_template(user, true).map_err(|e| ("user", e))?,
            None if needs_user => return Err(("user", "required here".into())),
            None => {}
        }
        if !is_name(&self.relation, MAX_RELATION_BYTES) {
            return Err((
                "relation",
                "a relation name: 1 to 50 bytes without `:#@*` or space".into(),
            ));
        }
        check_template(&self.object, false).map_err(|e| ("object", e))
    }

    /// Every placeholder the tuple reads.
    pub fn fields(&self) -> impl Iterator<Item = &FieldRef> {
        self.user
            .iter()
            .flat_map(|u| u.fields())
            .chain(self.object.fields())
    }

    /// The tuple for a request, `user` standing in when the template has
    /// none.
    pub fn fill(&self, facts: &Facts<'_>, user: Option<&str>) -> Result<TupleKey, FillError> {
        let user = match (&self.user, user) {
            (Some(t), _) => fill_user(t, facts)?,
            (None, Some(u)) => u.to_string(),
            (None, None) => {
                return Err(FillError {
                    field: "user".into(),
                    why: "the check names no user",
                })
            }
        };
        let object = self.object.fill_checked(facts, check_id_value)?;
        if object.len() > MAX_OBJECT_BYTES {
            return Err(FillError {
                field: "object".into(),
                why: "longer than 256 bytes",
            });
        }
        Ok(TupleKey {
            user,
            relation: self.relation.clone(),
            object,
        })
    }
}

/// Fills a user template (`user:{sub}`), checked as ids are.
pub fn fill_user(template: &Template, facts: &Facts<'_>) -> Result<String, FillError> {
    let user = template.fill_checked(facts, check_id_value)?;
    if user.len() > MAX_USER_BYTES {
        return Err(FillError {
            field: "user".into(),
            why: "longer than 512 bytes",
        });
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[test]
    fn types_and_relations_are_literal_ids_are_placeholders() {
        for ok in [
            "document:{path.id}",
            "document:doc-{body.n}",
            "tool:{tool}",
            "account:{path.a}-{path.b}",
            "document:fixed",
        ] {
            assert_eq!(check_template(&t(ok), false), Ok(()), "{ok}");
        }
        for ok in [
            "user:{sub}",
            "group:{path.g}#member",
            "user:*",
            "agent:{agent}",
        ] {
            assert_eq!(check_template(&t(ok), true), Ok(()), "{ok}");
        }
        for bad in [
            "{body.type}:x",
            "document",
            "document:",
            "doc ument:{path.id}",
            "document:{path.id}#viewer",
            "document:a:{path.id}",
            "document:*",
            "document:{path.id} x",
        ] {
            assert!(check_template(&t(bad), false).is_err(), "{bad}");
        }
        for bad in ["group:{path.g}#{body.r}", "user:{sub}#", "user:*{sub}"] {
            assert!(check_template(&t(bad), true).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_that_would_change_the_tuple_are_refused() {
        let body = json!({"id": "7", "mail": "a@b.example", "hash": "7#owner", "star": "*",
                          "space": "a b", "pct": "a%3Ab", "n": 42, "empty": ""});
        let facts = Facts {
            body: Some(&body),
            ..Facts::for_tests()
        };
        let tuple = |object: &str| TupleTemplate {
            user: Some(t("user:{sub}")),
            relation: "viewer".into(),
            object: t(object),
        };
        assert_eq!(
            tuple("document:{body.id}").fill(&facts, None).unwrap(),
            TupleKey {
                user: "user:alice".into(),
                relation: "viewer".into(),
                object: "document:7".into()
            }
        );
        assert_eq!(
            tuple("document:{body.n}")
                .fill(&facts, None)
                .unwrap()
                .object,
            "document:42"
        );
        assert_eq!(
            tuple("document:{body.mail}")
                .fill(&facts, None)
                .unwrap()
                .object,
            "document:a@b.example"
        );
        for field in ["hash", "star", "space", "pct", "empty", "missing"] {
            let e = tuple(&format!("document:{{body.{field}}}"))
                .fill(&facts, None)
                .unwrap_err();
            assert_eq!(e.field, format!("body.{field}"));
        }
        let long = json!({"id": "x".repeat(201)});
        let facts = Facts {
            body: Some(&long),
            ..Facts::for_tests()
        };
        assert!(tuple("document:{body.id}").fill(&facts, None).is_err());
    }

    #[test]
    fn a_check_without_user_takes_the_principal() {
        let check = TupleTemplate {
            user: None,
            relation: "viewer".into(),
            object: t("document:{path.account}"),
        };
        let facts = Facts::for_tests();
        assert_eq!(
            check.fill(&facts, Some("agent:bot")).unwrap().user,
            "agent:bot"
        );
        assert!(check.fill(&facts, None).is_err());
        assert_eq!(check.validate(false), Ok(()));
        assert_eq!(check.validate(true).unwrap_err().0, "user");
    }
}
