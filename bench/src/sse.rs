//! Incremental Server-Sent Events parser that keeps only what the benchmark
//! needs: the `id:` of each event and the `bench <seq> <nanos> [<acked>]`
//! stamp found anywhere in its `data:` lines (Crier wraps the text in JSON, Nchan sends it
//! raw). A partial line is the only thing buffered between reads.

/// Longest SSE line we accept before calling the stream broken.
pub const MAX_LINE: usize = 1024 * 1024;

/// The stamp a publisher puts into each message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number of the message within its channel, from 1.
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch.
    pub nanos: u64,
    /// Every message of the channel up to this one was acknowledged before
    /// this one was sent (0 when the text has no such field).
    pub acked: u64,
}

/// What a complete line means to the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// An `id:` field: the value to send back as `Last-Event-ID`.
    Id(&'a [u8]),
    /// The end of an event that carried a stamp.
    Event(Stamp),
}

#[derive(Debug, thiserror::Error)]
#[error("SSE line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    pending: Option<Stamp>,
}

impl SseParser {
    /// Parses body bytes, calling `out` for each id and each stamped event.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut impl FnMut(Item<'_>),
    ) -> Result<(), LineTooLong> {
        while let Some(end) = input.iter().position(|&b| b == b'\n') {
            if self.line.is_empty() {
                self.line_done(&input[..end], out);
            } else {
                self.line.extend_from_slice(&input[..end]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out);
            }
            input = &input[end + 1..];
        }
        if self.line.len() + input.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(input);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut impl FnMut(Item<'_>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some(stamp) = self.pending.take() {
                out(Item::Event(stamp));
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"data" if self.pending.is_none() => self.pending = find_stamp(value),
            b"id" if !value.contains(&0) => out(Item::Id(value)),
            _ => {}
        }
    }
}

/// Finds the first `bench <seq> <nanos>` (optionally ` <acked>`) in `hay`.
pub fn find_stamp(hay: &[u8]) -> Option<Stamp> {
    const MARK: &[u8] = b"bench ";
    let mut from = 0;
    while let Some(at) = hay[from..].windows(MARK.len()).position(|w| w == MARK) {
        let rest = &hay[from + at + MARK.len()..];
        if let Some((seq, rest)) = number(rest)
            && let Some(rest) = rest.strip_prefix(b" ")
            && let Some((nanos, rest)) = number(rest)
        {
            let acked = rest
                .strip_prefix(b" ")
                .and_then(number)
                .map_or(0, |(acked, _)| acked);
            return Some(Stamp { seq, nanos, acked });
        }
        from += at + 1;
    }
    None
}

fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let text = std::str::from_utf8(&s[..digits]).ok()?;
    Some((text.parse().ok()?, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(wire: &[u8], piece: usize) -> (Vec<String>, Vec<Stamp>) {
        let mut parser = SseParser::default();
        let (mut ids, mut stamps) = (Vec::new(), Vec::new());
        for part in wire.chunks(piece) {
            parser
                .feed(part, &mut |item| match item {
                    Item::Id(id) => ids.push(String::from_utf8_lossy(id).into_owned()),
                    Item::Event(stamp) => stamps.push(stamp),
                })
                .expect("short lines");
        }
        (ids, stamps)
    }

    #[test]
    fn crier_and_nchan_events_parse_whatever_the_read_sizes() {
        let wire = b"retry: 3000\n\n: keep-alive\n\n\
            id: 7\nevent: message\ndata: {\"id\":7,\"author\":\"bench\",\"text\":\"bench 7 1700000000123456789 5\"}\n\n\
            id: 1700000000:0\r\ndata: bench 8 1700000000999\r\n\r\n\
            data: not ours\n\n";
        for piece in 1..wire.len() {
            let (ids, stamps) = parse_in_pieces(wire, piece);
            assert_eq!(ids, ["7", "1700000000:0"], "read size {piece}");
            assert_eq!(
                stamps,
                [
                    Stamp {
                        seq: 7,
                        nanos: 1_700_000_000_123_456_789,
                        acked: 5
                    },
                    Stamp {
                        seq: 8,
                        nanos: 1_700_000_000_999,
                        acked: 0
                    },
                ],
                "read size {piece}"
            );
        }
    }

    #[test]
    fn stamp_is_found_after_false_starts() {
        assert_eq!(
            find_stamp(b"\"author\":\"bench \",\"text\":\"bench x\" bench 3 44"),
            Some(Stamp {
                seq: 3,
                nanos: 44,
                acked: 0
            })
        );
        assert_eq!(find_stamp(b"bench 3"), None);
        assert_eq!(find_stamp(b"bench 99999999999999999999 1"), None);
    }

    #[test]
    fn overlong_line_is_an_error() {
        let mut parser = SseParser::default();
        let big = vec![b'x'; MAX_LINE + 1];
        assert!(parser.feed(&big, &mut |_| {}).is_err());
    }
}
