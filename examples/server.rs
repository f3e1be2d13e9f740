//! A loopback HTTP/1.1 server that gives every request a heap of its own, with a budget.
//!
//! The server is plain `std`: a `TcpListener` on `127.0.0.1:0`, one thread accepting connections
//! and handing them over an `mpsc` channel to a few worker threads. For each request a worker
//! takes a [`Heap`] from a [`HeapPool`] built with `Heap::builder().budget(256 KiB)`, reads the
//! request into a buffer **in that heap**, parses the body (a JSON document: an array of objects
//! with string keys) into `allocator_api2::vec::Vec`s and `hashbrown::HashMap`s **in that heap**,
//! computes a summary (objects, keys, sum of the integers, largest float, `true`s, a word-frequency
//! map of the string values and its most frequent word) and answers with a small JSON body. Then
//! the heap goes back to the pool, reset in one step whatever the request allocated.
//!
//! The budget counts bytes *in use* in the heap, not the size of the body. A request whose body
//! does not fit (refused while reading it) or whose document expands past the budget once parsed
//! (refused while building the collections) gets `413 Payload Too Large`, and the server carries
//! on serving, on the same connection. For that the request path uses **only fallible
//! allocation**: `try_reserve` before every `push`, `insert` and `extend_from_slice`, and a
//! `fmt::Write` adapter that reserves before it writes. An infallible `push` refused by the
//! budget would call the allocation failure handler and abort the whole process.
//!
//! The example drives itself: client threads send `--requests` requests (2% of them over the
//! budget, half of those with a body larger than the budget, half with a small body whose
//! document is too large), check every answer against their own computation (200 with the
//! right summary, or 413 refused at the right stage), then shut the server down and print
//! requests per second, latency percentiles, the peak heap use per request, how many heaps the
//! pool built (and the `mmap`/`munmap`/`madvise` calls the run made) and the process's resident
//! size (RSS) before, at the peak (sampled every millisecond, and by the workers at each
//! refusal) and after: with the pool's idle heaps kept warm, then with the pool dropped and
//! [`isoheap::release_cached`] called (what remains above the first figure is the threads'
//! stacks, which glibc keeps for reuse, and the client's own allocations). A wrong answer makes
//! it panic, so CI can run it.
//!
//! ```sh
//! cargo run --release --example server
//! cargo run --release --example server -- --requests 20000 --clients 2 --workers 4 --close
//! ```
//!
//! Options: `--requests N` (default 2000), `--clients N` (2), `--workers N` (4), `--close` (a
//! new connection per request; by default each client keeps one connection alive, which ties
//! up one worker, so keep-alive needs `--clients` <= `--workers`).
//!
//! The RSS figures come from `/proc/self/statm` (Linux); elsewhere they print as `n/a`.

use hashbrown::DefaultHashBuilder;
use isoheap::{Heap, HeapPool, Stats};
use std::collections::HashMap as StdMap;
use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes in use each request's heap may hold.
const BUDGET: usize = 256 << 10;
/// Largest request head (request line and headers) the server reads.
const MAX_HEAD: usize = 8 << 10;
/// The largest refused body the server reads (and drops) to keep the connection open; past
/// it, it answers and closes.
const MAX_DRAIN: usize = 16 << 20;
/// Deepest nesting of arrays and objects the parser follows (it recurses).
const MAX_DEPTH: usize = 32;
/// One request in this many is over the budget (2%).
const OVER_EVERY: usize = 50;
/// Objects in a normal document: 4 to 24 (a few KiB of body, a few tens of KiB once parsed).
const NORMAL_OBJECTS: (u64, u64) = (4, 24);
/// Objects in an over-budget document with a small body: the body stays well under the budget,
/// the collections built from it do not.
const WIDE_OBJECTS: usize = 500;
/// Objects in an over-budget document whose body alone is larger than the budget.
const HUGE_OBJECTS: usize = 2_000;
/// How long either side waits for the other before giving up (a broken run fails, never hangs).
const TIMEOUT: Duration = Duration::from_secs(10);

/// A byte vector in a request's heap.
type HVec<'h, T> = allocator_api2::vec::Vec<T, &'h Heap>;
/// A hash map in a request's heap.
type HMap<'h, K, V> = hashbrown::HashMap<K, V, DefaultHashBuilder, &'h Heap>;
/// Text in a request's heap (always valid UTF-8: it is copied from a validated body).
type Text<'h> = HVec<'h, u8>;

// ---------------------------------------------------------------------------------------------
// Fallible building blocks
// ---------------------------------------------------------------------------------------------

/// Why a request could not be answered with 200.
#[derive(Debug)]
enum Refusal {
    /// An allocation in the request's heap was refused (by the budget, or the OS).
    NoMemory,
    /// The document is not one we accept; the text says what was wrong (no quotes, no
    /// backslashes: it goes into a JSON string as is).
    Syntax(&'static str),
}

impl From<allocator_api2::collections::TryReserveError> for Refusal {
    fn from(_: allocator_api2::collections::TryReserveError) -> Self {
        Refusal::NoMemory
    }
}

impl From<hashbrown::TryReserveError> for Refusal {
    fn from(_: hashbrown::TryReserveError) -> Self {
        Refusal::NoMemory
    }
}

/// Appends `bytes`, reserving first: the `extend_from_slice` after a successful `try_reserve`
/// cannot allocate, so a refusal is an `Err` here and never an abort.
fn put(v: &mut Text<'_>, bytes: &[u8]) -> Result<(), Refusal> {
    v.try_reserve(bytes.len())?;
    v.extend_from_slice(bytes);
    Ok(())
}

/// Appends one element, reserving first (the `push` after it cannot allocate).
fn push<'h, T>(v: &mut HVec<'h, T>, x: T) -> Result<(), Refusal> {
    v.try_reserve(1)?;
    v.push(x);
    Ok(())
}

/// `fmt::Write` into the request's heap; a refused reservation is a `fmt::Error`.
struct HeapText<'h>(Text<'h>);

impl fmt::Write for HeapText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put(&mut self.0, s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// `fmt::Write` into a fixed buffer on the stack, for the small error answers: they need no
/// heap, so they can be sent whatever state the request's heap is in.
struct StackText {
    buf: [u8; 512],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        StackText {
            buf: [0; 512],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes `s` as a JSON string literal (used by the server and by the client's expectation).
fn json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            c if (c as u32) < 0x20 => write!(w, "\\u{:04x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

// ---------------------------------------------------------------------------------------------
// The document: parsed into the request's heap
// ---------------------------------------------------------------------------------------------

/// A JSON value whose strings, arrays and objects all live in the request's heap.
enum Value<'h> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text<'h>),
    Arr(HVec<'h, Value<'h>>),
    Obj(HMap<'h, Text<'h>, Value<'h>>),
}

/// A recursive-descent JSON parser over the body (which is itself in the heap).
struct Parser<'b, 'h> {
    s: &'b [u8],
    i: usize,
    heap: &'h Heap,
}

impl<'h> Parser<'_, 'h> {
    fn document(mut self) -> Result<Value<'h>, Refusal> {
        let v = self.value(0)?;
        self.ws();
        if self.i != self.s.len() {
            return Err(Refusal::Syntax("trailing characters after the document"));
        }
        Ok(v)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn value(&mut self, depth: usize) -> Result<Value<'h>, Refusal> {
        if depth > MAX_DEPTH {
            return Err(Refusal::Syntax("nested too deeply"));
        }
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(Refusal::Syntax("unexpected character")),
            None => Err(Refusal::Syntax("unexpected end of the document")),
        }
    }

    fn literal(&mut self, word: &[u8], v: Value<'h>) -> Result<Value<'h>, Refusal> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(Refusal::Syntax("unknown literal"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'h>, Refusal> {
        self.i += 1; // '{'
        let mut map: HMap<'h, Text<'h>, Value<'h>> = HMap::new_in(self.heap);
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Obj(map));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(Refusal::Syntax("expected a string key"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(Refusal::Syntax("expected a colon after a key"));
            }
            self.i += 1;
            let value = self.value(depth + 1)?;
            // The only place the map grows: after this, `insert` cannot allocate. (A repeated
            // key replaces the earlier value, as most JSON parsers do.)
            map.try_reserve(1)?;
            map.insert(key, value);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Obj(map));
                }
                _ => return Err(Refusal::Syntax("expected a comma or a closing brace")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'h>, Refusal> {
        self.i += 1; // '['
        let mut items = HVec::new_in(self.heap);
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Arr(items));
        }
        loop {
            let v = self.value(depth + 1)?;
            push(&mut items, v)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Arr(items));
                }
                _ => return Err(Refusal::Syntax("expected a comma or a closing bracket")),
            }
        }
    }

    fn string(&mut self) -> Result<Text<'h>, Refusal> {
        self.i += 1; // opening quote
        // Find the closing quote first: the decoded text is never longer than the raw one, so
        // one exact reservation usually holds it (`put` reserves anyway).
        let start = self.i;
        let mut end = start;
        loop {
            match self.s.get(end) {
                None => return Err(Refusal::Syntax("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => end += 2,
                Some(_) => end += 1,
            }
        }
        let raw = &self.s[start..end];
        self.i = end + 1;
        let mut out = HVec::new_in(self.heap);
        out.try_reserve_exact(raw.len())?;
        let mut k = 0;
        while k < raw.len() {
            let plain = raw[k..]
                .iter()
                .position(|&b| b == b'\\' || b < 0x20)
                .unwrap_or(raw.len() - k);
            put(&mut out, &raw[k..k + plain])?;
            k += plain;
            if k == raw.len() {
                break;
            }
            if raw[k] != b'\\' {
                return Err(Refusal::Syntax("control character in a string"));
            }
            let c = match raw[k + 1] {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = hex4(raw, k + 2)?;
                    k += 4;
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        // A surrogate pair: the low half must follow as a second escape.
                        if raw.get(k + 2..k + 4) != Some(b"\\u") {
                            return Err(Refusal::Syntax("unpaired surrogate"));
                        }
                        let lo = hex4(raw, k + 4)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err(Refusal::Syntax("unpaired surrogate"));
                        }
                        k += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        hi
                    };
                    char::from_u32(code).ok_or(Refusal::Syntax("unpaired surrogate"))?
                }
                _ => return Err(Refusal::Syntax("unknown escape")),
            };
            k += 2;
            put(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes())?;
        }
        Ok(out)
    }

    fn number(&mut self) -> Result<Value<'h>, Refusal> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let mut integer = true;
        let mut ok = self.digits() > 0;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            ok &= self.digits() > 0;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            integer = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            ok &= self.digits() > 0;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        if !ok || text.is_empty() {
            return Err(Refusal::Syntax("malformed number"));
        }
        if integer && let Ok(n) = text.parse::<i64>() {
            return Ok(Value::Int(n));
        }
        // Fractions, exponents and integers too large for i64.
        text.parse::<f64>()
            .map(Value::Float)
            .map_err(|_| Refusal::Syntax("malformed number"))
    }
}

/// The four hex digits of a `\u` escape starting at `at`.
fn hex4(raw: &[u8], at: usize) -> Result<u32, Refusal> {
    let digits = raw
        .get(at..at + 4)
        .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
        .ok_or(Refusal::Syntax("malformed unicode escape"))?;
    let text = std::str::from_utf8(digits).unwrap_or("0");
    u32::from_str_radix(text, 16).map_err(|_| Refusal::Syntax("malformed unicode escape"))
}

// ---------------------------------------------------------------------------------------------
// The answer: computed from the document, shared by server and client
// ---------------------------------------------------------------------------------------------

/// What the server answers, and what the client expects (formatted identically by both).
#[derive(Debug, Default)]
struct Answer<'a> {
    objects: usize,
    keys: usize,
    int_sum: i64,
    float_max: Option<f64>,
    trues: usize,
    words: usize,
    distinct_words: usize,
    /// The most frequent word and its count (ties: the smallest word in byte order).
    top: Option<(&'a str, u32)>,
}

impl Answer<'_> {
    fn write(&self, w: &mut impl fmt::Write) -> fmt::Result {
        write!(
            w,
            "{{\"objects\":{},\"keys\":{},\"int_sum\":{},\"float_max\":",
            self.objects, self.keys, self.int_sum
        )?;
        match self.float_max {
            Some(x) if x.is_finite() => write!(w, "{x}")?,
            _ => w.write_str("null")?,
        }
        write!(
            w,
            ",\"trues\":{},\"words\":{},\"distinct_words\":{},\"top_word\":",
            self.trues, self.words, self.distinct_words
        )?;
        match self.top {
            Some((word, count)) => {
                json_str(w, word)?;
                write!(w, ",\"top_count\":{count}}}")
            }
            None => w.write_str("null,\"top_count\":0}"),
        }
    }
}

/// Walks the document, counting, with the word-frequency map in the request's heap (its keys
/// borrow the document's strings: no copies).
struct Summary<'d, 'h> {
    answer: Answer<'d>,
    freq: HMap<'h, &'d [u8], u32>,
}

impl<'d, 'h> Summary<'d, 'h> {
    fn walk(&mut self, v: &'d Value<'_>) -> Result<(), Refusal> {
        let a = &mut self.answer;
        match v {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => a.trues += 1,
            Value::Int(n) => a.int_sum = a.int_sum.wrapping_add(*n),
            Value::Float(x) => a.float_max = Some(a.float_max.map_or(*x, |m| m.max(*x))),
            Value::Str(text) => {
                for word in text
                    .split(u8::is_ascii_whitespace)
                    .filter(|w| !w.is_empty())
                {
                    a.words += 1;
                    if let Some(count) = self.freq.get_mut(&word) {
                        *count += 1;
                    } else {
                        self.freq.try_reserve(1)?;
                        self.freq.insert(word, 1);
                    }
                }
            }
            Value::Arr(items) => {
                for item in items.iter() {
                    self.walk(item)?;
                }
            }
            Value::Obj(map) => {
                a.objects += 1;
                a.keys += map.len();
                for item in map.values() {
                    self.walk(item)?;
                }
            }
        }
        Ok(())
    }
}

/// Parses `body` in `heap`, summarises it and writes the whole 200 response into the heap.
fn answer<'h>(heap: &'h Heap, body: &[u8], keep_alive: bool) -> Result<HeapText<'h>, Refusal> {
    if std::str::from_utf8(body).is_err() {
        return Err(Refusal::Syntax("the body is not UTF-8"));
    }
    let doc = Parser {
        s: body,
        i: 0,
        heap,
    }
    .document()?;
    if !matches!(doc, Value::Arr(_)) {
        return Err(Refusal::Syntax("expected an array of objects"));
    }
    let mut summary = Summary {
        answer: Answer::default(),
        freq: HMap::new_in(heap),
    };
    summary.walk(&doc)?;
    let mut answer = summary.answer;
    answer.distinct_words = summary.freq.len();
    answer.top = summary
        .freq
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        // Words are cut at ASCII whitespace out of valid UTF-8, so they are valid UTF-8.
        .map(|(w, &n)| (std::str::from_utf8(w).unwrap_or("\u{fffd}"), n));

    let mut json = HeapText(HVec::new_in(heap));
    answer.write(&mut json).map_err(|_| Refusal::NoMemory)?;
    let mut response = HeapText(HVec::new_in(heap));
    write!(
        response,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        json.0.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .map_err(|_| Refusal::NoMemory)?;
    put(&mut response.0, &json.0)?;
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Where an over-budget request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reserving the buffer for the body.
    Body,
    /// Building the document's collections (or the answer).
    Document,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Body => "body",
            Stage::Document => "document",
        }
    }
}

/// What became of one request.
enum Outcome {
    Served,
    OverBudget(Stage),
    /// An allocation failed without the budget refusing (the OS): 503.
    NoMemory,
    /// A request we do not accept (400, 404, 405, 411, 431, 501).
    Rejected,
}

/// Counters shared by the workers.
#[derive(Default)]
struct Metrics {
    served: AtomicUsize,
    over_body: AtomicUsize,
    over_document: AtomicUsize,
    no_memory: AtomicUsize,
    rejected: AtomicUsize,
    /// Largest `peak_in_use` of a request's heap, over the requests served with 200.
    peak_served: AtomicUsize,
    /// Sum of those peaks (for the mean).
    peak_served_sum: AtomicUsize,
    /// Largest `peak_in_use` over the refused requests (at most the budget).
    peak_refused: AtomicUsize,
    /// Sum of the heaps' `budget_refusals`.
    budget_refusals: AtomicUsize,
    /// Largest resident size seen (by the sampler thread, and by workers at each refusal).
    rss_peak: AtomicUsize,
}

impl Metrics {
    fn record(&self, outcome: &Outcome, stats: &Stats) {
        let peak = stats.peak_in_use;
        self.budget_refusals
            .fetch_add(stats.budget_refusals, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Served => {
                self.peak_served.fetch_max(peak, Ordering::Relaxed);
                self.peak_served_sum.fetch_add(peak, Ordering::Relaxed);
                &self.served
            }
            Outcome::OverBudget(stage) => {
                self.peak_refused.fetch_max(peak, Ordering::Relaxed);
                match stage {
                    Stage::Body => &self.over_body,
                    Stage::Document => &self.over_document,
                }
            }
            Outcome::NoMemory => &self.no_memory,
            Outcome::Rejected => &self.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the request head says.
struct Head {
    content_length: usize,
    keep_alive: bool,
}

/// Parses the request line and the headers we care about. Errors are (status, reason, detail).
fn parse_head(head: &[u8]) -> Result<Head, (u16, &'static str, &'static str)> {
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
fn reply_error(
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
fn refuse(
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
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Serves one request whose first `first` bytes are in `chunk` (after any in `carry`), with
/// every buffer and collection in `heap`. Returns what happened and whether the connection
/// stays open; an `Err` means the connection is broken.
fn serve_one(
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
fn connection(mut stream: TcpStream, pool: &HeapPool, metrics: &Metrics, page: Option<usize>) {
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
fn accept_loop(listener: TcpListener, to_workers: mpsc::Sender<TcpStream>, stop: &AtomicBool) {
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

fn worker(
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

// ---------------------------------------------------------------------------------------------
// Resident size
// ---------------------------------------------------------------------------------------------

/// The page size, from the auxiliary vector's `AT_PAGESZ` (no libc call, no `unsafe`).
fn page_size() -> Option<usize> {
    const AT_PAGESZ: usize = 6;
    const W: usize = size_of::<usize>();
    let aux = std::fs::read("/proc/self/auxv").ok()?;
    aux.chunks_exact(2 * W).find_map(|pair| {
        let key = usize::from_ne_bytes(pair[..W].try_into().ok()?);
        let value = usize::from_ne_bytes(pair[W..].try_into().ok()?);
        (key == AT_PAGESZ).then_some(value)
    })
}

/// Resident bytes: the second field of `/proc/self/statm` (pages) times the page size.
fn rss_bytes(page: Option<usize>) -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page?)
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Which kind of document request `i` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    /// Over budget once parsed: refused while building the document.
    Wide,
    /// Over budget as bytes: refused while reserving the body.
    Huge,
}

fn kind_of(i: usize) -> Kind {
    if i % OVER_EVERY != OVER_EVERY / 2 {
        Kind::Normal
    } else if (i / OVER_EVERY).is_multiple_of(2) {
        Kind::Wide
    } else {
        Kind::Huge
    }
}

/// SplitMix64: a small deterministic generator, so every document can be rebuilt from its index.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }

    fn word(&mut self) -> &'static str {
        WORDS[self.below(WORDS.len() as u64) as usize]
    }
}

const WORDS: [&str; 24] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray",
];

/// What the client expects, computed with std's collections while it writes the document.
#[derive(Default)]
struct Expect {
    objects: usize,
    keys: usize,
    int_sum: i64,
    float_max: Option<f64>,
    trues: usize,
    words: usize,
    freq: StdMap<String, u32>,
}

impl Expect {
    fn text(&mut self, decoded: &str) {
        for word in decoded.split_ascii_whitespace() {
            self.words += 1;
            *self.freq.entry(word.to_owned()).or_default() += 1;
        }
    }

    fn float(&mut self, text: &str) {
        let x: f64 = text.parse().expect("a float the client wrote");
        self.float_max = Some(self.float_max.map_or(x, |m| m.max(x)));
    }

    fn int(&mut self, n: i64) {
        self.int_sum = self.int_sum.wrapping_add(n);
    }

    /// The JSON body the server must answer.
    fn body(&self) -> String {
        let top = self
            .freq
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(w, &n)| (w.as_str(), n));
        let answer = Answer {
            objects: self.objects,
            keys: self.keys,
            int_sum: self.int_sum,
            float_max: self.float_max,
            trues: self.trues,
            words: self.words,
            distinct_words: self.freq.len(),
            top,
        };
        let mut s = String::new();
        answer.write(&mut s).expect("formatting into a String");
        s
    }
}

/// Writes `"key":` (with a comma before all but the first key of an object).
fn key(out: &mut String, first: &mut bool, e: &mut Expect, name: &str) {
    if !*first {
        out.push_str(", ");
    }
    *first = false;
    e.keys += 1;
    let _ = write!(out, "\"{name}\": ");
}

/// Document `i` with `objects` objects, and what the server should answer for it.
fn make_doc(i: usize, objects: usize) -> (String, Expect) {
    let mut r = Rng(i as u64);
    let mut e = Expect::default();
    let mut out = String::with_capacity(objects * 200);
    out.push('[');
    for k in 0..objects {
        out.push_str(if k == 0 { "\n  {" } else { ",\n  {" });
        e.objects += 1;
        let first = &mut true;
        key(&mut out, first, &mut e, "id");
        let id = (i * 10_000 + k) as i64;
        e.int(id);
        let _ = write!(out, "{id}");
        key(&mut out, first, &mut e, "name");
        let name = r.word();
        e.text(name);
        let _ = write!(out, "\"{name}\"");
        key(&mut out, first, &mut e, "qty");
        let qty = r.below(551) as i64 - 50;
        e.int(qty);
        let _ = write!(out, "{qty}");
        if r.below(4) != 0 {
            key(&mut out, first, &mut e, "price");
            let cents = r.below(100_000);
            let text = format!("{}.{:02}", cents / 100, cents % 100);
            e.float(&text);
            out.push_str(&text);
        }
        key(&mut out, first, &mut e, "in_stock");
        if r.below(3) != 0 {
            e.trues += 1;
            out.push_str("true");
        } else {
            out.push_str("false");
        }
        key(&mut out, first, &mut e, "tags");
        let tags: std::vec::Vec<&str> = (0..1 + r.below(5)).map(|_| r.word()).collect();
        let tags = tags.join(" ");
        e.text(&tags);
        let _ = write!(out, "\"{tags}\"");
        if r.below(3) == 0 {
            key(&mut out, first, &mut e, "dims");
            let (w, h) = (r.below(1000) as i64, r.below(1000) as i64);
            e.objects += 1;
            e.keys += 2;
            e.int(w + h);
            let _ = write!(out, "{{\"w\": {w}, \"h\": {h}}}");
        }
        if r.below(3) == 0 {
            key(&mut out, first, &mut e, "history");
            let h: [i64; 3] = [0; 3].map(|_| r.below(10_000) as i64 - 5_000);
            e.int(h[0] + h[1] + h[2]);
            let _ = write!(out, "[{}, {}, {}]", h[0], h[1], h[2]);
        }
        if r.below(4) == 0 {
            // Escapes: quotes, a tab, a BMP character and a surrogate pair.
            key(&mut out, first, &mut e, "memo");
            let (a, b) = (r.word(), r.word());
            e.text(&format!("say \"{a}\"\t{b}\u{e9} \u{1F600}"));
            let _ = write!(out, "\"say \\\"{a}\\\"\\t{b}\\u00e9 \\ud83d\\ude00\"");
        }
        if r.below(5) == 0 {
            key(&mut out, first, &mut e, "ratio");
            let text = format!("{}e-{}", r.below(100), r.below(4));
            e.float(&text);
            out.push_str(&text);
        }
        if r.below(6) == 0 {
            key(&mut out, first, &mut e, "note");
            out.push_str("null");
        }
        out.push('}');
    }
    out.push_str("\n]\n");
    (out, e)
}

/// One answer, as the client read it.
struct Response {
    status: u16,
    body: String,
    keep_alive: bool,
}

/// A client connection with its read buffer.
struct Conn {
    stream: TcpStream,
    pending: std::vec::Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        Ok(Conn {
            stream,
            pending: std::vec::Vec::new(),
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let end = loop {
            if let Some(end) = head_end(&self.pending) {
                break end;
            }
            self.fill()?;
        };
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let head = std::str::from_utf8(&self.pending[..end]).map_err(|_| bad("head not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let (mut length, mut keep_alive) = (None, true);
        for (name, value) in lines.filter_map(|l| l.split_once(':')) {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.trim().eq_ignore_ascii_case("close");
            }
        }
        let total = end + length.ok_or_else(|| bad("no content-length"))?;
        while self.pending.len() < total {
            self.fill()?;
        }
        let body = String::from_utf8(self.pending[end..total].to_vec())
            .map_err(|_| bad("body not UTF-8"))?;
        self.pending.drain(..total);
        Ok(Response {
            status,
            body,
            keep_alive,
        })
    }
}

/// What one client thread saw.
#[derive(Default)]
struct ClientReport {
    latencies: std::vec::Vec<Duration>,
    ok: usize,
    too_large: usize,
    /// Smallest and largest body sent, per kind (normal, wide, huge).
    body_sizes: [(usize, usize); 3],
}

struct Config {
    requests: usize,
    clients: usize,
    workers: usize,
    close: bool,
}

/// Sends requests `id`, `id + clients`, ... and checks every answer.
fn client(addr: SocketAddr, id: usize, cfg: &Config) -> Result<ClientReport, String> {
    let mut report = ClientReport {
        body_sizes: [(usize::MAX, 0); 3],
        ..ClientReport::default()
    };
    let mut conn: Option<Conn> = None;
    let mut request = std::vec::Vec::new();
    for i in (id..cfg.requests).step_by(cfg.clients) {
        let kind = kind_of(i);
        let objects = match kind {
            Kind::Normal => {
                let (lo, hi) = NORMAL_OBJECTS;
                (lo + Rng(!(i as u64)).below(hi - lo + 1)) as usize
            }
            Kind::Wide => WIDE_OBJECTS,
            Kind::Huge => HUGE_OBJECTS,
        };
        let (body, expect) = make_doc(i, objects);
        let sizes = &mut report.body_sizes[kind as usize];
        *sizes = (sizes.0.min(body.len()), sizes.1.max(body.len()));
        request.clear();
        let _ = write!(
            request,
            "POST /analyze HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if cfg.close { "close" } else { "keep-alive" }
        );
        request.extend_from_slice(body.as_bytes());

        let started = Instant::now();
        let c = match &mut conn {
            Some(c) => c,
            None => conn.insert(Conn::open(addr).map_err(|e| format!("connect: {e}"))?),
        };
        c.stream
            .write_all(&request)
            .map_err(|e| format!("request {i}: sending: {e}"))?;
        let response = c
            .read_response()
            .map_err(|e| format!("request {i}: reading the answer: {e}"))?;
        report.latencies.push(started.elapsed());
        if !response.keep_alive {
            conn = None;
        }

        match kind {
            Kind::Normal => {
                let want = expect.body();
                if response.status != 200 || response.body != want {
                    return Err(format!(
                        "request {i}: got {} {}, expected 200 {want}",
                        response.status, response.body
                    ));
                }
                report.ok += 1;
            }
            Kind::Wide | Kind::Huge => {
                let stage = if kind == Kind::Wide {
                    "\"stage\":\"document\""
                } else {
                    "\"stage\":\"body\""
                };
                if response.status != 413 || !response.body.contains(stage) {
                    return Err(format!(
                        "request {i} ({kind:?}, {} bytes): got {} {}, expected 413 with {stage}",
                        body.len(),
                        response.status,
                        response.body
                    ));
                }
                report.too_large += 1;
            }
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const USAGE: &str = "usage: server [--requests N] [--clients N] [--workers N] [--close]  (defaults: 2000, 2, 4, keep-alive)";

fn parse_args() -> Config {
    let mut cfg = Config {
        requests: 2_000,
        clients: 2,
        workers: 4,
        close: false,
    };
    let mut args = std::env::args().skip(1);
    let fail = |msg: String| -> ! {
        eprintln!("{msg}\n{USAGE}");
        std::process::exit(2)
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            match args.next().map(|v| v.parse::<usize>()) {
                Some(Ok(n)) if n > 0 => n,
                _ => fail(format!("{name} needs a positive number")),
            }
        };
        match arg.as_str() {
            "--requests" => cfg.requests = number("--requests"),
            "--clients" => cfg.clients = number("--clients"),
            "--workers" => cfg.workers = number("--workers"),
            "--close" => cfg.close = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => fail(format!("unknown argument {other}")),
        }
    }
    if !cfg.close && cfg.clients > cfg.workers {
        fail(
            "with keep-alive each client holds a worker: use --clients <= --workers, or --close"
                .into(),
        );
    }
    cfg
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn mib(bytes: Option<usize>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn main() {
    let cfg = parse_args();
    let over = (0..cfg.requests)
        .filter(|&i| kind_of(i) != Kind::Normal)
        .count();
    println!(
        "isoheap server example: {} requests ({over} over the budget), {} client(s), {} worker(s), {}, budget {} per request",
        cfg.requests,
        cfg.clients,
        cfg.workers,
        if cfg.close {
            "a connection per request"
        } else {
            "keep-alive"
        },
        kib(BUDGET)
    );

    let page = page_size();
    let rss_before = rss_bytes(page);
    let os_before = isoheap::os_counters();
    let pool = HeapPool::new(Heap::builder().budget(BUDGET), cfg.workers);
    let metrics = Metrics::default();
    let stop = AtomicBool::new(false);
    let sampling = AtomicBool::new(true);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    println!("listening on http://{addr}/analyze");
    let (to_workers, from_acceptor) = mpsc::channel();
    let from_acceptor = Mutex::new(from_acceptor);

    let (reports, elapsed) = thread::scope(|s| {
        let stop = &stop;
        s.spawn(move || accept_loop(listener, to_workers, stop));
        for _ in 0..cfg.workers {
            s.spawn(|| worker(&from_acceptor, &pool, &metrics, page));
        }
        s.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(page) {
                    metrics.rss_peak.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(1));
            }
        });

        let started = Instant::now();
        let clients: std::vec::Vec<_> = (0..cfg.clients)
            .map(|id| {
                let cfg = &cfg;
                s.spawn(move || client(addr, id, cfg))
            })
            .collect();
        let reports: std::vec::Vec<Result<ClientReport, String>> = clients
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect();
        let elapsed = started.elapsed();

        // Shut down, whatever the clients saw: raise the flag, wake the acceptor up with one
        // last connection; it drops the channel's sender, and the workers finish their
        // connections (the clients have closed theirs) and return. The scope joins them all.
        stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(addr);
        sampling.store(false, Ordering::Relaxed);
        (reports, elapsed)
    });
    let os = isoheap::os_counters();
    let rss_after = rss_bytes(page);
    let (created, idle) = (pool.created(), pool.idle());
    // Dropped heaps leave their mappings in a small process-wide cache for the next heap;
    // `release_cached` gives those back to the OS.
    drop(pool);
    let released = isoheap::release_cached();
    let rss_dropped = rss_bytes(page);

    let mut failures = std::vec::Vec::new();
    let mut latencies = std::vec::Vec::with_capacity(cfg.requests);
    let (mut ok, mut too_large) = (0, 0);
    let mut sizes = [(usize::MAX, 0usize); 3];
    for report in reports {
        match report {
            Ok(r) => {
                latencies.extend(r.latencies);
                ok += r.ok;
                too_large += r.too_large;
                for (all, mine) in sizes.iter_mut().zip(r.body_sizes) {
                    *all = (all.0.min(mine.0), all.1.max(mine.1));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    let served = load(&metrics.served);
    let (over_body, over_doc) = (load(&metrics.over_body), load(&metrics.over_document));
    let rss_peak = Some(load(&metrics.rss_peak)).filter(|&b| b > 0);
    let size = |k: Kind| {
        let (lo, hi) = sizes[k as usize];
        if lo > hi {
            "none".to_owned()
        } else {
            format!("{}–{}", kib(lo), kib(hi))
        }
    };

    println!(
        "requests   {} in {:.3} s: {:.0} requests/s",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency    p50 {} | p99 {} | max {}",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
    println!(
        "answers    200: {ok} (all checked) | 413: {too_large} ({over_body} refused reserving the body, {over_doc} building the document) | other: {}",
        load(&metrics.rejected) + load(&metrics.no_memory)
    );
    println!(
        "bodies     normal {} | over budget once parsed {} | over budget as bytes {}",
        size(Kind::Normal),
        size(Kind::Wide),
        size(Kind::Huge)
    );
    println!(
        "heap/req   peak in use: served max {} (mean {}) | refused max {} (budget {}) | {} budget refusals",
        kib(load(&metrics.peak_served)),
        kib(load(&metrics.peak_served_sum) / served.max(1)),
        kib(load(&metrics.peak_refused)),
        kib(BUDGET),
        load(&metrics.budget_refusals)
    );
    println!(
        "pool       {created} heap(s) created, {idle} idle at the end, {} mapped | OS calls for {} requests: {} mmap, {} munmap, {} madvise",
        kib(os.mapped_bytes),
        cfg.requests,
        os.maps - os_before.maps,
        os.unmaps - os_before.unmaps,
        os.decommits - os_before.decommits
    );
    println!(
        "RSS        before {} | peak {} | after {} (idle heaps kept warm) | pool dropped, {} released {}",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
        kib(released),
        mib(rss_dropped)
    );

    // The checks that make this example a test.
    let normal = cfg.requests - over;
    if ok != normal || served != normal {
        failures.push(format!(
            "{ok} answers checked and {served} served with 200, expected {normal}"
        ));
    }
    if too_large != over || over_body + over_doc != over {
        failures.push(format!(
            "{too_large} answers 413 and {} refused by the server, expected {over}",
            over_body + over_doc
        ));
    }
    if load(&metrics.rejected) + load(&metrics.no_memory) != 0 {
        failures.push("the server rejected requests it should have served".into());
    }
    if load(&metrics.peak_refused) > BUDGET {
        failures.push("a heap passed its budget".into());
    }
    if !failures.is_empty() {
        panic!("the run failed:\n  {}", failures.join("\n  "));
    }
    println!("ok");
}
