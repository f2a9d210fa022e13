//! Just enough HTTP/1.1 for a load generator: the response head, and bodies
//! that are chunked, length-delimited or delimited by the close of the
//! connection. Everything is incremental, so a connection keeps no more than
//! the state machine between reads.

/// Longest response head we accept; real servers send a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("malformed response head: {0}")]
    Head(&'static str),
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("malformed chunked body")]
    Chunked,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Index just past the blank line that ends a response head, if it is in `buf`.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete response head (status line and headers).
pub fn parse_head(bytes: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(bytes).map_err(|_| HttpError::Head("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::Head("empty"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Head("not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Head("bad status code"))?;
    let mut close = version == "HTTP/1.0";
    let mut chunked = false;
    let mut length = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HttpError::Head("bad header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| HttpError::Head("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        status,
        framing,
        close,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailer { line_empty: bool },
    Done,
}

/// Incremental body decoder: hands out body bytes as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDecoder {
    state: Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Chunked(Chunk),
    Length(u64),
    UntilClose,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Chunked => Body::Chunked(Chunk::Size(0)),
            Framing::Length(n) => Body::Length(n),
            Framing::UntilClose => Body::UntilClose,
        };
        Self { state }
    }

    /// The body has ended (last chunk or all `Content-Length` bytes seen).
    pub fn is_done(&self) -> bool {
        matches!(self.state, Body::Chunked(Chunk::Done) | Body::Length(0))
    }

    /// Decodes from `input`, passing body bytes to `out`. Returns how many
    /// bytes of `input` belong to this body (the rest is the next response).
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<usize, HttpError> {
        match &mut self.state {
            Body::UntilClose => {
                out(input);
                Ok(input.len())
            }
            Body::Length(left) => {
                let take = (*left).min(input.len() as u64) as usize;
                *left -= take as u64;
                out(&input[..take]);
                Ok(take)
            }
            Body::Chunked(state) => feed_chunked(state, input, out),
        }
    }
}

fn feed_chunked(
    state: &mut Chunk,
    input: &[u8],
    out: &mut impl FnMut(&[u8]),
) -> Result<usize, HttpError> {
    let mut i = 0;
    while i < input.len() {
        if *state == Chunk::Done {
            return Ok(i);
        }
        if let Chunk::Data(left) = state {
            let take = (*left).min((input.len() - i) as u64) as usize;
            out(&input[i..i + take]);
            i += take;
            *left -= take as u64;
            if *left == 0 {
                *state = Chunk::DataCr;
            }
            continue;
        }
        let b = input[i];
        i += 1;
        *state = match *state {
            Chunk::Size(n) => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Chunk::Size(
                        n.checked_mul(16)
                            .and_then(|n| n.checked_add(digit))
                            .ok_or(HttpError::Chunked)?,
                    )
                }
                b';' | b' ' | b'\t' => Chunk::Extension(n),
                b'\r' => Chunk::SizeLf(n),
                b'\n' => after_size(n),
                _ => return Err(HttpError::Chunked),
            },
            Chunk::Extension(n) => match b {
                b'\r' => Chunk::SizeLf(n),
                b'\n' => after_size(n),
                _ => Chunk::Extension(n),
            },
            Chunk::SizeLf(n) if b == b'\n' => after_size(n),
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataCr | Chunk::DataLf if b == b'\n' => Chunk::Size(0),
            Chunk::Trailer { line_empty } => match b {
                b'\n' if line_empty => Chunk::Done,
                b'\n' => Chunk::Trailer { line_empty: true },
                b'\r' => Chunk::Trailer { line_empty },
                _ => Chunk::Trailer { line_empty: false },
            },
            _ => return Err(HttpError::Chunked),
        };
    }
    Ok(i)
}

fn after_size(n: u64) -> Chunk {
    if n == 0 {
        Chunk::Trailer { line_empty: true }
    } else {
        Chunk::Data(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(framing: Framing, wire: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        let mut consumed = 0;
        for part in wire.chunks(piece) {
            let used = decoder
                .feed(part, &mut |b| body.extend_from_slice(b))
                .expect("valid body");
            consumed += used;
            if used < part.len() {
                break;
            }
        }
        (body, consumed, decoder.is_done())
    }

    #[test]
    fn chunked_body_decodes_whatever_the_read_sizes() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1";
        for piece in 1..wire.len() {
            let (body, consumed, done) = decode_in_pieces(Framing::Chunked, wire, piece);
            assert_eq!(body, b"hello, world", "read size {piece}");
            assert!(done, "read size {piece}");
            assert_eq!(&wire[consumed..], b"HTTP/1.1", "read size {piece}");
        }
    }

    #[test]
    fn length_body_stops_at_content_length() {
        let (body, consumed, done) = decode_in_pieces(Framing::Length(3), b"abcdef", 2);
        assert_eq!((body.as_slice(), consumed, done), (&b"abc"[..], 3, true));
    }

    #[test]
    fn bad_chunk_size_is_an_error() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        assert!(decoder.feed(b"zz\r\n", &mut |_| {}).is_err());
    }

    #[test]
    fn head_tells_framing_and_status() {
        let head =
            parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").expect("valid");
        assert_eq!(
            (head.status, head.framing, head.close),
            (200, Framing::Chunked, false)
        );
        let head =
            parse_head(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\nConnection: close\r\n\r\n")
                .expect("valid");
        assert_eq!(
            (head.status, head.framing, head.close),
            (201, Framing::Length(12), true)
        );
        let head = parse_head(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            .expect("valid");
        assert_eq!((head.framing, head.close), (Framing::UntilClose, true));
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
