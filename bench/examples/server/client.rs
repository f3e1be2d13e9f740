//! The client: deterministic documents, what the server must answer for each, and a load loop
//! that checks every answer.

use crate::HUGE_OBJECTS;
use crate::NORMAL_OBJECTS;
use crate::OVER_EVERY;
use crate::TIMEOUT;
use crate::WIDE_OBJECTS;
use crate::http::head_end;
use crate::json::Answer;
use std::collections::HashMap as StdMap;
use std::fmt::Write as _;
use std::io;
use std::io::Read;
use std::io::Write;
use std::net::SocketAddr;
use std::net::TcpStream;
use std::time::Duration;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Which kind of document request `i` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Normal,
    /// Over budget once parsed: refused while building the document.
    Wide,
    /// Over budget as bytes: refused while reserving the body.
    Huge,
}

pub(crate) fn kind_of(i: usize) -> Kind {
    if i % OVER_EVERY != OVER_EVERY / 2 {
        Kind::Normal
    } else if (i / OVER_EVERY).is_multiple_of(2) {
        Kind::Wide
    } else {
        Kind::Huge
    }
}

/// SplitMix64: a small deterministic generator, so every document can be rebuilt from its index.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }

    pub(crate) fn word(&mut self) -> &'static str {
        WORDS[self.below(WORDS.len() as u64) as usize]
    }
}

pub(crate) const WORDS: [&str; 24] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray",
];

/// What the client expects, computed with std's collections while it writes the document.
#[derive(Default)]
pub(crate) struct Expect {
    objects: usize,
    keys: usize,
    int_sum: i64,
    float_max: Option<f64>,
    trues: usize,
    words: usize,
    freq: StdMap<String, u32>,
}

impl Expect {
    pub(crate) fn text(&mut self, decoded: &str) {
        for word in decoded.split_ascii_whitespace() {
            self.words += 1;
            *self.freq.entry(word.to_owned()).or_default() += 1;
        }
    }

    pub(crate) fn float(&mut self, text: &str) {
        let x: f64 = text.parse().expect("a float the client wrote");
        self.float_max = Some(self.float_max.map_or(x, |m| m.max(x)));
    }

    pub(crate) fn int(&mut self, n: i64) {
        self.int_sum = self.int_sum.wrapping_add(n);
    }

    /// The JSON body the server must answer.
    pub(crate) fn body(&self) -> String {
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
pub(crate) fn key(out: &mut String, first: &mut bool, e: &mut Expect, name: &str) {
    if !*first {
        out.push_str(", ");
    }
    *first = false;
    e.keys += 1;
    let _ = write!(out, "\"{name}\": ");
}

/// Document `i` with `objects` objects, and what the server should answer for it.
pub(crate) fn make_doc(i: usize, objects: usize) -> (String, Expect) {
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
pub(crate) struct Response {
    status: u16,
    body: String,
    keep_alive: bool,
}

/// A client connection with its read buffer.
pub(crate) struct Conn {
    stream: TcpStream,
    pending: std::vec::Vec<u8>,
}

impl Conn {
    pub(crate) fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        Ok(Conn {
            stream,
            pending: std::vec::Vec::new(),
        })
    }

    pub(crate) fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    pub(crate) fn read_response(&mut self) -> io::Result<Response> {
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
pub(crate) struct ClientReport {
    pub(crate) latencies: std::vec::Vec<Duration>,
    pub(crate) ok: usize,
    pub(crate) too_large: usize,
    /// Smallest and largest body sent, per kind (normal, wide, huge).
    pub(crate) body_sizes: [(usize, usize); 3],
}

pub(crate) struct Config {
    pub(crate) requests: usize,
    pub(crate) clients: usize,
    pub(crate) workers: usize,
    pub(crate) close: bool,
}

/// Sends requests `id`, `id + clients`, ... and checks every answer.
pub(crate) fn client(addr: SocketAddr, id: usize, cfg: &Config) -> Result<ClientReport, String> {
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
