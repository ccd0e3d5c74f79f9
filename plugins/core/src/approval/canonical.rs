//! The request body as approvals see it: parsed strictly (a key given twice
//! is refused: the gateway and the upstream could read different values) and
//! written canonically for the request digest, in the manner of RFC 8785
//! (JCS): object members sorted by the UTF-16 code units of their keys, no
//! whitespace, minimal string escapes, numbers in their shortest form. The
//! numbers written are those JCS and Rust write alike: integers, and other
//! finite numbers of magnitude from 1e-6 up to 1e21; others are refused.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;
use std::fmt::Write;

/// Why a body cannot be read as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON.
    NotJson,
    /// An object names one key twice.
    DuplicateKey,
}

const DUPLICATE: &str = "duplicate key";

/// Parses JSON, refusing objects with a repeated key.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            BodyError::DuplicateKey
        } else {
            BodyError::NotJson
        }
    })?;
    de.end().map_err(|_| BodyError::NotJson)?;
    Ok(value)
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A number as JCS writes it, when it is one this module supports.
pub fn number_text(n: &Number) -> Option<String> {
    if let Some(i) = n.as_i64() {
        return Some(i.to_string());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.to_string());
    }
    let f = n.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    if f == f.trunc() && f.abs() < 1e21 {
        // Integral: JCS writes no fraction (`1.0` → `1`, `-0.0` → `0`).
        return Some(format!("{}", f as i128));
    }
    if !(1e-6..1e21).contains(&f.abs()) {
        return None;
    }
    // Rust's `Display` for f64 is the shortest round-trip digits in plain
    // notation, which is what ECMAScript writes in this range.
    Some(format!("{f}"))
}

/// A value that cannot be written canonically (a number out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

/// The canonical text of a JSON value.
pub fn canonical(value: &Value) -> Result<String, Unsupported> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut String) -> Result<(), Unsupported> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_text(n).ok_or(Unsupported)?),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        canonical(&parse_strict(text.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn keys_sorted_whitespace_gone() {
        assert_eq!(
            canon(r#"{ "b": 1, "a": {"d": [1, 2, {"z": null, "y": true}], "c": "x"} }"#),
            r#"{"a":{"c":"x","d":[1,2,{"y":true,"z":null}]},"b":1}"#
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // RFC 8785 §3.2.3: U+1F600 sorts before U+FB33 in UTF-16 (its
        // surrogate pair starts with 0xD83D), after it by code point or UTF-8.
        assert_eq!(
            canon("{\"\u{FB33}\": 2, \"\u{1F600}\": 1, \"a\": 3}"),
            "{\"a\":3,\"\u{1F600}\":1,\"\u{FB33}\":2}"
        );
    }

    #[test]
    fn strings_escape_minimally() {
        assert_eq!(
            canon(r#""\u0041\u00e9\n\u0001\"\\/""#),
            "\"A\u{e9}\\n\\u0001\\\"\\\\/\""
        );
    }

    #[test]
    fn numbers_in_shortest_form() {
        for (text, want) in [
            ("1.0", "1"),
            ("-0.0", "0"),
            ("1e2", "100"),
            ("12.50", "12.5"),
            ("0.000001", "0.000001"),
            ("123456789012345678", "123456789012345678"),
            ("18446744073709551615", "18446744073709551615"),
            ("-5", "-5"),
            ("1e20", "100000000000000000000"),
        ] {
            assert_eq!(canon(text), want, "{text}");
        }
        for text in ["1e-7", "1.5e21", "1e300"] {
            let v = parse_strict(text.as_bytes()).unwrap();
            assert_eq!(canonical(&v), Err(Unsupported), "{text}");
        }
    }

    #[test]
    fn duplicate_keys_and_bad_json_are_refused() {
        assert_eq!(
            parse_strict(br#"{"amount": 1, "amount": 5000}"#),
            Err(BodyError::DuplicateKey)
        );
        assert_eq!(
            parse_strict(br#"{"a": {"x": 1, "x": 1}}"#),
            Err(BodyError::DuplicateKey)
        );
        assert_eq!(parse_strict(br#"{"a": 1} x"#), Err(BodyError::NotJson));
        assert_eq!(parse_strict(b"{"), Err(BodyError::NotJson));
        assert_eq!(parse_strict(b""), Err(BodyError::NotJson));
    }
}
