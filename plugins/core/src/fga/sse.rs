//! `text/event-stream` framing (the WHATWG server-sent events format), as
//! MCP's Streamable HTTP sends a POST's answer: events separated by a
//! blank line, each of `field: value` lines, `data` lines joined by `\n`.
//! Read whole (a buffered response), events changed, written back with
//! every other line as it came.

/// One event: its lines, in order, as `(field, value)`; a comment line
/// (`: …`) has the field `""`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    lines: Vec<(String, String)>,
}

/// A stream: its events, and whether the last one was ended by a blank
/// line (an unended event is one a client would drop; it stays unended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The events, in order.
    pub events: Vec<Event>,
    ended: bool,
}

impl Event {
    /// The event's data: its `data` lines joined by `\n`; `None` without any.
    pub fn data(&self) -> Option<String> {
        let mut data: Option<String> = None;
        for (field, value) in &self.lines {
            if field == "data" {
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.clone()),
                }
            }
        }
        data
    }

    /// Replaces the data with one line (`data` must hold no line break),
    /// where the first `data` line was.
    pub fn set_data(&mut self, data: &str) {
        let first = self.lines.iter().position(|(f, _)| f == "data");
        self.lines.retain(|(f, _)| f != "data");
        let at = first.unwrap_or(self.lines.len()).min(self.lines.len());
        self.lines
            .insert(at, ("data".into(), data.replace(['\r', '\n'], "")));
    }
}

/// Reads a stream; `None` when it is not UTF-8.
pub fn parse(body: &[u8]) -> Option<Stream> {
    let text = std::str::from_utf8(body).ok()?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut events = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    let mut ended = true;
    // Lines end with CRLF, LF or CR.
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines = normalised.split('\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if last && line.is_empty() {
            break;
        }
        if line.is_empty() {
            if !current.is_empty() {
                events.push(Event {
                    lines: std::mem::take(&mut current),
                });
            }
            ended = true;
            continue;
        }
        ended = false;
        let (field, value) = match line.split_once(':') {
            // A comment is kept as it came.
            Some(("", v)) => ("", v),
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        current.push((field.to_string(), value.to_string()));
    }
    if !current.is_empty() {
        events.push(Event { lines: current });
        ended = false;
    }
    Some(Stream { events, ended })
}

impl Stream {
    /// The stream written back: LF line ends, a blank line after each
    /// event (not after an unended last one).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for (i, event) in self.events.iter().enumerate() {
            for (field, value) in &event.lines {
                if field.is_empty() {
                    out.push(':');
                    out.push_str(value);
                } else {
                    out.push_str(field);
                    out.push_str(": ");
                    out.push_str(value);
                }
                out.push('\n');
            }
            if self.ended || i + 1 < self.events.len() {
                out.push('\n');
            }
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_and_written_back_with_their_other_lines() {
        let body = b"event: message\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: keep-alive\n\ndata: x\n\n";
        let mut s = parse(body).unwrap();
        assert_eq!(s.events.len(), 3);
        assert_eq!(s.events[0].data().as_deref(), Some("{\"a\":\n1}"));
        assert_eq!(s.events[1].data(), None);
        s.events[0].set_data("{\"a\":2}");
        assert_eq!(
            String::from_utf8(s.to_bytes()).unwrap(),
            "event: message\nid: 1\ndata: {\"a\":2}\n\n: keep-alive\n\ndata: x\n\n"
        );
    }

    #[test]
    fn an_unended_last_event_stays_unended() {
        let s = parse(b"data: 1\n\ndata: 2").unwrap();
        assert_eq!(s.events.len(), 2);
        assert_eq!(
            String::from_utf8(s.to_bytes()).unwrap(),
            "data: 1\n\ndata: 2\n"
        );
        assert!(parse(&[0xff, 0xfe]).is_none());
        assert_eq!(parse(b"").unwrap().events.len(), 0);
    }
}
