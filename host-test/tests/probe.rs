//! Drives the probe plugin (`tests/probe`), which calls every hostcall
//! family. Build it first (see its Cargo.toml); `HOST_TEST_PROBE_WASM`
//! points elsewhere. The tests skip, and say so, when it is missing.

// Helpers outside #[test] fns: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, UNIX_EPOCH};

use host_test::{
    Action, CallState, Callback, Error, HeaderEdit, Host, HostOptions, MapType, SharedData,
    StreamType, VerifySignatureResult,
};

fn probe() -> Option<Vec<u8>> {
    let built = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/probe/target/wasm32-wasip1/release/host_test_probe.wasm"
    );
    let path = std::env::var("HOST_TEST_PROBE_WASM").unwrap_or_else(|_| built.to_string());
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot read {path}: {error}; `cargo xtask build` builds the probe"
            );
            eprintln!("skipped: cannot read {path}: {error}");
            None
        }
    }
}

fn configured(options: HostOptions) -> Option<Host> {
    let host = Host::from_bytes(&probe()?, options).expect("load");
    assert!(host.configure(r#"{"ok": true}"#).expect("configure"));
    Some(host)
}

fn get(path: &str) -> Vec<(&str, &str)> {
    vec![(":method", "GET"), (":path", path), (":authority", "api")]
}

#[test]
fn refused_configuration_is_false_and_blocks_requests() {
    let Some(wasm) = probe() else { return };
    let host = Host::from_bytes(&wasm, HostOptions::default()).expect("load");
    assert_eq!(host.configure(r#"{"refuse": true}"#), Ok(false));
    assert!(host.logged("refusing config"));
    assert_eq!(host.http_context().err(), Some(Error::NotConfigured));
}

#[test]
fn vm_config_properties_and_tick_period_reach_the_plugin() {
    let options = HostOptions {
        vm_config: b"vm!".to_vec(),
        ..HostOptions::default()
    }
    .property("plugin_name", "probe");
    let Some(host) = configured(options) else {
        return;
    };
    assert!(host.logged("cfg=Some(\"vm!\")"));
    assert!(host.logged("plugin_name=Some(\"probe\")"));
    assert_eq!(host.tick_period(), Some(Duration::from_millis(250)));
}

#[test]
fn local_response_is_recorded_and_not_sent_upstream() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    assert_eq!(req.request_headers(&get("/local"), true), Ok(Action::Pause));
    let record = req.record();
    let answer = record.local_response.clone().unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(answer.headers.get("www-authenticate"), Some("Bearer"));
    assert_eq!(answer.body_text(), "nope");
    assert!(!record.sent_upstream());
    assert_eq!(
        req.request_body(b"x", true),
        Err(Error::StreamEnded(req.id()))
    );
}

#[test]
fn header_edits_are_recorded_and_shape_the_upstream_request() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    let mut headers = get("/edit");
    headers.extend([("x-spoof", "evil"), ("x-r", "old")]);
    assert_eq!(req.request_headers(&headers, true), Ok(Action::Continue));
    let record = req.record();
    assert!(record.sent_upstream());
    assert_eq!(record.request_headers.get("x-spoof"), None);
    assert_eq!(record.request_headers.get("x-added"), Some("1"));
    assert_eq!(record.request_headers.get("x-r"), Some("replaced"));
    assert_eq!(
        record.edits[0],
        HeaderEdit::Remove(MapType::RequestHeaders, "x-spoof".into())
    );
}

#[test]
fn callout_answered_by_the_test_resumes_the_request() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    assert_eq!(req.request_headers(&get("/call"), true), Ok(Action::Pause));
    let calls = host.pending_http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "idp");
    assert_eq!(calls[0].header(":path"), Some("/token"));
    assert_eq!(calls[0].body, b"hello");
    assert_eq!(calls[0].timeout, Duration::from_millis(1500));
    assert!(!req.record().sent_upstream());
    host.answer_http_call(calls[0].token, 200, &[], b"tok")
        .unwrap();
    let record = req.record();
    assert_eq!(record.resumed, vec![StreamType::Request]);
    assert_eq!(record.request_headers.get("x-callout-body"), Some("tok"));
    assert!(record.sent_upstream());
    assert_eq!(host.http_calls()[0].state, CallState::Answered(200));
}

#[test]
fn failed_callout_has_no_headers_and_fails_closed() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    req.request_headers(&get("/call"), true).unwrap();
    let token = host.pending_http_calls()[0].token;
    host.fail_http_call(token).unwrap();
    assert!(host.logged("answered headers=0 status=None"));
    assert_eq!(req.record().local_response.map(|r| r.status), Some(503));
    assert_eq!(host.fail_http_call(token), Err(Error::UnknownCall(token)));
}

#[test]
fn callout_to_a_forwarding_cluster_reaches_a_real_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = vec![0; 4096];
        let n = stream.read(&mut request).unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nserver")
            .unwrap();
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    let Some(host) = configured(HostOptions::default().forward("idp", address)) else {
        return;
    };
    let req = host.http_context().unwrap();
    assert_eq!(req.request_headers(&get("/call"), true), Ok(Action::Pause));
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /token HTTP/1.1\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\nhello"));
    let record = req.record();
    assert_eq!(record.request_headers.get("x-callout-body"), Some("server"));
    assert!(record.sent_upstream());
}

#[test]
fn unknown_cluster_is_a_bad_argument_when_clusters_are_listed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let options = HostOptions::default().forward("other", listener.local_addr().unwrap());
    let Some(host) = configured(options) else {
        return;
    };
    let req = host.http_context().unwrap();
    req.request_headers(&get("/call"), true).unwrap();
    assert!(host.logged("dispatch failed BadArgument"));
    assert_eq!(req.record().local_response.map(|r| r.status), Some(500));
}

#[test]
fn root_resumes_a_held_request_from_tick_via_effective_context() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let held = host.http_context().unwrap();
    assert_eq!(held.request_headers(&get("/hold"), true), Ok(Action::Pause));
    let gone = host.http_context().unwrap();
    gone.request_headers(&get("/hold"), true).unwrap();
    gone.finish().unwrap();
    host.advance(Duration::from_secs(60));
    host.tick().unwrap();
    let record = held.record();
    assert_eq!(record.resumed, vec![StreamType::Request]);
    assert_eq!(record.request_headers.get("x-released"), Some("tick"));
    assert!(record.sent_upstream());
    assert!(host.logged(&format!("context {} gone: BadArgument", gone.id())));
    let now = host.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(host.logged(&format!("tick at Ok({now})")));
    assert_eq!(host.metric("ticks").map(|m| m.value), Some(1));
}

#[test]
fn shared_data_crosses_hosts_and_stale_cas_mismatches() {
    let shared = SharedData::new();
    shared.set("n", b"0", 0).unwrap();
    let options = || HostOptions {
        shared_data: shared.clone(),
        ..HostOptions::default()
    };
    let Some(worker_a) = configured(options()) else {
        return;
    };
    let worker_b = configured(options()).unwrap();
    for (worker, expected) in [(&worker_a, "1"), (&worker_b, "2")] {
        let req = worker.http_context().unwrap();
        req.request_headers(&get("/shared"), true).unwrap();
        let header = req
            .record()
            .request_headers
            .get("x-shared")
            .unwrap()
            .to_string();
        assert_eq!(header, format!("{expected} Ok(()) Err(CasMismatch)"));
    }
    assert_eq!(shared.get("n").map(|(value, _)| value), Some(b"2".to_vec()));
    assert!(worker_a.logged("Ok(Some([105, 116, 101, 109])) Ok(None)"));
}

#[test]
fn metrics_are_readable_by_name() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    req.request_headers(&get("/metrics"), true).unwrap();
    assert_eq!(req.record().request_headers.get("x-count"), Some("Ok(2)"));
    assert_eq!(host.metric("requests").unwrap().value, 2);
    assert_eq!(host.metric("inflight").unwrap().value, 5);
    assert_eq!(host.metric("latency").unwrap().samples, vec![42]);
}

#[test]
fn verify_signature_answers_and_can_be_switched_off() {
    let key = "3059301306072a8648ce3d020106082a8648ce3d03010703420004";
    for (enabled, expected) in [(true, "ok "), (false, "err NotFound")] {
        let options = HostOptions {
            verify_signature: enabled,
            ..HostOptions::default()
        };
        let Some(host) = configured(options) else {
            return;
        };
        let req = host.http_context().unwrap();
        let mut headers = get("/verify");
        headers.extend([
            ("x-key", key),
            ("x-sig", "3006020101020101"),
            ("x-text", "t"),
        ]);
        req.request_headers(&headers, true).unwrap();
        let answer = req
            .record()
            .request_headers
            .get("x-verify")
            .unwrap()
            .to_string();
        assert!(answer.starts_with(expected), "{answer}");
        if enabled {
            let hex = answer.trim_start_matches("ok ");
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let result = VerifySignatureResult::decode(&bytes).unwrap();
            assert!(!result.result);
            assert_eq!(result.error, "Failed to initialize digest verify.");
        }
    }
}

#[test]
fn body_is_buffered_while_paused_and_replaced_at_end_of_stream() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    let mut headers = get("/body");
    headers[0].1 = "POST";
    assert_eq!(req.request_headers(&headers, false), Ok(Action::Continue));
    assert_eq!(req.request_body(b"ab", false), Ok(Action::Pause));
    assert_eq!(req.request_body(b"cd", true), Ok(Action::Continue));
    let record = req.record();
    assert_eq!(record.request_body, b"ABCD!");
    assert!(record.sent_upstream());
    // Headers already went upstream: editing them now is a BadArgument.
    assert!(host.logged("late header edit 2"));
    assert_eq!(
        record.last_action(Callback::RequestBody),
        Some(Action::Continue)
    );
}

#[test]
fn paused_headers_withhold_the_body_from_the_plugin() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    assert_eq!(req.request_headers(&get("/hold"), false), Ok(Action::Pause));
    assert_eq!(req.request_body(b"data", true), Ok(Action::Pause));
    assert_eq!(req.record().last_action(Callback::RequestBody), None);
    host.tick().unwrap();
    assert_eq!(req.record().request_body, b"data");
}

#[test]
fn response_headers_and_body_pass_through_the_plugin() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    req.request_headers(&get("/"), true).unwrap();
    assert_eq!(
        req.response_headers(&[(":status", "200")], false),
        Ok(Action::Continue)
    );
    assert_eq!(req.response_body(b"x", false), Ok(Action::Pause));
    assert_eq!(req.response_body(b"y", true), Ok(Action::Continue));
    let record = req.record();
    assert_eq!(record.response_headers.get("x-resp"), Some("seen"));
    assert_eq!(record.response_body, b"xy+");
    req.finish().unwrap();
    assert!(host.logged(&format!("on_log {}", req.id())));
}

#[test]
fn a_trap_is_an_error_and_breaks_the_vm() {
    let Some(host) = configured(HostOptions::default()) else {
        return;
    };
    let req = host.http_context().unwrap();
    match req.request_headers(&get("/trap"), true) {
        Err(Error::Trap { callback, message }) => {
            assert_eq!(callback, "proxy_on_request_headers");
            assert!(message.contains("boom from guest"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(host.is_broken());
    assert!(matches!(host.http_context(), Err(Error::Broken(_))));
    assert!(matches!(host.tick(), Err(Error::Broken(_))));
}
