//! Probe plugin for host-test: each request path exercises one hostcall
//! family (local response, callout, hold and resume, shared data, metrics,
//! foreign function, header edits, properties, body rewrite, trap).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::*;
use proxy_wasm::types::*;
use std::cell::RefCell;
use std::time::Duration;

thread_local! {
    static HELD: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { counter: None }) });
}}

struct Root {
    counter: Option<u32>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, n: usize, body: usize, _: usize) {
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body);
        log::info!("root callout {token} headers={n} status={status:?} body={body:?}");
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let cfg = self.get_vm_configuration();
        log::info!(
            "vm start size={size} cfg={:?}",
            cfg.map(|c| String::from_utf8_lossy(&c).to_string())
        );
        true
    }
    fn on_configure(&mut self, _: usize) -> bool {
        let cfg = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&cfg).to_string();
        log::info!("configure {text}");
        if text.contains("refuse") {
            log::error!("refusing config");
            return false;
        }
        self.set_tick_period(Duration::from_millis(250));
        self.counter = hostcalls::define_metric(MetricType::Counter, "ticks").ok();
        let name = self.get_property(vec!["plugin_name"]);
        log::info!(
            "plugin_name={:?}",
            name.map(|n| String::from_utf8_lossy(&n).to_string())
        );
        if text.contains("callout") {
            let r = self.dispatch_http_call(
                "idp",
                vec![
                    (":method", "GET"),
                    (":path", "/jwks"),
                    (":authority", "idp"),
                ],
                None,
                vec![],
                Duration::from_secs(1),
            );
            log::info!("configure callout {r:?}");
        }
        true
    }
    fn on_tick(&mut self) {
        if let Some(c) = self.counter {
            let _ = hostcalls::increment_metric(c, 1);
        }
        let now = self.get_current_time();
        log::info!(
            "tick at {:?}",
            now.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
        );
        let held: Vec<u32> = HELD.with(|h| h.borrow_mut().drain(..).collect());
        for id in held {
            match hostcalls::set_effective_context(id) {
                Ok(()) => {
                    let _ = hostcalls::set_map_value(
                        MapType::HttpRequestHeaders,
                        "x-released",
                        Some("tick"),
                    );
                    let _ = hostcalls::resume_http_request();
                }
                Err(e) => log::warn!("context {id} gone: {e:?}"),
            }
        }
    }
    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Req { id }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map: u32,
        k: *const u8,
        kl: usize,
        v: *const u8,
        vl: usize,
    ) -> u32;
}

struct Req {
    id: u32,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn field(out: &mut Vec<u8>, tag: u8, data: &[u8]) {
    out.push(tag << 3 | 2);
    let mut n = data.len();
    loop {
        if n < 0x80 {
            out.push(n as u8);
            break;
        }
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.extend_from_slice(data);
}

impl Context for Req {
    fn on_http_call_response(&mut self, token: u32, n: usize, body: usize, _: usize) {
        let status = self.get_http_call_response_header(":status");
        let body = self
            .get_http_call_response_body(0, body)
            .unwrap_or_default();
        log::info!("callout {token} answered headers={n} status={status:?}");
        match status.as_deref() {
            Some("200") => {
                self.set_http_request_header(
                    "x-callout-body",
                    Some(&String::from_utf8_lossy(&body)),
                );
                self.resume_http_request();
            }
            _ => self.send_http_response(
                503,
                vec![("content-type", "application/json")],
                Some(b"{\"error\":\"temporarily_unavailable\"}"),
            ),
        }
    }
}

impl HttpContext for Req {
    fn on_http_request_headers(&mut self, _: usize, _eos: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        log::debug!("ctx {} path {path}", self.id);
        match path.as_str() {
            "/local" => {
                self.send_http_response(401, vec![("www-authenticate", "Bearer")], Some(b"nope"));
                Action::Pause
            }
            "/call" => {
                match self.dispatch_http_call(
                    "idp",
                    vec![
                        (":method", "POST"),
                        (":path", "/token"),
                        (":authority", "idp"),
                        ("content-type", "text/plain"),
                    ],
                    Some(b"hello"),
                    vec![],
                    Duration::from_millis(1500),
                ) {
                    Ok(t) => {
                        log::info!("dispatched {t}");
                        Action::Pause
                    }
                    Err(e) => {
                        log::error!("dispatch failed {e:?}");
                        self.send_http_response(500, vec![], None);
                        Action::Pause
                    }
                }
            }
            "/hold" => {
                HELD.with(|h| h.borrow_mut().push(self.id));
                Action::Pause
            }
            "/shared" => {
                let (v, cas) = hostcalls::get_shared_data("n").unwrap_or((None, None));
                let n: u32 = v
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let r = hostcalls::set_shared_data("n", Some((n + 1).to_string().as_bytes()), cas);
                let stale = hostcalls::set_shared_data("n", Some(b"999"), cas);
                self.set_http_request_header(
                    "x-shared",
                    Some(&format!("{} {:?} {:?}", n + 1, r, stale)),
                );
                let q = hostcalls::register_shared_queue("q").unwrap_or(0);
                let _ = hostcalls::enqueue_shared_queue(q, Some(b"item"));
                let d = hostcalls::dequeue_shared_queue(q);
                let e = hostcalls::dequeue_shared_queue(q);
                log::info!("queue {q} {d:?} {e:?}");
                Action::Continue
            }
            "/metrics" => {
                let c = hostcalls::define_metric(MetricType::Counter, "requests").unwrap();
                let g = hostcalls::define_metric(MetricType::Gauge, "inflight").unwrap();
                let h = hostcalls::define_metric(MetricType::Histogram, "latency").unwrap();
                let _ = hostcalls::increment_metric(c, 2);
                let _ = hostcalls::record_metric(g, 7);
                let _ = hostcalls::increment_metric(g, -2);
                let _ = hostcalls::record_metric(h, 42);
                let v = hostcalls::get_metric(c);
                self.set_http_request_header("x-count", Some(&format!("{v:?}")));
                Action::Continue
            }
            "/verify" => {
                let key = hex(&self.get_http_request_header("x-key").unwrap_or_default());
                let sig = hex(&self.get_http_request_header("x-sig").unwrap_or_default());
                let text = self.get_http_request_header("x-text").unwrap_or_default();
                let mut args = Vec::new();
                field(&mut args, 1, b"sha256");
                field(&mut args, 2, &key);
                field(&mut args, 3, &sig);
                field(&mut args, 4, text.as_bytes());
                let r = hostcalls::call_foreign_function("verify_signature", Some(&args));
                let s = match r {
                    Ok(Some(b)) => format!(
                        "ok {}",
                        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                    ),
                    Ok(None) => "ok empty".to_string(),
                    Err(e) => format!("err {e:?}"),
                };
                self.set_http_request_header("x-verify", Some(&s));
                Action::Continue
            }
            "/trap" => panic!("boom from guest"),
            "/edit" => {
                self.set_http_request_header("x-spoof", None);
                self.add_http_request_header("x-added", "1");
                self.set_http_request_header("x-r", Some("replaced"));
                Action::Continue
            }
            "/props" => {
                let p = self.get_property(vec!["request", "id"]);
                self.set_property(vec!["filter_state", "x"], Some(b"y"));
                let q = self.get_property(vec!["filter_state", "x"]);
                self.set_http_request_header("x-props", Some(&format!("{p:?} {q:?}")));
                Action::Continue
            }
            "/body" => Action::Continue,
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        if !eos {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        let mut up = body.to_ascii_uppercase();
        up.extend_from_slice(b"!");
        self.set_http_request_body(0, size, &up);
        // trap 2: headers already passed on
        let (k, v) = ("x-late", "1");
        let r =
            unsafe { proxy_replace_header_map_value(0, k.as_ptr(), k.len(), v.as_ptr(), v.len()) };
        log::info!("late header edit {r:?}");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("x-resp", Some("seen"));
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        if !eos {
            return Action::Pause;
        }
        let b = self.get_http_response_body(0, size).unwrap_or_default();
        self.set_http_response_body(0, size, &[b.as_slice(), b"+"].concat());
        Action::Continue
    }

    fn on_log(&mut self) {
        log::info!("on_log {}", self.id);
    }
}
