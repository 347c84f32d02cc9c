//! Server-sent events framing: splitting a byte stream into complete events.

use memchr::memmem;

/// Finds the end of the first complete event in `buf` (the index just past its blank line), accepting `\n\n`,
/// `\r\n\r\n` and `\r\r` separators.
pub fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    let cr = memmem::find(buf, b"\r\r").map(|i| i + 2);
    [lf, crlf, cr].into_iter().flatten().min()
}

/// The `data:` payload of an event (several `data:` lines joined by `\n`), borrowed when there is one line.
pub fn data(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut out: Option<std::borrow::Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"data:") else { continue };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        out = Some(match out {
            None => std::borrow::Cow::Borrowed(rest),
            Some(prev) => {
                let mut v = prev.into_owned();
                v.push(b'\n');
                v.extend_from_slice(rest);
                std::borrow::Cow::Owned(v)
            }
        });
    }
    out
}

/// The `event:` name of an event.
pub fn event_name(event: &[u8]) -> Option<&[u8]> {
    event.split(|&b| b == b'\n').find_map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        l.strip_prefix(b"event:").map(|r| r.strip_prefix(b" ").unwrap_or(r))
    })
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

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = event_end(&bytes);
            let _ = data(&bytes);
            let _ = event_name(&bytes);
        }
    }
}
