//! Templates that describe the action to the user: the `binding_message`
//! (`Buy {body.qty} {body.ticker}`), shown on the approval page and on the
//! user's device, and the RFC 9396 `authorization_details`, a JSON template
//! whose strings may hold placeholders. Placeholders name fields
//! ([`FieldRef`]); `{{` and `}}` write a brace. A template that cannot be
//! filled refuses the request: it is never sent for approval half-filled,
//! and never forwarded unapproved.

use crate::placeholder::{Facts, FieldRef};
pub use crate::placeholder::{FillError, Template};
use crate::policy::Shape;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Longest binding message, in characters (Auth0's rule, the vault's too).
pub const BINDING_MESSAGE_MAX: usize = 64;

/// Whether `c` may appear in a binding message: ASCII letters, digits,
/// space and `+-_.,:#`.
pub fn binding_message_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " +-_.,:#".contains(c)
}

/// The binding message is approval's own use of a [`Template`].
impl Template {
    /// Fills a binding message and checks it: 1 to 64 characters of ASCII
    /// letters, digits, space and `+-_.,:#`.
    pub fn fill_binding_message(&self, facts: &Facts<'_>) -> Result<String, FillError> {
        let message = self.fill(facts)?;
        let error = |why| FillError {
            field: "binding_message".into(),
            why,
        };
        if message.trim().is_empty() {
            return Err(error("the binding message came out empty"));
        }
        if message.chars().count() > BINDING_MESSAGE_MAX {
            return Err(error(
                "the binding message came out longer than 64 characters",
            ));
        }
        if !message.chars().all(binding_message_char) {
            return Err(error(
                "the binding message came out with characters other than letters, digits, space and +-_.,:#",
            ));
        }
        Ok(message)
    }
}

/// An `authorization_details` template: a JSON array of objects, each with
/// a string `type` (RFC 9396), whose strings may hold placeholders. A
/// string that is exactly one placeholder (`"{body.qty}"`) becomes the
/// field's JSON value (a number stays a number); other strings are filled
/// as text. Object keys are taken as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailsTemplate(Value);

impl DetailsTemplate {
    /// Checks the shape and every string's placeholders.
    pub fn parse(value: Value) -> Result<DetailsTemplate, String> {
        let Value::Array(items) = &value else {
            return Err("a JSON array of objects, each with a `type` (RFC 9396)".into());
        };
        if items.is_empty() {
            return Err("at least one object".into());
        }
        for (i, item) in items.iter().enumerate() {
            match item.get("type") {
                Some(Value::String(t)) if !t.is_empty() && !t.contains('{') => {}
                _ => return Err(format!("[{i}]: an object with a literal string `type`")),
            }
        }
        check_strings(&value)?;
        Ok(DetailsTemplate(value))
    }

    /// The fields the template reads.
    pub fn fields(&self) -> Vec<FieldRef> {
        let mut out = Vec::new();
        collect_fields(&self.0, &mut out);
        out
    }

    /// The details for a request.
    pub fn fill(&self, facts: &Facts<'_>) -> Result<Value, FillError> {
        fill_value(&self.0, facts)
    }
}

fn check_strings(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) => Template::parse(s).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(check_strings),
        Value::Object(map) => map.values().try_for_each(check_strings),
        _ => Ok(()),
    }
}

fn collect_fields(value: &Value, out: &mut Vec<FieldRef>) {
    match value {
        Value::String(s) => {
            if let Ok(t) = Template::parse(s) {
                out.extend(t.fields().cloned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_fields(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_fields(v, out)),
        _ => {}
    }
}

fn fill_value(value: &Value, facts: &Facts<'_>) -> Result<Value, FillError> {
    Ok(match value {
        Value::String(s) => {
            // Checked at parse; a string that no longer parses is left out.
            let template = Template::parse(s).map_err(|_| FillError {
                field: "authorization_details".into(),
                why: "a template that does not parse",
            })?;
            match template.single_field() {
                Some(field) => match facts.lookup(field) {
                    Some(v) if !v.is_null() => v.into_owned(),
                    _ => {
                        return Err(FillError {
                            field: field.to_string(),
                            why: "the request has no such field",
                        })
                    }
                },
                None => Value::String(template.fill(facts)?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| fill_value(v, facts))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill_value(v, facts)?)))
                .collect::<Result<_, FillError>>()?,
        ),
        other => other.clone(),
    })
}

impl<'de> Deserialize<'de> for DetailsTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DetailsTemplate, D::Error> {
        // Checked inside the array's visit, so a refusal carries the array's
        // position (the policy's errors name fields by it).
        let expecting = "a JSON array of objects, each with a `type` (RFC 9396)";
        crate::policy::checked(
            deserializer,
            Shape::Array,
            expecting,
            DetailsTemplate::parse,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(body: &Value) -> Facts<'_> {
        Facts {
            body: Some(body),
            ..Facts::for_tests()
        }
    }

    #[test]
    fn buy_qty_ticker() {
        let t = Template::parse("Buy {body.qty} {body.ticker} for {sub} via {agent}").unwrap();
        let body = json!({"qty": 50, "ticker": "ACME"});
        assert_eq!(
            t.fill_binding_message(&facts(&body)).unwrap(),
            "Buy 50 ACME for alice via trading-agent"
        );
        let t = Template::parse("Account {path.account}: {{x}} {body.price}").unwrap();
        assert_eq!(
            t.fill(&facts(&json!({"price": 12.5}))).unwrap(),
            "Account acc-7: {x} 12.5"
        );
        assert_eq!(
            t.fields().map(|f| f.to_string()).collect::<Vec<_>>(),
            ["path.account", "body.price"]
        );
    }

    #[test]
    fn bad_templates_are_refused_at_parse() {
        for (bad, says) in [
            ("Buy {body.qty", "without its `}`"),
            ("Buy body.qty}", "without its `{`"),
            ("Buy {secret}", "unknown placeholder root"),
            ("Buy {}", "unknown placeholder root"),
            ("Buy {body.{x}}", "without its `}`"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_template_that_cannot_be_filled_names_the_field() {
        let t = Template::parse("Buy {body.qty} {body.ticker}").unwrap();
        let e = t
            .fill_binding_message(&facts(&json!({"qty": 5})))
            .unwrap_err();
        assert_eq!(e.field, "body.ticker");
        for body in [
            json!({"qty": 5, "ticker": null}),
            json!({"qty": 5, "ticker": ["A"]}),
        ] {
            let e = t.fill_binding_message(&facts(&body)).unwrap_err();
            assert_eq!(e.field, "body.ticker", "{body}");
        }
    }

    #[test]
    fn a_message_outside_the_authoritys_rule_is_refused() {
        let t = Template::parse("Buy {body.qty} {body.ticker}").unwrap();
        for ticker in ["<script>", "ACME\n", "Ä", &"X".repeat(60)] {
            let e = t
                .fill_binding_message(&facts(&json!({"qty": 1, "ticker": ticker})))
                .unwrap_err();
            assert_eq!(e.field, "binding_message", "{ticker}");
        }
        let t = Template::parse("{body.x}").unwrap();
        assert!(t.fill_binding_message(&facts(&json!({"x": " "}))).is_err());
        let exactly = "x".repeat(64);
        assert_eq!(
            t.fill_binding_message(&facts(&json!({ "x": exactly })))
                .unwrap(),
            exactly
        );
    }

    #[test]
    fn details_keep_types_and_fill_text() {
        let t = DetailsTemplate::parse(json!([{
            "type": "stock_trade",
            "ticker": "{body.ticker}",
            "qty": "{body.qty}",
            "account": "acc {path.account}",
            "limits": {"max": "{body.max}"},
            "fixed": 3
        }]))
        .unwrap();
        let body = json!({"ticker": "ACME", "qty": 50, "max": {"usd": 10}});
        assert_eq!(
            t.fill(&facts(&body)).unwrap(),
            json!([{"type": "stock_trade", "ticker": "ACME", "qty": 50,
                    "account": "acc acc-7", "limits": {"max": {"usd": 10}}, "fixed": 3}])
        );
        let e = t
            .fill(&facts(&json!({"ticker": "ACME", "max": 1})))
            .unwrap_err();
        assert_eq!(e.field, "body.qty");
        assert_eq!(t.fields().len(), 4);
    }

    #[test]
    fn details_must_be_typed_objects_with_good_placeholders() {
        for bad in [
            json!({"type": "x"}),
            json!([]),
            json!([{"ticker": "x"}]),
            json!([{"type": "{body.type}"}]),
            json!([{"type": "x", "a": "{nope}"}]),
        ] {
            assert!(DetailsTemplate::parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
