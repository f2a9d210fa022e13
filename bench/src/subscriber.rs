//! One SSE subscriber: a raw HTTP/1.1 GET over its own TCP connection, read
//! through the worker's shared scratch buffer, so an idle connection costs a
//! socket, a small task and its counters — not a read buffer.

use crate::http::{self, BodyDecoder};
use crate::sse::{Item, SseParser};
use crate::worker::Ctx;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// Attempts to open a stream before the subscriber gives up.
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open stream: the socket and where its parsers stand.
struct Stream {
    socket: TcpStream,
    body: BodyDecoder,
    parser: SseParser,
    /// Body bytes that came with the response head.
    early: Vec<u8>,
}

/// Why reading a stream stopped.
enum End {
    Storm,
    Closed(String),
    Shutdown,
}

/// Runs subscriber `local` of this worker until it gives up or the worker exits.
pub async fn run(ctx: Rc<Ctx>, local: usize) {
    let mut storm = ctx.storm.subscribe();
    let mut generation = *storm.borrow_and_update();
    let mut unasked_left = ctx.spec.max_reconnects;
    let mut failures = 0;
    let mut first = true;
    loop {
        let pacer = if generation == 0 {
            &ctx.pacer
        } else {
            &ctx.storm_pacer
        };
        pacer.acquire().await;
        let started = Instant::now();
        let stream = match open(&ctx, local).await {
            Ok(stream) => stream,
            Err(e) => {
                ctx.note_connect_error(e);
                failures += 1;
                if failures >= CONNECT_ATTEMPTS {
                    ctx.give_up(local, first);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                continue;
            }
        };
        failures = 0;
        ctx.now_live(local, generation, started.elapsed(), first);
        first = false;
        match read(&ctx, local, stream, &mut storm).await {
            End::Storm => generation = *storm.borrow_and_update(),
            End::Shutdown => return,
            End::Closed(why) => {
                ctx.note_error(why);
                if unasked_left == 0 {
                    ctx.give_up(local, false);
                    return;
                }
                unasked_left -= 1;
                ctx.reconnects.set(ctx.reconnects.get() + 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn open(ctx: &Ctx, local: usize) -> Result<Stream, String> {
    let target = &ctx.target;
    let global = ctx.global_index(local);
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if target.is_loopback()
        && target.addr.is_ipv4()
        && let Some(ip) = crate::target::source_ip(global, ctx.spec.source_addrs)
    {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let mut socket = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target.addr))
        .await
        .map_err(|_| "connect: timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    socket
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let request = ctx.request_for(local);
    let head = tokio::time::timeout(CONNECT_TIMEOUT, async {
        socket.write_all(request.as_bytes()).await?;
        read_head(&mut socket).await
    })
    .await
    .map_err(|_| "response head: timed out".to_owned())?
    .map_err(|e| format!("response head: {e}"))?;
    let (head, early) = head;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    Ok(Stream {
        socket,
        body: BodyDecoder::new(head.framing),
        parser: SseParser::default(),
        early,
    })
}

async fn read_head(socket: &mut TcpStream) -> std::io::Result<(http::Head, Vec<u8>)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = http::head_end(&buf) {
            let head = http::parse_head(&buf[..end]).map_err(std::io::Error::other)?;
            return Ok((head, buf[end..].to_vec()));
        }
        if buf.len() > http::MAX_HEAD {
            return Err(std::io::Error::other(http::HttpError::HeadTooLong));
        }
    }
}

async fn read(
    ctx: &Ctx,
    local: usize,
    mut stream: Stream,
    storm: &mut watch::Receiver<u32>,
) -> End {
    let early = std::mem::take(&mut stream.early);
    if let Err(e) = ctx.deliver(local, &mut stream.body, &mut stream.parser, &early) {
        return End::Closed(e);
    }
    loop {
        tokio::select! {
            ready = stream.socket.readable() => {
                if let Err(e) = ready {
                    return End::Closed(format!("read: {e}"));
                }
                let mut scratch = ctx.scratch.borrow_mut();
                match stream.socket.try_read(&mut scratch) {
                    Ok(0) => return End::Closed("server closed the stream".to_owned()),
                    Ok(n) => {
                        if let Err(e) = ctx.deliver(local, &mut stream.body, &mut stream.parser, &scratch[..n]) {
                            return End::Closed(e);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return End::Closed(format!("read: {e}")),
                }
            }
            changed = storm.changed() => {
                return if changed.is_ok() { End::Storm } else { End::Shutdown };
            }
        }
    }
}

/// Feeds body bytes through the decoders into the subscriber's counters.
pub fn feed(
    body: &mut BodyDecoder,
    parser: &mut SseParser,
    input: &[u8],
    on_item: &mut impl FnMut(Item<'_>),
) -> Result<(), String> {
    let mut line_error = None;
    body.feed(input, &mut |bytes| {
        if line_error.is_none()
            && let Err(e) = parser.feed(bytes, on_item)
        {
            line_error = Some(e.to_string());
        }
    })
    .map_err(|e| e.to_string())?;
    match line_error {
        Some(e) => Err(e),
        None if body.is_done() => Err("stream body ended".to_owned()),
        None => Ok(()),
    }
}
