//! `when`: which requests of a route (or calls of an MCP tool) need an
//! approval, as predicates over the JSON body, the path parameters and the
//! identity. A small JSON form, one operator per object:
//!
//! ```json
//! {"all": [{"field": "body.amount", "gt": 1000},
//!          {"field": "body.ticker", "in": ["ACME", "GLOBEX"]},
//!          {"any": [{"field": "body.side", "eq": "buy"}, {"field": "body.note", "present": true}]}]}
//! ```
//!
//! A comparison on a field that is absent does not hold; on a field of the
//! wrong type (`"5000"` where a number is compared) the request is refused,
//! never forwarded: an upstream that reads the string as a number would
//! otherwise do unapproved what the rule meant to hold.

use super::field::{Facts, FieldRef};
use crate::policy::Shape;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A condition on a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// Every one holds (an empty list holds).
    All(Vec<Predicate>),
    /// At least one holds.
    Any(Vec<Predicate>),
    /// The inner one does not hold.
    Not(Box<Predicate>),
    /// A comparison of one field.
    Compare(FieldRef, Op),
}

/// What a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Equal (numbers by value: `1` equals `1.0`).
    Eq(Value),
    /// Not equal; an absent field is not equal.
    Ne(Value),
    /// Greater than (a number).
    Gt(f64),
    /// Greater than or equal.
    Gte(f64),
    /// Less than.
    Lt(f64),
    /// Less than or equal.
    Lte(f64),
    /// Equal to one of these.
    In(Vec<Value>),
    /// Present (`true`) or absent (`false`); JSON `null` counts as present.
    Present(bool),
}

// Predicates come from JSON, which has no NaN: equality is total.
impl Eq for Predicate {}
impl Eq for Op {}

/// A field of the wrong type for its comparison: the request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongType {
    /// The field as the policy names it (`body.amount`).
    pub field: String,
    /// What the comparison needs.
    pub expected: &'static str,
}

impl Predicate {
    /// Whether the request's facts satisfy the predicate.
    pub fn holds(&self, facts: &Facts<'_>) -> Result<bool, WrongType> {
        match self {
            Predicate::All(all) => {
                for p in all {
                    if !p.holds(facts)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Predicate::Any(any) => {
                // Every branch is evaluated: a wrong type anywhere refuses,
                // whatever the order of the branches.
                let mut result = false;
                for p in any {
                    result |= p.holds(facts)?;
                }
                Ok(result)
            }
            Predicate::Not(inner) => Ok(!inner.holds(facts)?),
            Predicate::Compare(field, op) => compare(field, op, facts),
        }
    }

    /// The fields the predicate reads.
    pub fn fields(&self) -> Vec<&FieldRef> {
        match self {
            Predicate::All(ps) | Predicate::Any(ps) => ps.iter().flat_map(|p| p.fields()).collect(),
            Predicate::Not(p) => p.fields(),
            Predicate::Compare(f, _) => vec![f],
        }
    }
}

fn compare(field: &FieldRef, op: &Op, facts: &Facts<'_>) -> Result<bool, WrongType> {
    let value = facts.lookup(field);
    let wrong = |expected| WrongType {
        field: field.to_string(),
        expected,
    };
    let number = |limit: f64, test: fn(f64, f64) -> bool| match value.as_deref() {
        None => Ok(false),
        Some(Value::Number(n)) => Ok(n.as_f64().is_some_and(|n| test(n, limit))),
        Some(_) => Err(wrong("a number")),
    };
    match op {
        Op::Present(want) => Ok(value.is_some() == *want),
        Op::Eq(expected) => Ok(value.is_some_and(|v| same_value(&v, expected))),
        Op::Ne(expected) => Ok(value.is_some_and(|v| !same_value(&v, expected))),
        Op::In(list) => Ok(value.is_some_and(|v| list.iter().any(|e| same_value(&v, e)))),
        Op::Gt(limit) => number(*limit, |n, l| n > l),
        Op::Gte(limit) => number(*limit, |n, l| n >= l),
        Op::Lt(limit) => number(*limit, |n, l| n < l),
        Op::Lte(limit) => number(*limit, |n, l| n <= l),
    }
}

/// JSON equality with numbers compared by value.
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// The JSON form as written; turned into a [`Predicate`] with checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    #[serde(default)]
    all: Option<Vec<Predicate>>,
    #[serde(default)]
    any: Option<Vec<Predicate>>,
    #[serde(default)]
    not: Option<Box<Predicate>>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    eq: Option<Value>,
    #[serde(default)]
    ne: Option<Value>,
    #[serde(default)]
    gt: Option<f64>,
    #[serde(default)]
    gte: Option<f64>,
    #[serde(default)]
    lt: Option<f64>,
    #[serde(default)]
    lte: Option<f64>,
    #[serde(rename = "in", default)]
    one_of: Option<Vec<Value>>,
    #[serde(default)]
    present: Option<bool>,
}

const FORM: &str = "a predicate is one of {\"all\": [..]}, {\"any\": [..]}, {\"not\": {..}} or \
                    {\"field\": \"body.x\", OP: value} with OP one of eq, ne, gt, gte, lt, lte, in, present";

impl Written {
    fn into_predicate(self) -> Result<Predicate, String> {
        let mut ops = Vec::new();
        if let Some(v) = self.eq {
            ops.push(Op::Eq(v));
        }
        if let Some(v) = self.ne {
            ops.push(Op::Ne(v));
        }
        if let Some(v) = self.gt {
            ops.push(Op::Gt(v));
        }
        if let Some(v) = self.gte {
            ops.push(Op::Gte(v));
        }
        if let Some(v) = self.lt {
            ops.push(Op::Lt(v));
        }
        if let Some(v) = self.lte {
            ops.push(Op::Lte(v));
        }
        if let Some(v) = self.one_of {
            if v.is_empty() {
                return Err("`in` needs at least one value".into());
            }
            ops.push(Op::In(v));
        }
        if let Some(v) = self.present {
            ops.push(Op::Present(v));
        }
        let groups = [
            self.all.map(Predicate::All),
            self.any.map(Predicate::Any),
            self.not.map(Predicate::Not),
        ];
        let mut groups: Vec<Predicate> = groups.into_iter().flatten().collect();
        match (self.field, groups.len(), ops.len()) {
            (None, 1, 0) => match groups.pop() {
                Some(Predicate::Any(list)) if list.is_empty() => {
                    Err("`any` needs at least one predicate".into())
                }
                Some(p) => Ok(p),
                None => Err(FORM.into()),
            },
            (Some(field), 0, 1) => {
                let field = FieldRef::parse(&field)?;
                match ops.pop() {
                    Some(op) => Ok(Predicate::Compare(field, op)),
                    None => Err(FORM.into()),
                }
            }
            (Some(_), 0, 0) => {
                Err("a `field` needs one operator: eq, ne, gt, gte, lt, lte, in or present".into())
            }
            (Some(_), 0, _) => Err("one operator per predicate: combine several with `all`".into()),
            _ => Err(FORM.into()),
        }
    }
}

impl<'de> Deserialize<'de> for Predicate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Predicate, D::Error> {
        // Checked inside the object's visit, so a refusal carries the
        // object's position (the policy's errors name fields by it).
        let check = Written::into_predicate;
        crate::policy::checked(deserializer, Shape::Object, "a predicate object", check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Predicate, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn holds(p: &Value, body: &Value) -> Result<bool, WrongType> {
        let p = parse(p.clone()).unwrap();
        let facts = Facts {
            body: Some(body),
            ..Facts::for_tests()
        };
        p.holds(&facts)
    }

    #[test]
    fn amount_over_a_limit() {
        let p = json!({"field": "body.amount", "gt": 1000});
        assert_eq!(holds(&p, &json!({"amount": 1500})), Ok(true));
        assert_eq!(holds(&p, &json!({"amount": 1000})), Ok(false));
        assert_eq!(holds(&p, &json!({"amount": 1000.5})), Ok(true));
        assert_eq!(holds(&p, &json!({})), Ok(false));
        let gte = json!({"field": "body.amount", "gte": 1000});
        assert_eq!(holds(&gte, &json!({"amount": 1000})), Ok(true));
        let lt = json!({"field": "body.amount", "lt": 0});
        assert_eq!(holds(&lt, &json!({"amount": -1})), Ok(true));
        let lte = json!({"field": "body.amount", "lte": 0});
        assert_eq!(holds(&lte, &json!({"amount": 1})), Ok(false));
    }

    #[test]
    fn a_number_sent_as_a_string_is_refused_not_skipped() {
        let p = json!({"field": "body.amount", "gt": 1000});
        assert_eq!(
            holds(&p, &json!({"amount": "5000"})),
            Err(WrongType {
                field: "body.amount".into(),
                expected: "a number"
            })
        );
        // Even inside `not` or behind an `any` branch that already holds.
        let not = json!({"not": p.clone()});
        assert!(holds(&not, &json!({"amount": "5000"})).is_err());
        let any = json!({"any": [{"field": "body.side", "eq": "buy"}, p]});
        assert!(holds(&any, &json!({"side": "buy", "amount": "5000"})).is_err());
    }

    #[test]
    fn ticker_in_a_list_equality_and_presence() {
        let p = json!({"field": "body.ticker", "in": ["ACME", "GLOBEX"]});
        assert_eq!(holds(&p, &json!({"ticker": "ACME"})), Ok(true));
        assert_eq!(holds(&p, &json!({"ticker": "acme"})), Ok(false));
        assert_eq!(holds(&p, &json!({})), Ok(false));
        let eq = json!({"field": "body.qty", "eq": 1});
        assert_eq!(holds(&eq, &json!({"qty": 1.0})), Ok(true));
        let ne = json!({"field": "body.side", "ne": "sell"});
        assert_eq!(holds(&ne, &json!({"side": "buy"})), Ok(true));
        assert_eq!(holds(&ne, &json!({})), Ok(false));
        let present = json!({"field": "body.note", "present": true});
        assert_eq!(holds(&present, &json!({"note": null})), Ok(true));
        assert_eq!(holds(&present, &json!({"other": 1})), Ok(false));
        let absent = json!({"field": "body.note", "present": false});
        assert_eq!(holds(&absent, &json!({})), Ok(true));
    }

    #[test]
    fn nested_fields_and_array_indexes() {
        let p = json!({"field": "body.order.legs.1.qty", "gt": 10});
        let body = json!({"order": {"legs": [{"qty": 1}, {"qty": 50}]}});
        assert_eq!(holds(&p, &body), Ok(true));
    }

    #[test]
    fn all_any_not() {
        let p = json!({"all": [
            {"field": "body.amount", "gt": 1000},
            {"any": [{"field": "body.ticker", "eq": "ACME"}, {"not": {"field": "body.side", "eq": "sell"}}]}
        ]});
        assert_eq!(
            holds(&p, &json!({"amount": 2000, "ticker": "X", "side": "buy"})),
            Ok(true)
        );
        assert_eq!(
            holds(&p, &json!({"amount": 2000, "ticker": "X", "side": "sell"})),
            Ok(false)
        );
        assert_eq!(
            holds(&p, &json!({"amount": 20, "ticker": "ACME"})),
            Ok(false)
        );
        assert_eq!(holds(&json!({"all": []}), &json!({})), Ok(true));
    }

    #[test]
    fn malformed_predicates_are_refused_with_a_reason() {
        for (p, says) in [
            (json!({"field": "body.a"}), "one operator"),
            (
                json!({"field": "body.a", "gt": 1, "lt": 2}),
                "one operator per predicate",
            ),
            (json!({"field": "body.a", "gt": "x"}), "invalid type"),
            (
                json!({"field": "secret.a", "eq": 1}),
                "unknown placeholder root",
            ),
            (json!({"field": "body.a", "in": []}), "at least one value"),
            (json!({"any": []}), "at least one predicate"),
            (
                json!({"all": [], "field": "body.a", "eq": 1}),
                "a predicate is one of",
            ),
            (json!({"field": "body.a", "matches": "x"}), "unknown field"),
            (json!({}), "a predicate is one of"),
        ] {
            let e = parse(p.clone()).unwrap_err();
            assert!(e.contains(says), "{p}: {e}");
        }
    }
}
