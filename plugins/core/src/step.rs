//! The one vocabulary of every agentward decision, whatever the plugin and
//! whatever the host: a decision returns a [`Step`]; a step that needs the
//! network is a [`Callout`], whose [`Answer`] the host feeds back; a
//! decision that needs the body says so while the headers are still held
//! (DESIGN.md traps 1 and 2). Hosts (Envoy, Spin, the test harness) only
//! carry steps out.

use crate::bytes;
use crate::response::LocalResponse;
use std::borrow::Cow;
use std::sync::Arc;

/// Header values a decision sets, shared between a cache and the requests
/// it answers (cheap to clone, serialisable).
pub type SharedHeaders = Arc<Vec<(String, String)>>;

/// Header edits to make while the request's headers are held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// Headers to remove (lower-case names; a configured name is owned).
    pub remove: Vec<Cow<'static, str>>,
    /// Headers to set, replacing any value the request had.
    pub set: SharedHeaders,
    /// A header to set that is not shared (e.g. one request's `:path`).
    pub set_one: Option<(&'static str, String)>,
}

impl Edits {
    /// No edits.
    pub fn none() -> Edits {
        Edits::default()
    }

    /// Sets one header.
    pub fn set(name: &'static str, value: String) -> Edits {
        Edits {
            set_one: Some((name, value)),
            ..Edits::default()
        }
    }

    /// Also removes this header.
    pub fn removing(mut self, name: impl Into<Cow<'static, str>>) -> Edits {
        self.remove.push(name.into());
        self
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.set_one.is_none()
    }

    /// Makes the edits to a request kept as a list of headers (names in
    /// lower case) and its path, as Envoy makes them: removed and replaced
    /// headers leave, set ones come in, a `:path` edit changes the path.
    /// `value` turns a set value into the list's value type. For hosts that
    /// hold the request themselves (the Spin components, the playground).
    pub fn apply<V>(
        &self,
        headers: &mut Vec<(String, V)>,
        path: &mut String,
        value: impl Fn(&str) -> V,
    ) -> Applied {
        let mut applied = Applied::default();
        for (name, _) in headers.iter() {
            let removed = self.remove.iter().any(|r| r.eq_ignore_ascii_case(name));
            if removed && !self.sets(name) && !applied.removed.contains(name) {
                applied.removed.push(name.clone());
            }
        }
        headers.retain(|(name, _)| {
            !self.remove.iter().any(|r| r.eq_ignore_ascii_case(name)) && !self.sets(name)
        });
        let mut set = |name: &str, v: &str| {
            if name == ":path" {
                v.clone_into(path);
            } else {
                headers.push((name.to_ascii_lowercase(), value(v)));
            }
            applied.set.push((name.to_ascii_lowercase(), v.to_string()));
        };
        for (name, v) in self.set.iter() {
            set(name, v);
        }
        // Of the pseudo-headers, only `:path` is edited.
        if let Some((name, v)) = &self.set_one {
            if *name == ":path" || !name.starts_with(':') {
                set(name, v);
            }
        }
        applied
    }

    /// The value these edits give header `name` (in lower case, as the
    /// names they set are), if they set it: what a filter after them reads.
    /// `set_one` is made last, so it wins over `set`.
    pub fn value_of(&self, name: &str) -> Option<&str> {
        if let Some((n, v)) = &self.set_one {
            if bytes::eq(n.as_bytes(), name.as_bytes()) {
                return Some(v);
            }
        }
        self.set
            .iter()
            .find(|(n, _)| bytes::eq(n.as_bytes(), name.as_bytes()))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the edits set header `name`.
    fn sets(&self, name: &str) -> bool {
        self.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
            || matches!(&self.set_one, Some((n, _)) if n.eq_ignore_ascii_case(name))
    }
}

/// What [`Edits::apply`] did, names in lower case.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Headers the request had that were removed and not set again.
    pub removed: Vec<String>,
    /// Headers set, `:path` included.
    pub set: Vec<(String, String)>,
}

/// What to do with a request (or a response) next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Apply the edits and let the request go on.
    Continue(Edits),
    /// Answer locally; the request goes no further.
    Respond(LocalResponse),
    /// Make this call and hold the request; feed the [`Answer`] back to the
    /// decision that asked.
    Call(Callout),
    /// Hold the request until the decision is woken (keys arrived, an
    /// approval came) or the deadline passes, whichever is first.
    Hold {
        /// Milliseconds since the Unix epoch.
        until_ms: u64,
    },
    /// Apply the edits now (trap 2: headers cannot change later), let the
    /// headers go on (trap 1: a paused header phase never sees the body),
    /// buffer the body up to `max_bytes` (413 beyond) and decide again at
    /// the end of the stream with a [`BodyStep`].
    ReadBody {
        /// Header edits decided while the headers are held.
        edits: Edits,
        /// The largest body read.
        max_bytes: usize,
    },
}

/// The decision on a body read to its end (request or response).
#[derive(Debug, Clone, PartialEq)]
pub enum BodyStep {
    /// Send the body on unchanged.
    Keep,
    /// Send this body instead. For a response, `content-length` must have
    /// been removed in the headers phase (see [`Step::ReadBody`]).
    Replace(Vec<u8>),
    /// Answer locally instead; for a request the upstream stream is reset.
    Respond(LocalResponse),
    /// Make this call first; feed the answer back.
    Call(Callout),
}

/// An outgoing HTTP call: JWKS fetches, the vault's token exchange, FGA
/// checks, CIBA requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// The Envoy cluster to send it to; a host that calls by URL uses
    /// `scheme://authority` instead.
    pub cluster: String,
    /// `:authority`.
    pub authority: String,
    /// `:method`.
    pub method: &'static str,
    /// `:path`, query included.
    pub path: String,
    /// Other request headers.
    pub headers: Vec<(String, String)>,
    /// Request body (empty: none).
    pub body: Vec<u8>,
    /// Give up after this many milliseconds.
    pub timeout_ms: u64,
    /// The largest answer body read; a larger answer is [`Answer::TooLarge`].
    pub max_answer_bytes: usize,
}

impl Callout {
    /// A `GET` with an `accept` header.
    pub fn get(cluster: &str, authority: &str, path: &str, accept: &str) -> Callout {
        Callout {
            cluster: cluster.to_string(),
            authority: authority.to_string(),
            method: "GET",
            path: path.to_string(),
            headers: vec![("accept".to_string(), accept.to_string())],
            body: Vec::new(),
            timeout_ms: 5_000,
            max_answer_bytes: 64 * 1024,
        }
    }

    /// A `POST` of `body` with this `content-type`.
    pub fn post(
        cluster: &str,
        authority: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Callout {
        Callout {
            cluster: cluster.to_string(),
            authority: authority.to_string(),
            method: "POST",
            path: path.to_string(),
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body,
            timeout_ms: 5_000,
            max_answer_bytes: 64 * 1024,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Callout {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the timeout.
    pub fn timeout_ms(mut self, ms: u64) -> Callout {
        self.timeout_ms = ms;
        self
    }

    /// Sets the largest answer read.
    pub fn max_answer_bytes(mut self, bytes: usize) -> Callout {
        self.max_answer_bytes = bytes;
        self
    }

    /// Every header of the request, pseudo-headers first, as proxy-wasm's
    /// `dispatch_http_call` takes them.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs = Vec::with_capacity(3 + self.headers.len());
        pairs.push((":method", self.method));
        pairs.push((":path", self.path.as_str()));
        pairs.push((":authority", self.authority.as_str()));
        pairs.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        pairs
    }

    /// The call as a URL, for hosts that call by URL.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

/// What came back from a [`Callout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer.
    Response {
        /// The status code.
        status: u16,
        /// Headers, names in lower case.
        headers: Vec<(String, String)>,
        /// The body, at most the callout's `max_answer_bytes`.
        body: Vec<u8>,
    },
    /// The body was larger than the callout's `max_answer_bytes`; not read.
    TooLarge {
        /// The status code.
        status: u16,
        /// The body's size.
        size: usize,
    },
    /// No answer: the call could not be made, timed out or was reset.
    Failed,
}

impl Answer {
    /// The status, when there is an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Response { status, .. } | Answer::TooLarge { status, .. } => Some(*status),
            Answer::Failed => None,
        }
    }

    /// The body of a read answer.
    pub fn body(&self) -> Option<&[u8]> {
        match self {
            Answer::Response { body, .. } => Some(body),
            _ => None,
        }
    }

    /// A header of a read answer (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        match self {
            Answer::Response { headers, .. } => headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_of_reads_what_the_edits_set_set_one_last() {
        let edits = Edits {
            set: Arc::new(vec![
                ("x-agentward-sub".into(), "alice".into()),
                (":path".into(), "/shared".into()),
            ]),
            ..Edits::set(":path", "/docs".into())
        }
        .removing("authorization");
        assert_eq!(edits.value_of("x-agentward-sub"), Some("alice"));
        assert_eq!(edits.value_of(":path"), Some("/docs"));
        assert_eq!(edits.value_of("authorization"), None);
        assert_eq!(edits.value_of("x-agentward-agent"), None);
        assert_eq!(Edits::none().value_of(":path"), None);
    }

    #[test]
    fn a_callout_lists_pseudo_headers_first() {
        let call = Callout::post(
            "vault",
            "vault.local",
            "/oauth/token",
            "application/x-www-form-urlencoded",
            b"a=b".to_vec(),
        )
        .header("authorization", "Basic x")
        .timeout_ms(900);
        assert_eq!(
            call.header_pairs(),
            vec![
                (":method", "POST"),
                (":path", "/oauth/token"),
                (":authority", "vault.local"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", "Basic x"),
            ]
        );
        assert_eq!(call.timeout_ms, 900);
        assert_eq!(call.url("http"), "http://vault.local/oauth/token");
    }

    #[test]
    fn an_answer_gives_status_body_and_headers() {
        let answer = Answer::Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        };
        assert_eq!(answer.status(), Some(200));
        assert_eq!(answer.body(), Some(&b"{}"[..]));
        assert_eq!(answer.header("Content-Type"), Some("application/json"));
        assert_eq!(
            Answer::TooLarge {
                status: 200,
                size: 9
            }
            .body(),
            None
        );
        assert_eq!(Answer::Failed.status(), None);
    }

    #[test]
    fn edits_apply_to_a_header_list_as_envoy_makes_them() {
        let edits = Edits {
            remove: vec!["x-agentward-sub".into(), "authorization".into()],
            set: std::sync::Arc::new(vec![("X-Agentward-Sub".into(), "alice".into())]),
            set_one: Some((":path", "/b".into())),
        };
        let mut headers: Vec<(String, String)> = [
            ("x-agentward-sub", "mallory"),
            ("cookie", "a"),
            ("authorization", "Bearer t"),
            ("cookie", "b"),
            ("authorization", "Bearer u"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let mut path = "/a".to_string();
        let applied = edits.apply(&mut headers, &mut path, str::to_string);
        assert_eq!(path, "/b");
        let kept: Vec<_> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        assert_eq!(kept, ["cookie: a", "cookie: b", "x-agentward-sub: alice"]);
        assert_eq!(
            applied.removed,
            ["authorization"],
            "set again is not removed"
        );
        assert_eq!(
            applied.set,
            [
                ("x-agentward-sub".to_string(), "alice".to_string()),
                (":path".to_string(), "/b".to_string())
            ]
        );
        // A header set alone replaces every value the request had.
        let mut headers = vec![("authorization".to_string(), b"Bearer t".to_vec())];
        let set = Edits::set("authorization", "Bearer upstream".into());
        let applied = set.apply(&mut headers, &mut path, |v| v.as_bytes().to_vec());
        assert_eq!(
            headers,
            [("authorization".to_string(), b"Bearer upstream".to_vec())]
        );
        assert!(applied.removed.is_empty());
    }
}
