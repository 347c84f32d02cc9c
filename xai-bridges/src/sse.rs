//! Server-sent events framing: splitting a byte stream into complete events.

use std::borrow::Cow;

use memchr::{memchr, memchr2};

/// Finds the end of the first complete event in `buf` (the index just past its blank line), accepting `\n\n`,
/// `\r\n\r\n` and `\r\r` separators.
///
/// One pass over the buffer: the separator that starts first also ends first (none of them can start inside
/// another and end before it), so the first line break that opens a separator decides.
pub fn event_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = memchr2(b'\n', b'\r', buf.get(at..)?) {
        let i = at + i;
        match (buf[i], buf.get(i + 1)) {
            (b'\n', Some(b'\n')) | (b'\r', Some(b'\r')) => return Some(i + 2),
            (b'\r', Some(b'\n')) if buf.get(i + 2..i + 4) == Some(b"\r\n") => return Some(i + 4),
            _ => at = i + 1,
        }
    }
    None
}

/// The lines of an event, split on `\n`, each without its trailing `\r`.
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(event);
    std::iter::from_fn(move || {
        let r = rest?;
        let line = match memchr(b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                &r[..i]
            }
            None => {
                rest = None;
                r
            }
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// The value of a `field:` line (one optional space after the colon removed).
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// The `event:` name and the `data:` payload (several `data:` lines joined by `\n`, borrowed when there is one
/// line) of an event, in one pass over its lines.
pub fn parse(event: &[u8]) -> (Option<&[u8]>, Option<Cow<'_, [u8]>>) {
    let (mut name, mut out): (Option<&[u8]>, Option<Cow<'_, [u8]>>) = (None, None);
    for line in lines(event) {
        if let Some(rest) = field(line, b"data") {
            out = Some(match out {
                None => Cow::Borrowed(rest),
                Some(prev) => {
                    let mut v = prev.into_owned();
                    v.push(b'\n');
                    v.extend_from_slice(rest);
                    Cow::Owned(v)
                }
            });
        } else if name.is_none() {
            name = field(line, b"event");
        }
    }
    (name, out)
}

/// The `data:` payload of an event (several `data:` lines joined by `\n`), borrowed when there is one line.
pub fn data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    parse(event).1
}

/// The `event:` name of an event.
pub fn event_name(event: &[u8]) -> Option<&[u8]> {
    lines(event).find_map(|l| field(l, b"event"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_events() {
        assert_eq!(event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\nx"), Some(11));
        assert_eq!(event_end(b"data: a\n"), None);
        assert_eq!(data(b"event: x\ndata: {\"a\":1}\n\n").as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(data(b"data: a\ndata: b\n\n").as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(data(b": comment\n\n"), None);
        assert_eq!(event_name(b"event: message_stop\r\ndata: {}\r\n\r\n"), Some(&b"message_stop"[..]));
    }

    /// The three-search definition `event_end` must agree with: the earliest end of any separator.
    fn event_end_reference(buf: &[u8]) -> Option<usize> {
        use memchr::memmem;
        let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
        let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
        let cr = memmem::find(buf, b"\r\r").map(|i| i + 2);
        [lf, crlf, cr].into_iter().flatten().min()
    }

    #[test]
    fn mixed_separators() {
        for (buf, end) in [
            (&b"a\r\n\r\r"[..], Some(5)),
            (b"a\r\r\n\r\n", Some(3)),
            (b"a\n\r\n\r\n", Some(6)),
            (b"a\r\n\r", None),
            (b"a\r\n\n", Some(4)),
            (b"\n\n", Some(2)),
            (b"", None),
        ] {
            assert_eq!(event_end(buf), end, "{buf:?}");
            assert_eq!(event_end(buf), event_end_reference(buf), "{buf:?}");
        }
        assert_eq!(parse(b"event: e\r\ndata: 1\r\ndata: 2\r\n"), (Some(&b"e"[..]), Some(Cow::Owned(b"1\n2".to_vec()))));
        assert_eq!(parse(b"data:x"), (None, Some(Cow::Borrowed(&b"x"[..]))));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = event_end(&bytes);
            let _ = data(&bytes);
            let _ = event_name(&bytes);
        }

        /// Line breaks and text in any mix: the one-pass search finds what the three searches found.
        #[test]
        fn event_end_matches_reference(parts in proptest::collection::vec(prop_oneof![
            Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"\r\n"[..]), Just(&b"data: x"[..]), Just(&b":"[..])
        ], 0..24)) {
            let buf = parts.concat();
            prop_assert_eq!(event_end(&buf), event_end_reference(&buf));
            prop_assert_eq!(parse(&buf).0, event_name(&buf));
        }
    }
}
