//! The policy's JSON Schema, generated from the types (feature `schema`):
//! descriptions come from their doc comments, so the reference cannot drift
//! from the parser. What the schema cannot say (rules across fields, such as
//! "`jwks` or `jwks_uri`") only the parser checks.

use super::{Algorithm, Policy};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// The policy document's JSON Schema (draft 2020-12).
pub fn json_schema() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Policy>()
        .to_value()
}

/// [`json_schema`] as `policies/agentward.schema.json` holds it: pretty,
/// with a final newline.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

impl JsonSchema for Algorithm {
    fn schema_name() -> Cow<'static, str> {
        "Algorithm".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        json_schema!({
            "description": "A JWS algorithm an issuer may use: asymmetric only (`none` and `HS*` cannot be named).",
            "type": "string",
            "enum": names,
        })
    }
}

/// An inline JSON Web Key Set (RFC 7517 §5).
pub(super) struct Jwks;

impl JsonSchema for Jwks {
    fn schema_name() -> Cow<'static, str> {
        "Jwks".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An inline JSON Web Key Set (RFC 7517 §5): `{\"keys\": [...]}`.",
            "type": "object",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {"type": "object", "required": ["kty"]}
                }
            }
        })
    }
}
