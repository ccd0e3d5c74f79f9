//! What a case expected against what came out, and the reports: a line per
//! case with a diff on failure, and JUnit XML for CI systems.

use super::file::{Case, Seen};
use super::{CaseResult, Outcome};
use crate::HeaderMap;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Every way `outcome` differs from what `case` expects.
pub fn compare(case: &Case, outcome: &Outcome) -> Vec<String> {
    let expect = &case.expect;
    let mut failures = outcome.problems.clone();
    let by = match &outcome.answered_by {
        Some(plugin) => format!(" (answered by {plugin})"),
        None => String::new(),
    };
    if let Some(status) = expect.status {
        if status != outcome.status {
            failures.push(format!(
                "status: expected {status}, got {}{by}",
                outcome.status
            ));
        }
    }
    let body: Option<Value> = serde_json::from_slice(&outcome.body).ok();
    if let Some(error) = &expect.error {
        let got = match error {
            Value::Number(_) => body.as_ref().map(|b| b["error"]["code"].clone()),
            _ => body.as_ref().map(|b| b["error"].clone()),
        };
        if got.as_ref() != Some(error) {
            let got = got.map_or("no JSON body".to_string(), |g| g.to_string());
            failures.push(format!("error: expected {error}, got {got}{by}"));
        }
    }
    failures.extend(headers("headers", &expect.headers, &outcome.headers));
    if let Some(expected) = &expect.body {
        failures.extend(same_body("body", expected, &outcome.body));
    }
    match (&expect.upstream, &outcome.upstream) {
        (Some(Seen::Reached(false)), Some(_)) => {
            failures.push("upstream: expected nothing to reach it, and the request did".into())
        }
        (Some(Seen::Reached(true) | Seen::Request { .. }), None) => failures.push(format!(
            "upstream: expected the request to reach it, and it did not{by}"
        )),
        (
            Some(Seen::Request {
                headers: want,
                body,
            }),
            Some((seen, seen_body)),
        ) => {
            failures.extend(headers("upstream headers", want, seen));
            if let Some(expected) = body {
                failures.extend(same_body("upstream body", expected, seen_body));
            }
        }
        _ => {}
    }
    if let Some(expected) = &expect.callouts {
        if *expected != outcome.callouts {
            failures.push(format!(
                "callouts:\n{}",
                diff(&expected.join("\n"), &outcome.callouts.join("\n"))
            ));
        }
    }
    if let Some(expected) = &expect.binding_message {
        if outcome.binding_message.as_ref() != Some(expected) {
            let got = outcome
                .binding_message
                .as_ref()
                .map_or("no approval request".to_string(), |m| format!("{m:?}"));
            failures.push(format!("binding_message: expected {expected:?}, got {got}"));
        }
    }
    failures
}

fn headers(
    what: &str,
    expected: &BTreeMap<String, Option<String>>,
    got: &HeaderMap,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(name, want)| {
            let have = got.get(name);
            (have != want.as_deref()).then(|| {
                let show = |v: Option<&str>| v.map_or("absent".to_string(), |v| format!("{v:?}"));
                format!(
                    "{what}: {name}: expected {}, got {}",
                    show(want.as_deref()),
                    show(have)
                )
            })
        })
        .collect()
}

/// A body compared: a string as text, anything else as JSON.
fn same_body(what: &str, expected: &Value, got: &[u8]) -> Option<String> {
    let got_text = String::from_utf8_lossy(got);
    match expected {
        Value::String(text) => {
            (*text != got_text).then(|| format!("{what}:\n{}", diff(text, &got_text)))
        }
        _ => match serde_json::from_slice::<Value>(got) {
            Ok(json) if json == *expected => None,
            Ok(json) => Some(format!(
                "{what}:\n{}",
                diff(&pretty(expected), &pretty(&json))
            )),
            Err(_) => Some(format!(
                "{what}: expected JSON, got:\n{}",
                indent(&got_text, "  + ")
            )),
        },
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line diff: `-` expected, `+` got.
fn diff(expected: &str, got: &str) -> String {
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(expected, got).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "-",
            similar::ChangeTag::Insert => "+",
            similar::ChangeTag::Equal => " ",
        };
        let _ = writeln!(out, "  {sign} {}", change.value().trim_end_matches('\n'));
    }
    out.trim_end().to_string()
}

/// The text report: a line per case, the failures under it; with `show`,
/// what came out of each case too (to write its `expect`).
pub fn text(file: &str, results: &[CaseResult], show: bool) -> String {
    let mut out = String::new();
    for r in results {
        let mark = if r.failures.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        let _ = writeln!(
            out,
            "{mark} {file}: {} ({} ms)",
            r.name,
            r.elapsed.as_millis()
        );
        for failure in &r.failures {
            let _ = writeln!(out, "{}", indent(failure, "       "));
        }
        if let Some(outcome) = r.outcome.as_ref().filter(|_| show) {
            let _ = writeln!(out, "{}", indent(&pretty(&shown(outcome)), "       | "));
        }
    }
    out
}

/// An outcome as the `expect` fields name it.
fn shown(outcome: &Outcome) -> Value {
    let headers = |map: &HeaderMap| -> Value {
        map.pairs()
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let body = |bytes: &[u8]| -> Value {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    serde_json::json!({
        "status": outcome.status,
        "answered_by": outcome.answered_by,
        "headers": headers(&outcome.headers),
        "body": body(&outcome.body),
        "upstream": outcome.upstream.as_ref().map(|(h, b)| serde_json::json!({
            "headers": headers(h),
            "body": body(b),
        })),
        "callouts": outcome.callouts,
        "binding_message": outcome.binding_message,
    })
}

/// JUnit XML: one `testsuite` per test file.
pub fn junit(suites: &[(String, Vec<CaseResult>)]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"agentward policy tests\">\n");
    for (file, results) in suites {
        let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
        let seconds: f64 = results.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" time=\"{seconds:.3}\">",
            xml(file),
            results.len()
        );
        for r in results {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml(file),
                xml(&r.name),
                r.elapsed.as_secs_f64()
            );
            if r.failures.is_empty() {
                out.push_str("/>\n");
            } else {
                let first = r.failures[0].lines().next().unwrap_or_default();
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml(first),
                    xml(&r.failures.join("\n"))
                );
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn xml(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if c.is_control() && c != '\n' && c != '\t' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn junit_escapes_and_counts_failures() {
        let results = vec![
            CaseResult {
                name: "a <b>".into(),
                failures: vec![],
                elapsed: Duration::from_millis(5),
                outcome: None,
            },
            CaseResult {
                name: "c".into(),
                failures: vec!["status: expected 403, got 200 & more".into()],
                elapsed: Duration::from_millis(7),
                outcome: None,
            },
        ];
        let x = junit(&[("p.tests.yaml".into(), results)]);
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("name=\"a &lt;b&gt;\""), "{x}");
        assert!(x.contains("got 200 &amp; more</failure>"), "{x}");
    }

    #[test]
    fn a_json_body_diff_names_the_line_that_differs() {
        let d = same_body(
            "body",
            &serde_json::json!({"a": 1, "b": 2}),
            br#"{"a":1,"b":3}"#,
        )
        .unwrap();
        assert!(
            d.contains("-   \"b\": 2") && d.contains("+   \"b\": 3"),
            "{d}"
        );
        assert!(same_body("body", &serde_json::json!({"a": 1}), br#"{ "a" : 1 }"#).is_none());
    }
}
