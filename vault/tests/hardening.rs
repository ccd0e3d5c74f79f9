//! The real vault binary against hostile clients and hostile peers: slow
//! clients, oversized bodies, forged log lines, oversized JWKS and token
//! answers, and the separate metrics listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Settings for a vault in `dir` whose upstream is `upstream_url`.
fn settings<'a>(
    dir: &'a std::path::Path,
    port: u16,
    jwks_url: &'a str,
    upstream_url: &'a str,
) -> VaultSettings<'a> {
    VaultSettings {
        port,
        database_url: format!("sqlite://{}", dir.join("vault.db").display()),
        database_schema: None,
        dir,
        jwks_url,
        upstream_url,
        refresh_margin: 5,
        name: "vault",
        ca_file: None,
    }
}

/// Reads until the peer closes or `deadline` passes; what arrived, and
/// whether the connection was closed in time.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}

/// Open descriptors and resident memory (kB) of a process.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

const SLOW: &str = "header_read_timeout_seconds = 1\nbody_read_timeout_seconds = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_in_time_and_healthz_is_unaffected() {
    let dir = temp_dir("slow");
    let issuer = TestIssuer::start().await;
    let port = free_port();
    let vault = VaultProcess::start_with(
        settings(&dir, port, &issuer.jwks_url, "http://127.0.0.1:9"),
        SLOW,
        "",
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    let (fds_before, rss_before) = fds_and_rss(vault.pid());

    // Headers that never end, and uploads that stall after a few bytes (from
    // an authenticated client, so the vault does start reading them).
    let mut partial = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: vault\r\nX-Slow: ")
            .await
            .unwrap();
        partial.push(s);
    }
    let mut uploads = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /oauth/token HTTP/1.1\r\nHost: vault\r\nAuthorization: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\ngrant_type=",
            basic(GATEWAY_ID, "gateway-secret%3Awith%2Fodd+chars")
        );
        s.write_all(head.as_bytes()).await.unwrap();
        uploads.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_stalled, rss_stalled) = fds_and_rss(vault.pid());

    // The health check is answered at once meanwhile.
    let started = Instant::now();
    let r = http()
        .get(format!("{}/healthz", vault.url))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));

    // Partial headers: closed after the header read timeout (1 s).
    for s in &mut partial {
        let (_, closed) = read_until_closed(s, Duration::from_secs(4)).await;
        assert!(closed, "a connection with unfinished headers is still open");
    }
    // Stalled bodies: 408 and closed after the body read timeout (2 s).
    for s in &mut uploads {
        let (answer, closed) = read_until_closed(s, Duration::from_secs(4)).await;
        assert!(closed, "a stalled upload is still open: {answer:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"error\":\"invalid_request\""), "{answer}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_after, rss_after) = fds_and_rss(vault.pid());
    eprintln!(
        "descriptors {fds_before} -> {fds_stalled} (350 stalled) -> {fds_after}; \
         RSS kB {rss_before} -> {rss_stalled} -> {rss_after}"
    );
    assert!(fds_after <= fds_before + 5, "{fds_before} -> {fds_after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_requests_are_authenticated_before_their_body_and_bounded() {
    let dir = temp_dir("bodies");
    let issuer = TestIssuer::start().await;
    let port = free_port();
    let vault = VaultProcess::start_with(
        settings(&dir, port, &issuer.jwks_url, "http://127.0.0.1:9"),
        SLOW,
        "",
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    let head = |auth: &str, length: &str| {
        format!(
            "POST /oauth/token HTTP/1.1\r\nHost: vault\r\n{auth}\
             Content-Type: application/x-www-form-urlencoded\r\n{length}\r\n"
        )
    };

    // Wrong HTTP Basic credentials and a 2 MB body announced, none sent: 401
    // at once, the body is never waited for.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let auth = format!("Authorization: {}\r\n", basic(GATEWAY_ID, "wrong"));
    s.write_all(head(&auth, "Content-Length: 2000000\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_millis(1500)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(answer.contains("\"error\":\"invalid_client\""), "{answer}");

    // The right credentials and a 2 MB body announced: 413 at once.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let good = format!(
        "Authorization: {}\r\n",
        basic(GATEWAY_ID, "gateway-secret%3Awith%2Fodd+chars")
    );
    s.write_all(head(&good, "Content-Length: 2000000\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_millis(1500)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("\"error\":\"invalid_request\""), "{answer}");

    // client_secret_post, chunked, no length announced: 413 once 16 KiB
    // arrived, without waiting for the rest.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(head("", "Transfer-Encoding: chunked\r\n").as_bytes())
        .await
        .unwrap();
    let chunk = vec![b'a'; 20 * 1024];
    s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(&chunk).await.unwrap();
    s.write_all(b"\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_millis(1500)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // An ordinary request still works (and is refused for its subject only).
    let r = rfc8693(&http(), &vault.url, "not-a-jwt")
        .send()
        .await
        .unwrap();
    let (status, body) = json(r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_limit_and_a_separate_metrics_listener() {
    let dir = temp_dir("limit");
    let issuer = TestIssuer::start().await;
    let port = free_port();
    let metrics_port = free_port();
    let extra = format!(
        "header_read_timeout_seconds = 2\nmax_connections = 4\n\
         metrics_listen = \"127.0.0.1:{metrics_port}\"\n"
    );
    let vault = VaultProcess::start_with(
        settings(&dir, port, &issuer.jwks_url, "http://127.0.0.1:9"),
        &extra,
        "",
    )
    .await;
    // No pooled connection may hold one of the four slots.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");

    // /metrics is on the metrics listener only.
    let r = http
        .get(format!("{}/metrics", vault.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = http
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("# TYPE agentward_vault_exchanges_total counter"));

    // Four slow connections take every slot of the public listener: a fifth
    // waits for a slot (until the header timeout frees them), while the
    // metrics listener answers at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: vault\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = http
        .get(format!("{}/healthz", vault.url))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(
        waiting.is_err(),
        "a fifth connection was served: {waiting:?}"
    );
    let started = Instant::now();
    let r = http
        .get(format!("{metrics_url}/healthz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    let r = http
        .get(format!("{}/healthz", vault.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served once the slow ones were cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_cannot_write_a_line_into_the_text_log() {
    let dir = temp_dir("loginject");
    let issuer = TestIssuer::start().await;
    let port = free_port();
    let vault = VaultProcess::start_with_env(
        settings(&dir, port, &issuer.jwks_url, "http://127.0.0.1:9"),
        "",
        "",
        &[("AGENTWARD_VAULT_LOG_FORMAT", "text")],
    )
    .await;
    let forged = "2026-12-03T00:00:00.000000Z  INFO agentward_vault::linking: account linked sub=root connection=stocktrade";
    let id = format!("x%0A{}", forged.replace(' ', "+").replace(':', "%3A"));
    let r = http()
        .post(format!("{}/oauth/token", vault.url))
        .header("authorization", basic(&id, "s"))
        .form(&[("grant_type", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&vault.log).unwrap();
    assert!(
        log.contains("client authentication failed"),
        "the refusal is logged: {log}"
    );
    for line in log.lines() {
        let plain = strip_ansi(line);
        assert!(
            !plain.starts_with("2026-12-03T00:00:00"),
            "a forged line in the log: {plain:?}\n{log}"
        );
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A server that answers every request with `status` and `body`, sent
/// chunked (no length announced), padded with JSON whitespace to `size`.
async fn oversized_server(body: &str, size: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut padded = body.to_string();
    padded.insert_str(1, &" ".repeat(size.saturating_sub(body.len())));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let padded = padded.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                for chunk in padded.as_bytes().chunks(16 * 1024) {
                    let framed =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_jwks_is_refused_and_the_exchange_fails_closed() {
    let dir = temp_dir("bigjwks");
    let issuer = TestIssuer::start().await;
    let jwks = reqwest::get(&issuer.jwks_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let big = format!("{}/jwks.json", oversized_server(&jwks, 1024 * 1024).await);
    let port = free_port();
    let vault = VaultProcess::start(settings(&dir, port, &big, "http://127.0.0.1:9")).await;
    let alice = issuer.token("alice", "agent-a");
    let r = rfc8693(&http(), &vault.url, &alice).send().await.unwrap();
    let (status, body) = json(r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    let log = std::fs::read_to_string(&vault.log).unwrap();
    assert!(log.contains("too large"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_token_endpoint_answer_is_refused_and_linking_fails_closed() {
    let dir = temp_dir("bigtoken");
    let issuer = TestIssuer::start().await;
    let tokens =
        r#"{"access_token":"at","refresh_token":"rt","token_type":"Bearer","expires_in":3600}"#;
    let upstream = oversized_server(tokens, 1024 * 1024).await;
    let port = free_port();
    let vault = VaultProcess::start(settings(&dir, port, &issuer.jwks_url, &upstream)).await;
    let http = http();
    let started = http
        .get(format!("{}/connect/stocktrade", vault.url))
        .bearer_auth(issuer.token_for("alice", "agent-a", &vault.url))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 302);
    let cookie = started.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let authorize = reqwest::Url::parse(
        started.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let r = http
        .get(format!("{}/connect/callback", vault.url))
        .query(&[("code", "c"), ("state", &state)])
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let (status, body) = json(r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    let log = std::fs::read_to_string(&vault.log).unwrap();
    assert!(log.contains("too large"), "{log}");
}
