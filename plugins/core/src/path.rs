//! The request path as routes see it: RFC 3986 §6.2.2 syntax-based
//! normalization of `:path`, so a rule on `/trades` also covers `//trades`,
//! `/%74rades` and `/x/../trades`, and the gateway sends the upstream exactly
//! the path its rules were matched against. It agrees with what Envoy makes
//! of a path with `normalize_path` and `merge_slashes` set (checked on Envoy
//! 1.40): on a path Envoy already normalised it changes nothing.
//!
//! What cannot be normalised unambiguously is refused: an encoded `/`, `\`
//! or NUL (upstreams disagree on whether `%2F` separates segments), a bare
//! `\`, a fragment, a `%` not followed by two hex digits, and bytes that are
//! not visible ASCII.

use std::borrow::Cow;
use std::fmt;

/// A `:path` split into its normalised path and its query (untouched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// The normalised path, borrowed when it was already normal.
    pub path: Cow<'a, str>,
    /// The query, without its `?`, as sent.
    pub query: Option<&'a str>,
}

impl RequestTarget<'_> {
    /// Whether the path was already in normal form (nothing to rewrite).
    pub fn was_normal(&self) -> bool {
        matches!(self.path, Cow::Borrowed(_))
    }
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// Not an origin-form path (`/…`).
    NotOrigin,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
    /// `%2F`: one upstream reads a separator, another part of a segment.
    EncodedSlash,
    /// `%5C`, or a bare `\`: some upstreams read it as `/`.
    Backslash,
    /// `%00`.
    EncodedNul,
    /// A `#` fragment: clients never send one.
    Fragment,
    /// A byte that is not visible ASCII.
    BadByte,
}

impl PathRefusal {
    /// A human description for `error_description`; never echoes the path.
    pub fn description(self) -> &'static str {
        match self {
            PathRefusal::NotOrigin => "the request path must start with `/`",
            PathRefusal::BadPercentEncoding => {
                "the request path has a `%` that is not followed by two hex digits"
            }
            PathRefusal::EncodedSlash => {
                "the request path has an encoded `/` (%2F), which upstreams read differently"
            }
            PathRefusal::Backslash => {
                "the request path has a `\\` (or %5C), which upstreams read differently"
            }
            PathRefusal::EncodedNul => "the request path has an encoded NUL (%00)",
            PathRefusal::Fragment => "the request path has a `#` fragment",
            PathRefusal::BadByte => "the request path has a byte that is not visible ASCII",
        }
    }
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// RFC 3986 §2.3 unreserved characters: decoding them changes no meaning.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises a `:path` (query included): percent-encoded unreserved
/// characters are decoded (other encodings are kept as sent), dot segments
/// removed (RFC 3986 §5.2.4), then empty segments merged (`//` → `/`).
pub fn normalize(raw: &str) -> Result<RequestTarget<'_>, PathRefusal> {
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    if !path.starts_with('/') {
        return Err(PathRefusal::NotOrigin);
    }
    let bytes = path.as_bytes();
    let mut plain = true;
    let mut previous = 0u8;
    for &b in bytes {
        match b {
            b'#' => return Err(PathRefusal::Fragment),
            b'\\' => return Err(PathRefusal::Backslash),
            b'%' => plain = false,
            b'/' if previous == b'/' => plain = false,
            b'.' if previous == b'/' => plain = false,
            0x21..=0x7e => {}
            _ => return Err(PathRefusal::BadByte),
        }
        previous = b;
    }
    if plain {
        return Ok(RequestTarget {
            path: Cow::Borrowed(path),
            query,
        });
    }
    let decoded = decode_unreserved(bytes)?;
    let normal = remove_dot_segments_and_merge_slashes(&decoded);
    let path = if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    };
    Ok(RequestTarget { path, query })
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, PathRefusal> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathRefusal::BadPercentEncoding);
        };
        let value = hi * 16 + lo;
        match value {
            b'/' => return Err(PathRefusal::EncodedSlash),
            b'\\' => return Err(PathRefusal::Backslash),
            0 => return Err(PathRefusal::EncodedNul),
            v if is_unreserved(v) => out.push(char::from(v)),
            _ => {
                // Kept as sent (hex case included), as Envoy keeps it.
                for &c in &bytes[i..i + 3] {
                    out.push(char::from(c));
                }
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Dot segments first, with empty segments counted as segments (as RFC 3986
/// and Envoy's `normalize_path` do: `/a//../b` is `/a/b`), then empty
/// segments dropped (Envoy's `merge_slashes`). A trailing `/` is kept, and
/// so is the directory a trailing `.` or `..` names.
fn remove_dot_segments_and_merge_slashes(path: &str) -> String {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in rest.split('/') {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.retain(|s| !s.is_empty());
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// The query without any `name=…` (or bare `name`) parameter; `None` when
/// there was none to remove. Other parameters keep their order and bytes.
pub fn without_query_param(query: &str, name: &str) -> Option<String> {
    let is_it = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k) == name;
    if !query.split('&').any(is_it) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_it(p))
        .collect();
    Some(kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> String {
        normalize(raw).unwrap().path.into_owned()
    }

    #[test]
    fn bypass_spellings_normalise_to_the_route_they_reach() {
        for raw in [
            "/trades",
            "//trades",
            "/%74rades",
            "/%74%72%61%64%65%73",
            "/x/../trades",
            "/./trades",
            "/../trades",
            "/a/b/../../trades",
            "/x/%2E%2E/trades",
            "/x/%2e%2e/trades",
            "///x/..//trades",
        ] {
            assert_eq!(norm(raw), "/trades", "{raw}");
        }
    }

    #[test]
    fn what_envoy_normalize_path_and_merge_slashes_produce_on_envoy_1_40() {
        // Measured: `curl --path-as-is` through Envoy 1.40 with both options on.
        for (raw, envoy) in [
            ("/%7e%41", "/~A"),
            ("/a%20b", "/a%20b"),
            ("/caf%c3%a9", "/caf%c3%a9"),
            ("/%25", "/%25"),
            ("/trades%3F", "/trades%3F"),
            ("/a%2e%2e/b", "/a../b"),
            ("/a/%2e./b", "/b"),
            ("/trades/", "/trades/"),
            ("/a/./b", "/a/b"),
            ("/trades;x", "/trades;x"),
            ("/a//../b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/a/%2e", "/a/"),
            ("/%2E", "/"),
        ] {
            assert_eq!(norm(raw), envoy, "{raw}");
        }
    }

    #[test]
    fn a_normal_path_is_borrowed_and_unchanged() {
        for raw in ["/", "/trades", "/a/b/", "/a.b/c..d/.e", "/caf%C3%A9"] {
            let t = normalize(raw).unwrap();
            assert!(t.was_normal(), "{raw}");
            assert_eq!(t.path, raw);
        }
        assert!(!normalize("//trades").unwrap().was_normal());
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for raw in ["//a/./b/../c/", "/%41%2e%2E/x", "/a/..", "/a/.", "/.."] {
            let once = norm(raw);
            assert_eq!(norm(&once), once, "{raw}");
        }
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
    }

    #[test]
    fn the_query_is_split_off_and_left_as_sent() {
        let t = normalize("//trades?x=%2F&y=//..").unwrap();
        assert_eq!(t.path, "/trades");
        assert_eq!(t.query, Some("x=%2F&y=//.."));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (raw, why) in [
            ("/trades%2Fx", PathRefusal::EncodedSlash),
            ("/trades%2fx", PathRefusal::EncodedSlash),
            ("/trades%5Cx", PathRefusal::Backslash),
            ("/trades\\x", PathRefusal::Backslash),
            ("/trades%00", PathRefusal::EncodedNul),
            ("/tr%zzades", PathRefusal::BadPercentEncoding),
            ("/trades%2", PathRefusal::BadPercentEncoding),
            ("/trades%", PathRefusal::BadPercentEncoding),
            ("/trades#x", PathRefusal::Fragment),
            ("/tr ades", PathRefusal::BadByte),
            ("/tr\u{e9}des", PathRefusal::BadByte),
            ("/tr\tades", PathRefusal::BadByte),
            ("*", PathRefusal::NotOrigin),
            ("trades", PathRefusal::NotOrigin),
            ("", PathRefusal::NotOrigin),
        ] {
            assert_eq!(normalize(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn a_query_parameter_is_removed_wherever_it_is() {
        assert_eq!(
            without_query_param("access_token=t", "access_token").as_deref(),
            Some("")
        );
        assert_eq!(
            without_query_param("x=1&access_token=t&y=2&access_token=u", "access_token").as_deref(),
            Some("x=1&y=2")
        );
        assert_eq!(
            without_query_param("access_token&x=%2F", "access_token").as_deref(),
            Some("x=%2F")
        );
        assert_eq!(
            without_query_param("x=1&access_tokenx=t", "access_token"),
            None
        );
        assert_eq!(without_query_param("", "access_token"), None);
    }
}
