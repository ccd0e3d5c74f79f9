//! `verify_signature` against signatures made by OpenSSL (Python
//! `cryptography`; `fixtures/gen_verify_signature.py` made the file), so the
//! host answers as Envoy's BoringSSL does.

// Helpers outside #[test] fns: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use host_test::{verify_signature, Status, VerifySignatureArguments, VerifySignatureResult};
use serde_json::Value;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn cases() -> Vec<Value> {
    let text = include_str!("fixtures/verify_signature.json");
    serde_json::from_str(text).expect("fixture JSON")
}

fn arguments(case: &Value) -> VerifySignatureArguments {
    let field = |name: &str| case[name].as_str().unwrap_or_default().to_string();
    VerifySignatureArguments {
        hash_function: field("hash_function"),
        public_key: hex(&field("public_key")),
        signature: hex(&field("signature")),
        text: field("text").into_bytes(),
        public_key_pem: field("public_key_pem"),
    }
}

#[test]
fn every_fixture_gets_envoys_answer() {
    let cases = cases();
    assert!(cases.len() >= 30);
    for case in &cases {
        let expected = VerifySignatureResult {
            result: case["result"].as_bool().expect("result"),
            error: case["error"].as_str().expect("error").to_string(),
        };
        let got = verify_signature(&arguments(case));
        assert_eq!(got, Ok(expected), "case {}", case["name"]);
    }
}

#[test]
fn a_bad_signature_is_ok_with_result_absent_on_the_wire() {
    let case = cases()
        .into_iter()
        .find(|case| case["name"] == "p256_other_text_fails")
        .expect("case");
    let result = verify_signature(&arguments(&case)).expect("Ok status");
    let wire = result.encode();
    // Field 1 (tag 0x08) is absent: proto3 false.
    assert_eq!(wire.first(), Some(&0x12));
    assert_eq!(VerifySignatureResult::decode(&wire), Some(result));
}

#[test]
fn der_and_pem_keys_both_given_is_a_bad_argument() {
    let case = cases()
        .into_iter()
        .find(|case| case["name"] == "p256_pem")
        .expect("case");
    let mut both = arguments(&case);
    both.public_key = vec![0x30, 0x00];
    assert_eq!(verify_signature(&both), Err(Status::BadArgument));
}
