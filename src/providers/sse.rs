//! Server-sent events: splitting a byte stream into events as bytes arrive, and reading an
//! event's `event:` and `data:` fields.

use bytes::{Bytes, BytesMut};

/// Accumulates bytes and yields each complete event (a block ended by a blank line). Events are
/// split off the buffer without copying them again.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: BytesMut,
}

/// Finds the end of the first event in `buf`: the index after its blank line.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

impl SseSplitter {
    /// Adds bytes; [`Self::next_event`] then yields the events they complete.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, in order.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let end = event_end(&self.buf)?;
        Some(self.buf.split_to(end).freeze())
    }

    /// What is left when the stream ends without a final blank line, with one added.
    pub fn finish(mut self) -> Option<Bytes> {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        self.buf.extend_from_slice(b"\n\n");
        Some(self.buf.freeze())
    }
}

/// The fields of one event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    /// `data:` lines joined with `\n`; `None` when the event has none.
    pub data: Option<String>,
}

pub fn parse(block: &[u8]) -> SseEvent {
    let text = String::from_utf8_lossy(block);
    let mut out = SseEvent::default();
    for line in text.lines() {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => out.event = Some(value.to_owned()),
            "data" => match &mut out.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => out.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    out
}

/// Writes an event back as SSE text.
pub fn format(event: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event the bytes pushed so far complete.
    fn events(s: &mut SseSplitter, chunk: &[u8]) -> Vec<Bytes> {
        s.push(chunk);
        std::iter::from_fn(|| s.next_event()).collect()
    }

    #[test]
    fn events_split_across_chunks_are_reassembled_in_order() {
        let mut s = SseSplitter::default();
        assert!(events(&mut s, b"data: {\"a\"").is_empty());
        assert_eq!(
            events(&mut s, b":1}\n\ndata: [DONE]\n\ndata: par"),
            vec![&b"data: {\"a\":1}\n\n"[..], &b"data: [DONE]\n\n"[..]]
        );
        assert_eq!(s.finish().as_deref(), Some(&b"data: par\n\n"[..]));
        let mut blank = SseSplitter::default();
        blank.push(b"\n \n");
        assert_eq!(blank.finish(), None);
    }

    #[test]
    fn crlf_and_event_names_are_understood() {
        let mut s = SseSplitter::default();
        let events = events(&mut s, b"event: response.created\r\ndata: {}\r\n\r\n");
        assert_eq!(events.len(), 1);
        let e = parse(&events[0]);
        assert_eq!(e.event.as_deref(), Some("response.created"));
        assert_eq!(e.data.as_deref(), Some("{}"));
        assert_eq!(parse(b": keep-alive\n\n"), SseEvent::default());
    }

    #[test]
    fn formatting_round_trips() {
        let bytes = format(Some("x"), "{\"k\":1}");
        assert_eq!(bytes, b"event: x\ndata: {\"k\":1}\n\n");
        let e = parse(&bytes);
        assert_eq!(
            (e.event.as_deref(), e.data.as_deref()),
            (Some("x"), Some("{\"k\":1}"))
        );
    }
}
