//! A loopback HTTP/1.1 server in which every request runs under `GLOBAL.scope()`: whatever the
//! request's code allocates (here serde_json parsing the body into a `serde_json::Value`, and
//! the answer's `format!`) lands in a heap of the request's own, through the global allocator,
//! without any allocator parameter in the code.
//!
//! Each request gets a *soft* budget (`Scope::set_soft_budget`, 64 KiB) and a *hard* one
//! (`Scope::set_budget`, 8 MiB). serde_json allocates infallibly, so a hard refusal inside it
//! would end the process through `handle_alloc_error`; the soft budget lets the parse finish
//! (under the hard cap) and marks the scope as over, and the request is answered `413 Payload
//! Too Large` at the end of the step. The answer reports the request's peak memory
//! (`Scope::stats().peak_in_use`).
//!
//! The example drives itself: a client sends normal documents (answered `200` with the number
//! of values in the document and the request's peak), then a 20 KiB body that expands past the
//! budget once parsed (an array of 10,000 small arrays: about 600 KiB of `Value`s), which must get
//! `413`, then normal documents again, which must get `200`: the server keeps serving. A wrong
//! answer panics, so CI can run it.
//!
//! ```sh
//! cargo run --release -p isoheap-bench --example scoped_server
//! ```

use isoheap::GlobalHeap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: GlobalHeap = GlobalHeap::new();

/// The soft budget per request: past it the request is refused at the end of its step.
const SOFT: usize = 64 << 10;
/// The hard budget per request: a cap on what one request may take while it finishes a step.
const HARD: usize = 8 << 20;
/// Requests before and after the one over budget.
const NORMAL: usize = 50;

/// What one request answered: status and the request's peak bytes in use.
struct Answer {
    status: u16,
    body: String,
}

/// Serves one request: the body parsed by serde_json, all of it in the request's scope.
fn handle(body: &[u8]) -> (u16, String, usize) {
    let scope = GLOBAL.scope();
    scope.set_soft_budget(Some(SOFT));
    scope.set_budget(Some(HARD));
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(body);
    let values = parsed.as_ref().map(count).unwrap_or(0);
    let over = scope.is_over();
    let peak = scope.stats().peak_in_use;
    drop(parsed);
    // The answer is built after the document is gone; it escapes the scope (the caller sends
    // it), which is fine: it stays valid and frees its scope heap when dropped.
    let (status, text) = if over {
        (
            413,
            format!("{{\"error\":\"over budget\",\"peak\":{peak}}}"),
        )
    } else {
        (200, format!("{{\"values\":{values},\"peak\":{peak}}}"))
    };
    drop(scope);
    (status, text, peak)
}

/// Values in a document, nested ones included.
fn count(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(count).sum(),
        serde_json::Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// Reads one request (head, then `Content-Length` bytes of body) from `r`; `None` at the end
/// of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_owned())
        {
            len = v.parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

fn serve(stream: TcpStream) {
    let mut w = stream.try_clone().expect("clone the stream");
    let mut r = BufReader::new(stream);
    while let Some(body) = read_request(&mut r) {
        let (status, text, _) = handle(&body);
        let reason = if status == 200 {
            "OK"
        } else {
            "Payload Too Large"
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            text.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends one request on `s` and reads the answer.
fn request(s: &mut BufReader<TcpStream>, body: &[u8]) -> Answer {
    let head = format!(
        "POST /doc HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let w = s.get_mut();
    w.write_all(head.as_bytes()).unwrap();
    w.write_all(body).unwrap();
    let mut status_line = String::new();
    s.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a status line");
    let mut len = 0;
    loop {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    Answer {
        status,
        body: String::from_utf8(body).unwrap(),
    }
}

/// A small document with `n` objects.
fn normal_doc(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"a\",\"b\"],\"ok\":true}}"))
        .collect();
    format!("[{}]", items.join(","))
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        // One connection, served until the client closes it; then the server ends.
        let (s, _) = listener.accept().expect("accept");
        serve(s);
    });
    let mut client = BufReader::new(TcpStream::connect(addr).expect("connect"));
    let mut peaks = Vec::new();
    let mut check_normal = |client: &mut BufReader<TcpStream>, i: usize| {
        let n = 1 + i % 20;
        let a = request(client, normal_doc(n).as_bytes());
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        // An array of n objects, each with 4 fields, one of them an array of 2 strings.
        assert_eq!(v["values"], 1 + n * 7, "request {i}: {}", a.body);
        peaks.push(v["peak"].as_u64().unwrap());
    };
    for i in 0..NORMAL {
        check_normal(&mut client, i);
    }
    // 20 KiB of body that parses into about 600 KiB of `Value`s: over the soft budget inside
    // serde_json, which allocates infallibly.
    let wide = format!("[{}]", vec!["[]"; 10_000 / 3 * 3].join(","));
    assert!(wide.len() >= 20_000 && wide.len() < 40_000);
    let a = request(&mut client, wide.as_bytes());
    assert_eq!(a.status, 413, "the expanding document: {}", a.body);
    let over: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    println!(
        "over-budget request: {} B body, 413, peak {} B (soft budget {SOFT} B)",
        wide.len(),
        over["peak"]
    );
    for i in NORMAL..2 * NORMAL {
        check_normal(&mut client, i);
    }
    drop(client);
    server.join().unwrap();
    peaks.sort_unstable();
    println!(
        "{} normal requests answered 200 around it: peak per request {} B (median), {} B (max)",
        peaks.len(),
        peaks[peaks.len() / 2],
        peaks[peaks.len() - 1]
    );
    println!(
        "scope heaps still live: {} (the answers sent are freed)",
        GLOBAL.live_scopes()
    );
}
