//! The server: request heads, one request in its pooled heap, connections, acceptor, workers.

use crate::BUDGET;
use crate::MAX_DRAIN;
use crate::MAX_HEAD;
use crate::TIMEOUT;
use crate::json::HVec;
use crate::json::Refusal;
use crate::json::StackText;
use crate::json::Text;
use crate::json::answer;
use crate::json::put;
use crate::metrics::Metrics;
use crate::metrics::rss_bytes;
use isoheap::Heap;
use isoheap::HeapPool;
use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::io::Read;
use std::io::Write;
use std::net::TcpListener;
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Where an over-budget request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Reserving the buffer for the body.
    Body,
    /// Building the document's collections (or the answer).
    Document,
}

impl Stage {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Body => "body",
            Stage::Document => "document",
        }
    }
}

/// What became of one request.
pub(crate) enum Outcome {
    Served,
    OverBudget(Stage),
    /// An allocation failed without the budget refusing (the OS): 503.
    NoMemory,
    /// A request we do not accept (400, 404, 405, 411, 431, 501).
    Rejected,
}

/// What the request head says.
pub(crate) struct Head {
    content_length: usize,
    keep_alive: bool,
}

/// Parses the request line and the headers we care about. Errors are (status, reason, detail).
pub(crate) fn parse_head(head: &[u8]) -> Result<Head, (u16, &'static str, &'static str)> {
    let text = std::str::from_utf8(head).map_err(|_| (400, "Bad Request", "head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    let keep_default = match version {
        Some("HTTP/1.1") => true,
        Some("HTTP/1.0") => false,
        _ => return Err((400, "Bad Request", "not an HTTP/1.x request line")),
    };
    if method != Some("POST") {
        return Err((405, "Method Not Allowed", "only POST"));
    }
    if path != Some("/analyze") {
        return Err((404, "Not Found", "only /analyze"));
    }
    let mut head = Head {
        content_length: usize::MAX,
        keep_alive: keep_default,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err((400, "Bad Request", "malformed header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value
                .parse()
                .map_err(|_| (400, "Bad Request", "bad content-length"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                head.keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((501, "Not Implemented", "no transfer encodings"));
        }
    }
    if head.content_length == usize::MAX {
        return Err((411, "Length Required", "content-length is required"));
    }
    Ok(head)
}

/// Sends a small JSON error answer built on the stack.
pub(crate) fn reply_error(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    body: fmt::Arguments<'_>,
    keep_alive: bool,
) -> io::Result<()> {
    let mut json = StackText::new();
    let mut out = StackText::new();
    json.write_fmt(body)
        .and_then(|()| {
            write!(
                out,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
                json.len,
                if keep_alive { "keep-alive" } else { "close" }
            )
        })
        .map_err(|_| io::Error::other("error answer too long"))?;
    let end = out.len + json.len;
    out.buf
        .get_mut(out.len..end)
        .ok_or_else(|| io::Error::other("error answer too long"))?
        .copy_from_slice(json.as_bytes());
    out.len = end;
    stream.write_all(out.as_bytes())
}

/// Answers a refused allocation: 413 if the budget refused it or if the request is larger
/// than the budget anyway (`too_big`: a size the heap cannot serve at all fails before the
/// budget is consulted), else 503 (the OS is out of memory).
pub(crate) fn refuse(
    stream: &mut TcpStream,
    heap: &Heap,
    stage: Stage,
    too_big: bool,
    keep_alive: bool,
) -> io::Result<(Outcome, bool)> {
    let stats = heap.stats();
    if stats.budget_refusals == 0 && !too_big {
        reply_error(
            stream,
            503,
            "Service Unavailable",
            format_args!("{{\"error\":\"out of memory\"}}"),
            false,
        )?;
        return Ok((Outcome::NoMemory, false));
    }
    reply_error(
        stream,
        413,
        "Payload Too Large",
        format_args!(
            "{{\"error\":\"over budget\",\"stage\":\"{}\",\"budget\":{},\"peak_in_use\":{}}}",
            stage.name(),
            BUDGET,
            stats.peak_in_use
        ),
        keep_alive,
    )?;
    Ok((Outcome::OverBudget(stage), keep_alive))
}

/// The first `\r\n\r\n`: the end of the head.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Serves one request whose first `first` bytes are in `chunk` (after any in `carry`), with
/// every buffer and collection in `heap`. Returns what happened and whether the connection
/// stays open; an `Err` means the connection is broken.
pub(crate) fn serve_one(
    stream: &mut TcpStream,
    heap: &Heap,
    carry: &mut std::vec::Vec<u8>,
    chunk: &mut [u8],
    first: usize,
) -> io::Result<(Outcome, bool)> {
    // The request, head and body, goes into a buffer in the request's heap.
    let mut buf: Text<'_> = HVec::new_in(heap);
    if put(&mut buf, carry).is_err() || put(&mut buf, &chunk[..first]).is_err() {
        return refuse(stream, heap, Stage::Body, false, false);
    }
    carry.clear();
    let end = loop {
        if let Some(end) = head_end(&buf).filter(|&end| end <= MAX_HEAD) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            let body = format_args!("{{\"error\":\"head too large\"}}");
            reply_error(stream, 431, "Request Header Fields Too Large", body, false)?;
            return Ok((Outcome::Rejected, false));
        }
        let n = stream.read(chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if put(&mut buf, &chunk[..n]).is_err() {
            return refuse(stream, heap, Stage::Body, false, false);
        }
    };
    let head = match parse_head(&buf[..end]) {
        Ok(head) => head,
        Err((status, reason, what)) => {
            let body = format_args!("{{\"error\":\"{what}\"}}");
            reply_error(stream, status, reason, body, false)?;
            return Ok((Outcome::Rejected, false));
        }
    };
    let keep = head.keep_alive;
    let total = end.saturating_add(head.content_length);
    let missing = total.saturating_sub(buf.len());
    // Reserve the whole body at once: a body larger than the budget is refused here.
    if missing > 0 && buf.try_reserve_exact(missing).is_err() {
        let too_big = missing > BUDGET;
        if missing > MAX_DRAIN {
            return refuse(stream, heap, Stage::Body, too_big, false);
        }
        // Read and drop the body, so that the client can read the answer (closing a socket
        // with unread input resets the connection) and the connection stays usable.
        let mut left = missing;
        while left > 0 {
            let want = left.min(chunk.len());
            let n = stream.read(&mut chunk[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= n;
        }
        return refuse(stream, heap, Stage::Body, too_big, keep);
    }
    while buf.len() < total {
        let want = (total - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if put(&mut buf, &chunk[..n]).is_err() {
            return refuse(stream, heap, Stage::Body, false, false);
        }
    }
    // Bytes past this request (a pipelining client) wait for the next one.
    carry.extend_from_slice(&buf[total..]);

    match answer(heap, &buf[end..total], keep) {
        Ok(response) => {
            stream.write_all(&response.0)?;
            Ok((Outcome::Served, keep))
        }
        Err(Refusal::NoMemory) => {
            drop(buf);
            refuse(stream, heap, Stage::Document, false, keep)
        }
        Err(Refusal::Syntax(what)) => {
            let body = format_args!("{{\"error\":\"{what}\"}}");
            reply_error(stream, 400, "Bad Request", body, keep)?;
            Ok((Outcome::Rejected, keep))
        }
    }
}

/// Serves the requests of one connection, one heap from the pool per request.
pub(crate) fn connection(
    mut stream: TcpStream,
    pool: &HeapPool,
    metrics: &Metrics,
    page: Option<usize>,
) {
    // Without TCP_NODELAY, a small answer can wait for the peer's delayed ACK (tens of ms).
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let mut carry = std::vec::Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        // Wait for the next request before taking a heap: an idle connection holds none.
        let first = if carry.is_empty() {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            }
        } else {
            0
        };
        let heap = match pool.get() {
            Ok(heap) => heap,
            Err(e) => {
                eprintln!("no heap for a request: {e}");
                let body = format_args!("{{\"error\":\"no heap\"}}");
                let _ = reply_error(&mut stream, 503, "Service Unavailable", body, false);
                return;
            }
        };
        let result = serve_one(&mut stream, &heap, &mut carry, &mut chunk, first);
        // Read the heap's figures before it goes back (the reset clears them).
        let stats = heap.stats();
        if let Err(e) = heap.check() {
            panic!("heap {} is inconsistent after a request: {e}", heap.id());
        }
        if let (Ok((Outcome::OverBudget(_), _)), Some(rss)) = (&result, rss_bytes(page)) {
            // The process is near its peak now: this heap holds a budget's worth of blocks.
            metrics.rss_peak.fetch_max(rss, Ordering::Relaxed);
        }
        drop(heap); // reset in one step, and back to the pool
        match result {
            Ok((outcome, keep)) => {
                metrics.record(&outcome, &stats);
                if !keep {
                    return;
                }
            }
            Err(_) => return, // the client went away, or timed out, mid-request
        }
    }
}

/// Accepts connections and hands them to the workers until `stop` is raised (the caller then
/// connects once more to wake this thread up from `accept`).
pub(crate) fn accept_loop(
    listener: TcpListener,
    to_workers: mpsc::Sender<TcpStream>,
    stop: &AtomicBool,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                if to_workers.send(stream).is_err() {
                    break;
                }
            }
            Err(e) => {
                eprintln!("accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    // Dropping the sender ends the workers' `recv` once the queue is empty.
}

pub(crate) fn worker(
    from_acceptor: &Mutex<mpsc::Receiver<TcpStream>>,
    pool: &HeapPool,
    metrics: &Metrics,
    page: Option<usize>,
) {
    loop {
        // The lock is released at the end of this statement, before the connection is served.
        let next = from_acceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        match next {
            Ok(stream) => connection(stream, pool, metrics, page),
            Err(mpsc::RecvError) => return,
        }
    }
}
