//! JSON Schema of the approval types whose JSON form is not their Rust
//! shape (feature `schema`): predicates, templates, details templates.

use super::predicate::Predicate;
use super::template::{DetailsTemplate, Template};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};
use std::borrow::Cow;

/// A field reference, as [`super::field::FieldRef::parse`] takes it.
const FIELD: &str = r"^(body(\.[^.]+)*|path\.[^.]+|sub|issuer|agent|tool)$";

fn comparison(op: &str, value: Value) -> Value {
    json!({
        "type": "object",
        "properties": {"field": {"type": "string", "pattern": FIELD}, op: value},
        "required": ["field", op],
        "additionalProperties": false,
    })
}

impl JsonSchema for Predicate {
    fn schema_name() -> Cow<'static, str> {
        "Predicate".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let me = generator.subschema_for::<Predicate>().to_value();
        let group = |name: &str, value: Value| {
            json!({"type": "object", "properties": {name: value}, "required": [name],
                   "additionalProperties": false})
        };
        let number = json!({"type": "number"});
        json_schema!({
            "description": "A condition on a request: {\"field\": F, OP: V} with OP one of eq, ne, gt, gte, lt, lte (numbers), in (a list), present (a boolean); or {\"all\": [...]}, {\"any\": [...]}, {\"not\": {...}}. F is body.KEY.KEY (an MCP tool's arguments in a tool's rule), path.NAME, sub, issuer, agent or tool.",
            "oneOf": [
                group("all", json!({"type": "array", "items": me})),
                group("any", json!({"type": "array", "items": me, "minItems": 1})),
                group("not", me),
                comparison("eq", json!({})),
                comparison("ne", json!({})),
                comparison("gt", number.clone()),
                comparison("gte", number.clone()),
                comparison("lt", number.clone()),
                comparison("lte", number),
                comparison("in", json!({"type": "array", "minItems": 1})),
                comparison("present", json!({"type": "boolean"})),
            ]
        })
    }
}

impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Text with {field} placeholders (body.KEY, path.NAME, sub, issuer, agent, tool); {{ and }} write braces.",
            "type": "string",
            "minLength": 1,
        })
    }
}

impl JsonSchema for DetailsTemplate {
    fn schema_name() -> Cow<'static, str> {
        "DetailsTemplate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "RFC 9396 authorization_details: objects with a literal `type`, whose strings may hold {field} placeholders (a string that is one placeholder keeps the field's JSON type).",
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string", "pattern": "^[^{}]+$"}},
            },
        })
    }
}
