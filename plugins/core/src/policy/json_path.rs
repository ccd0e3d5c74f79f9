//! The field a JSON error is at, from its line and column: the policy is
//! parsed by plain `serde_json`, and when it fails, the document is walked
//! again up to the error's position to name the field (`routes[1].scopes`).
//!
//! This stands in for wrapping the deserializer in `serde_path_to_error`,
//! which names fields the same way but copies every type's deserialisation
//! code into its wrapper: ~40 KiB in each Spin component and Envoy plugin.
//! The walk is only done on the error path. `tests/policy_errors.rs` checks
//! that both name the same field for every wrong value, refused string and
//! unknown field of the shipped policies, but for one case it names: an
//! unknown field beside an enum's variant, where the walk names a field
//! inside the variant.

/// Deserializes a string and parses it with `parse` while the deserializer
/// is still on it, so a refusal carries the string's position and
/// [`at`] names its field. (Parsing after `String::deserialize` returned
/// would leave the position at whatever the enclosing object read next: the
/// object's closing brace, for its last field.)
pub fn parsed_str<'de, D, T, E>(
    deserializer: D,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    E: std::fmt::Display,
{
    struct Parse<T, E>(fn(&str) -> Result<T, E>);
    impl<T, E: std::fmt::Display> serde::de::Visitor<'_> for Parse<T, E> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<Er: serde::de::Error>(self, v: &str) -> Result<T, Er> {
            (self.0)(v).map_err(Er::custom)
        }
    }
    deserializer.deserialize_str(Parse(parse))
}

/// The JSON shape a [`checked`] value is read as.
pub enum Shape {
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

/// Deserializes a `W` of `shape` and checks it with `check` while the
/// deserializer is still inside it, so a refusal carries the value's
/// position and [`at`] names its field (as [`parsed_str`] does for strings).
pub fn checked<'de, D, W, T, E>(
    deserializer: D,
    shape: Shape,
    expecting: &'static str,
    check: fn(W) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    W: serde::Deserialize<'de>,
    E: std::fmt::Display,
{
    use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
    use serde::de::{Error, MapAccess, SeqAccess};
    struct Check<W, T, E>(&'static str, fn(W) -> Result<T, E>);
    impl<'de, W: serde::Deserialize<'de>, T, E: std::fmt::Display> serde::de::Visitor<'de>
        for Check<W, T, E>
    {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            (self.1)(W::deserialize(MapAccessDeserializer::new(map))?).map_err(A::Error::custom)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            (self.1)(W::deserialize(SeqAccessDeserializer::new(seq))?).map_err(A::Error::custom)
        }
    }
    let visitor = Check(expecting, check);
    match shape {
        Shape::Object => deserializer.deserialize_map(visitor),
        Shape::Array => deserializer.deserialize_seq(visitor),
    }
}

/// Where the walk is inside one container.
enum Frame {
    /// Inside an object; the key whose value is being read, once read.
    Object(Option<String>),
    /// Inside an array, at this element.
    Array(usize),
}

/// The path (`routes[1].scopes`, `.` for the document itself) of the value
/// being read at `line` (1-based) and `column` (bytes into the line, as
/// `serde_json::Error` gives them; `syntax`: the error's category is
/// [`serde_json::error::Category::Syntax`]). A value's path holds until the comma
/// after it, so an error raised at a value's end names that value, and one
/// raised at an object's closing brace (a missing field) names the object.
pub fn at(json: &[u8], line: usize, column: usize, syntax: bool) -> String {
    let mut end = offset(json, line, column).min(json.len());
    // A syntax error at a bracket counts the bracket it peeked at and
    // refused (`[` where a name was expected opens no array the error is
    // inside); a data error's position (a wrong type, an unknown field) ends
    // at what was read.
    if syntax && end > 0 && matches!(json[end - 1], b'[' | b'{') {
        end -= 1;
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < end {
        match json[i] {
            b'{' => stack.push(Frame::Object(None)),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object(key)) => *key = None,
                Some(Frame::Array(index)) => *index += 1,
                None => {}
            },
            b'"' => {
                let (text, next) = string(json, i + 1, end);
                if let Some(Frame::Object(key @ None)) = stack.last_mut() {
                    *key = Some(text);
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    render(&stack)
}

/// The byte offset of a 1-based line and a column of bytes into it.
fn offset(json: &[u8], line: usize, column: usize) -> usize {
    let start = json
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(line.saturating_sub(2))
        .map_or(0, |(at, _)| if line > 1 { at + 1 } else { 0 });
    start + column
}

/// A string's text from just after its opening quote, read no further than
/// `end`, and the index after its closing quote.
fn string(json: &[u8], mut i: usize, end: usize) -> (String, usize) {
    let mut text = Vec::new();
    while i < end {
        match json[i] {
            b'"' => return (String::from_utf8_lossy(&text).into_owned(), i + 1),
            b'\\' => {
                let escaped = json.get(i + 1).copied().unwrap_or(b'\\');
                i += 2;
                match escaped {
                    b'n' => text.push(b'\n'),
                    b't' => text.push(b'\t'),
                    b'r' => text.push(b'\r'),
                    b'b' => text.push(0x08),
                    b'f' => text.push(0x0c),
                    b'u' => {
                        let (c, next) = unicode(json, i);
                        let mut buf = [0; 4];
                        text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i = next;
                    }
                    other => text.push(other),
                }
            }
            b => {
                text.push(b);
                i += 1;
            }
        }
    }
    (String::from_utf8_lossy(&text).into_owned(), end)
}

/// The character of a `\u` escape whose four hex digits start at `i` (with
/// its low surrogate's escape when it is a high one), and the index after.
fn unicode(json: &[u8], i: usize) -> (char, usize) {
    let hex = |at: usize| {
        json.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let Some(first) = hex(i) else {
        return (char::REPLACEMENT_CHARACTER, i);
    };
    if (0xD800..0xDC00).contains(&first) && json.get(i + 4..i + 6) == Some(b"\\u") {
        if let Some(low @ 0xDC00..0xE000) = hex(i + 6) {
            let c = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
            return (
                char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER),
                i + 10,
            );
        }
    }
    (
        char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER),
        i + 4,
    )
}

/// `a.b[2].c`, as `serde_path_to_error` writes a path; `.` when empty.
fn render(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    if path.is_empty() {
        path.push('.');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::at;

    fn path_of_error<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        let e = serde_json::from_str::<T>(json).unwrap_err();
        let syntax = e.classify() == serde_json::error::Category::Syntax;
        at(json.as_bytes(), e.line(), e.column(), syntax)
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u64,
        #[serde(default)]
        s: Vec<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
        #[serde(default)]
        name: String,
    }

    #[test]
    fn names_the_value_an_error_is_at() {
        let cases = [
            (r#"{"items": [{"n": 1}, {"n": "x"}]}"#, "items[1].n"),
            (
                r#"{"items": [{"n": 1}, {"n": 2, "s": [1]}]}"#,
                "items[1].s[0]",
            ),
            (r#"{"items": [{"n": 1, "s": ["a", {}]}]}"#, "items[0].s[1]"),
            (r#"{"items": [{"m": 1}]}"#, "items[0].m"),
            (r#"{"items": [{}]}"#, "items[0]"),
            (r#"{"name": "x"}"#, "."),
            (r#"{"items": [], "name": 3}"#, "name"),
            (
                "{\n  \"items\": [\n    {\"n\": 1},\n    {\"n\": true}\n  ]\n}",
                "items[1].n",
            ),
            (r#"{"items": [{"n\u0041": 1}]}"#, "items[0].nA"),
            (r#"{"items": [{"n": 1}], "x\"y": 1}"#, "x\"y"),
        ];
        for (json, path) in cases {
            assert_eq!(path_of_error::<Outer>(json), path, "{json}");
        }
    }

    #[test]
    fn syntax_errors_name_where_the_walk_stopped() {
        assert_eq!(
            path_of_error::<Outer>(r#"{"items": [{"n": 1,}]}"#),
            "items[0]"
        );
        assert_eq!(
            path_of_error::<Outer>(r#"{"items": [{"n": 1"#),
            "items[0].n"
        );
        assert_eq!(path_of_error::<Outer>(""), ".");
    }
}
