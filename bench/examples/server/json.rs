//! Fallible building blocks, the JSON document parsed into the request's heap, and the answer
//! computed from it (shared by server and client).

use crate::MAX_DEPTH;
use hashbrown::DefaultHashBuilder;
use isoheap::Heap;
use std::fmt;
use std::fmt::Write as _;

/// A byte vector in a request's heap.
pub(crate) type HVec<'h, T> = allocator_api2::vec::Vec<T, &'h Heap>;
/// A hash map in a request's heap.
pub(crate) type HMap<'h, K, V> = hashbrown::HashMap<K, V, DefaultHashBuilder, &'h Heap>;
/// Text in a request's heap (always valid UTF-8: it is copied from a validated body).
pub(crate) type Text<'h> = HVec<'h, u8>;

// ---------------------------------------------------------------------------------------------
// Fallible building blocks
// ---------------------------------------------------------------------------------------------

/// Why a request could not be answered with 200.
#[derive(Debug)]
pub(crate) enum Refusal {
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
pub(crate) fn put(v: &mut Text<'_>, bytes: &[u8]) -> Result<(), Refusal> {
    v.try_reserve(bytes.len())?;
    v.extend_from_slice(bytes);
    Ok(())
}

/// Appends one element, reserving first (the `push` after it cannot allocate).
pub(crate) fn push<'h, T>(v: &mut HVec<'h, T>, x: T) -> Result<(), Refusal> {
    v.try_reserve(1)?;
    v.push(x);
    Ok(())
}

/// `fmt::Write` into the request's heap; a refused reservation is a `fmt::Error`.
pub(crate) struct HeapText<'h>(pub(crate) Text<'h>);

impl fmt::Write for HeapText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put(&mut self.0, s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// `fmt::Write` into a fixed buffer on the stack, for the small error answers: they need no
/// heap, so they can be sent whatever state the request's heap is in.
pub(crate) struct StackText {
    pub(crate) buf: [u8; 512],
    pub(crate) len: usize,
}

impl StackText {
    pub(crate) fn new() -> Self {
        StackText {
            buf: [0; 512],
            len: 0,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
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
pub(crate) fn json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
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
pub(crate) enum Value<'h> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text<'h>),
    Arr(HVec<'h, Value<'h>>),
    Obj(HMap<'h, Text<'h>, Value<'h>>),
}

/// A recursive-descent JSON parser over the body (which is itself in the heap).
pub(crate) struct Parser<'b, 'h> {
    s: &'b [u8],
    i: usize,
    heap: &'h Heap,
}

impl<'h> Parser<'_, 'h> {
    pub(crate) fn document(mut self) -> Result<Value<'h>, Refusal> {
        let v = self.value(0)?;
        self.ws();
        if self.i != self.s.len() {
            return Err(Refusal::Syntax("trailing characters after the document"));
        }
        Ok(v)
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    pub(crate) fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    pub(crate) fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    pub(crate) fn value(&mut self, depth: usize) -> Result<Value<'h>, Refusal> {
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

    pub(crate) fn literal(&mut self, word: &[u8], v: Value<'h>) -> Result<Value<'h>, Refusal> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(Refusal::Syntax("unknown literal"))
        }
    }

    pub(crate) fn object(&mut self, depth: usize) -> Result<Value<'h>, Refusal> {
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

    pub(crate) fn array(&mut self, depth: usize) -> Result<Value<'h>, Refusal> {
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

    pub(crate) fn string(&mut self) -> Result<Text<'h>, Refusal> {
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

    pub(crate) fn number(&mut self) -> Result<Value<'h>, Refusal> {
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
pub(crate) fn hex4(raw: &[u8], at: usize) -> Result<u32, Refusal> {
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
pub(crate) struct Answer<'a> {
    pub(crate) objects: usize,
    pub(crate) keys: usize,
    pub(crate) int_sum: i64,
    pub(crate) float_max: Option<f64>,
    pub(crate) trues: usize,
    pub(crate) words: usize,
    pub(crate) distinct_words: usize,
    /// The most frequent word and its count (ties: the smallest word in byte order).
    pub(crate) top: Option<(&'a str, u32)>,
}

impl Answer<'_> {
    pub(crate) fn write(&self, w: &mut impl fmt::Write) -> fmt::Result {
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
pub(crate) struct Summary<'d, 'h> {
    answer: Answer<'d>,
    freq: HMap<'h, &'d [u8], u32>,
}

impl<'d, 'h> Summary<'d, 'h> {
    pub(crate) fn walk(&mut self, v: &'d Value<'_>) -> Result<(), Refusal> {
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
pub(crate) fn answer<'h>(
    heap: &'h Heap,
    body: &[u8],
    keep_alive: bool,
) -> Result<HeapText<'h>, Refusal> {
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
