//! The one shadow model of the live blocks, shared by the model test and the fuzz targets.
//!
//! [`Shadow`] records every block a [`Front`] hands out (address, exact layout, returned length,
//! a tag), keeps the non-empty ones ordered by address, writes a distinct byte pattern into
//! every block and verifies it before every resize and free, and runs the heap's `check()` after
//! every step. A violation panics with the step and operation ([`Shadow::step`],
//! [`Shadow::op`]). It checks:
//!
//! - every block handed out is aligned, has the documented length (where the front end
//!   promises one), lies inside the heap's range (if given) and overlaps no live block's extent
//!   (its size plus the checked-mode tag, rounded up to 16 bytes: what it takes in the heap);
//! - zeroed allocations and the new bytes of zeroed grows read as zero;
//! - a block's pattern is intact before every resize and free, a resize keeps the bytes it must
//!   keep, and a failed resize leaves the block as it was;
//! - sizes that cannot be a block (at least 2^47 bytes) and alignments above
//!   `isoheap::MAX_ALIGN` fail, and other requests fail only where [`Options::may_fail`];
//! - with [`Options::stats_every_step`], `stats()` after every step (`stats()` flushes the quick
//!   lists, so it changes what the next step finds); always in [`Shadow::check_stats`] and
//!   [`Shadow::check_map`], the documented facts of the counters and the map.

use crate::front::{Caps, Front};
use core::alloc::Layout;
use core::fmt::{Debug, Write as _};
use core::ptr::NonNull;
use isoheap::{GRANULE, Heap, SpanKind, Stats};
use std::collections::BTreeMap;

/// Sizes from here up cannot be served on any machine (x86_64 user space is 2^47 bytes): the
/// allocation must fail.
pub const ABSURD: usize = 1 << 47;

/// Bytes of the tag checked mode puts after every block (`HeapBuilder::checked`'s docs).
pub const TAG: usize = 2;

/// Period of the byte pattern: a prime, so a block copied or handed out at a shifted address
/// does not match its own pattern.
const PERIOD: usize = 4093;

/// Two periods of pseudo-random bytes: byte `i` of the block tagged `t` is
/// `PATTERN[(t % PERIOD + i) % PERIOD]`, and any run of up to `PERIOD` bytes of it is one slice
/// of this table. Filling and comparing go through `copy_from_slice` and slice equality
/// (memcpy/memcmp), not byte loops, which coverage instrumentation and Miri make very slow.
static PATTERN: [u8; 2 * PERIOD] = {
    let mut t = [0u8; 2 * PERIOD];
    let mut i = 0;
    while i < 2 * PERIOD {
        let x = ((i % PERIOD) as u32 + 1).wrapping_mul(0x9E37_79B1);
        t[i] = (x >> 24) as u8;
        i += 1;
    }
    t
};

static ZEROES: [u8; 4096] = [0; 4096];

/// Writes the pattern of `tag` over `s`.
fn fill(s: &mut [u8], tag: u32) {
    let mut off = tag as usize % PERIOD;
    for c in s.chunks_mut(PERIOD) {
        c.copy_from_slice(&PATTERN[off..off + c.len()]);
        off = (off + c.len()) % PERIOD;
    }
}

/// The first byte of `s` that differs from the pattern of `tag`, with the expected value.
fn mismatch(s: &[u8], tag: u32) -> Option<(usize, u8)> {
    let mut off = tag as usize % PERIOD;
    for (k, c) in s.chunks(PERIOD).enumerate() {
        let want = &PATTERN[off..off + c.len()];
        if c != want {
            let i = (0..c.len())
                .find(|&i| c[i] != want[i])
                .expect("a difference");
            return Some((k * PERIOD + i, want[i]));
        }
        off = (off + c.len()) % PERIOD;
    }
    None
}

/// The first byte of `s` that is not zero.
fn nonzero(s: &[u8]) -> Option<usize> {
    for (k, c) in s.chunks(ZEROES.len()).enumerate() {
        if c != &ZEROES[..c.len()] {
            return Some(
                k * ZEROES.len() + c.iter().position(|&b| b != 0).expect("a nonzero byte"),
            );
        }
    }
    None
}

fn round16(n: usize) -> usize {
    n.next_multiple_of(GRANULE)
}

/// Must a request for `layout` fail on every heap?
pub fn must_fail(layout: Layout) -> bool {
    layout.size() >= ABSURD || (layout.size() > 0 && layout.align() > isoheap::MAX_ALIGN)
}

/// A live block as the model sees it.
#[derive(Debug, Clone, Copy)]
pub struct Rec {
    /// Where it starts.
    pub ptr: NonNull<u8>,
    /// The layout it was allocated (or last resized) with.
    pub layout: Layout,
    /// The length the heap returned (the usable bytes, all holding the pattern).
    pub len: usize,
    tag: u32,
}

/// How a [`Shadow`] judges its heap.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// May a request that could be served fail (a heap with a limit, a buffer, a budget)? Else
    /// a failure is a bug.
    pub may_fail: bool,
    /// Check `stats()` against the model after every step (it flushes the quick lists).
    pub stats_every_step: bool,
    /// The budget the heap was built with.
    pub budget: Option<usize>,
    /// Whether `stats().budget` is the heap's budget as set (a `Heap`; not a `SyncHeap`).
    pub track_budget: bool,
    /// A bound on `stats().mapped` (a builder's limit, a buffer's length).
    pub limit: Option<usize>,
    /// The address range every block must lie in (a buffer heap's buffer).
    pub range: Option<(usize, usize)>,
}

/// The shadow model of a heap's live blocks; `O` is the caller's operation type, shown in
/// failure messages.
pub struct Shadow<O: Debug = ()> {
    caps: Caps,
    checked: bool,
    opts: Options,
    live: Vec<Rec>,
    /// start -> end of the extent of every live block of nonzero size.
    addrs: BTreeMap<usize, usize>,
    /// Sum of live lengths.
    bytes: usize,
    /// Sum of the live blocks' [`Shadow::cost`]: what `stats().in_use` must say.
    in_use: usize,
    /// Highest `in_use` since the last reset.
    peak: usize,
    /// Failed operations, ever (bounds `budget_refusals`).
    failed: usize,
    budget: Option<usize>,
    budget_ever: bool,
    tags: u32,
    /// The step being run (for failure messages).
    pub step: usize,
    /// The operation being run (for failure messages); `None` at the start and end.
    pub op: Option<O>,
}

/// Panics with the shadow's step and operation.
macro_rules! bug {
    ($m:expr, $($arg:tt)*) => {
        $m.bug(format_args!($($arg)*))
    };
}

impl<O: Debug> Shadow<O> {
    /// A model of the empty heap behind `f`, judged by `opts`.
    pub fn new<F: Front + ?Sized>(f: &F, opts: Options) -> Self {
        Shadow {
            caps: f.caps(),
            checked: f.checked(),
            opts,
            live: Vec::new(),
            addrs: BTreeMap::new(),
            bytes: 0,
            in_use: 0,
            peak: 0,
            failed: 0,
            budget: opts.budget,
            budget_ever: opts.budget.is_some(),
            tags: 0,
            step: 0,
            op: None,
        }
    }

    /// Panics with `msg`, naming the step and operation.
    #[track_caller]
    pub fn bug(&self, msg: core::fmt::Arguments<'_>) -> ! {
        match &self.op {
            Some(op) => panic!("op #{} {:?}: {}", self.step, op, msg),
            None => panic!("at the start or end of the script: {msg}"),
        }
    }

    /// The front end's capabilities.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Number of live blocks.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// No live blocks?
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Live block `i`.
    pub fn get(&self, i: usize) -> Rec {
        self.live[i]
    }

    /// Sum of the live blocks' lengths.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Live block `which` modulo their number, if there is one.
    pub fn pick(&self, which: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| which % self.live.len())
    }

    /// What a block of `size` bytes adds to `stats().in_use`: its extent in the heap.
    pub fn cost(&self, size: usize) -> usize {
        match size {
            0 => 0,
            s if self.checked => round16(s + TAG),
            s => round16(s),
        }
    }

    /// The layout to free or resize live block `i` with: its own, or with `fit` (where the
    /// contract allows) its returned length at its alignment.
    pub fn fit_layout(&self, i: usize, fit: bool) -> Layout {
        let r = &self.live[i];
        if fit && self.caps.fit_range && r.layout.size() > 0 {
            Layout::from_size_align(r.len, r.layout.align()).expect("returned length")
        } else {
            r.layout
        }
    }

    /// The heap's `check()` after `what`, and with [`Options::stats_every_step`] its counters.
    pub fn after<F: Front + ?Sized>(&self, f: &F, what: &str) {
        if let Err(e) = f.check() {
            bug!(self, "check() failed after {what}: {e}");
        }
        if self.opts.stats_every_step {
            let s = f.stats();
            if s.in_use + s.free + s.metadata != s.mapped {
                bug!(
                    self,
                    "after {what}: in_use + free + metadata != mapped: {s:?}"
                );
            }
            if s.in_use != self.in_use {
                bug!(
                    self,
                    "after {what}: stats().in_use = {}, but the live blocks take {}",
                    s.in_use,
                    self.in_use
                );
            }
            if s.peak_in_use < s.in_use {
                bug!(self, "after {what}: peak below in use: {s:?}");
            }
        }
    }

    /// Verifies the first `upto` bytes of `r` still hold its pattern.
    fn verify(&self, r: &Rec, upto: usize, what: &str) {
        // SAFETY: the block is live and `len` bytes long, all written by `link`.
        let s = unsafe { core::slice::from_raw_parts(r.ptr.as_ptr(), upto.min(r.len)) };
        if let Some((i, want)) = mismatch(s, r.tag) {
            bug!(
                self,
                "{what}: block {:#x} ({:?}, len {}) byte {i} is {:#04x}, expected {want:#04x}",
                r.ptr.addr(),
                r.layout,
                r.len,
                s[i],
            );
        }
    }

    /// Verifies live block `i`'s pattern.
    pub fn verify_live(&self, i: usize, what: &str) {
        self.verify(&self.live[i], self.live[i].len, what);
    }

    /// Verifies every live block's pattern.
    pub fn verify_all(&self, what: &str) {
        for r in &self.live {
            self.verify(r, r.len, what);
        }
    }

    fn unlink(&mut self, r: &Rec) {
        if r.layout.size() > 0 {
            self.addrs.remove(&r.ptr.addr().get());
        }
        self.bytes -= r.len;
        self.in_use -= self.cost(r.layout.size());
    }

    /// Validates a block the heap just handed out for `layout` and returns (pointer, length).
    fn accept(&self, b: NonNull<[u8]>, layout: Layout, what: &str) -> (NonNull<u8>, usize) {
        if must_fail(layout) {
            bug!(
                self,
                "{what} succeeded for {layout:?} (size >= 2^47 or align > MAX_ALIGN)"
            );
        }
        let p = b.cast::<u8>();
        let len = b.len();
        let a = p.addr().get();
        if !a.is_multiple_of(layout.align()) {
            bug!(
                self,
                "{what} returned {a:#x}, not aligned to {}",
                layout.align()
            );
        }
        let expected = if self.checked {
            layout.size()
        } else {
            round16(layout.size())
        };
        if self.caps.exact_len && len != expected {
            bug!(
                self,
                "{what} returned length {len} for {layout:?}, expected {expected} (checked mode: {})",
                self.checked
            );
        }
        if len < layout.size() {
            bug!(self, "{what} returned length {len} < {}", layout.size());
        }
        let extent = self.cost(layout.size()).max(len);
        if extent > 0
            && let Some((&s, &e)) = self.addrs.range(..a + extent).next_back()
            && e > a
        {
            bug!(
                self,
                "{what} returned {a:#x}+{len} (extent {extent}), overlapping live block {s:#x}..{e:#x}"
            );
        }
        if len > 0
            && let Some((lo, hi)) = self.opts.range.filter(|&(lo, hi)| a < lo || a + len > hi)
        {
            bug!(
                self,
                "{what} returned {a:#x}+{len}, outside the heap's range {lo:#x}..{hi:#x}"
            );
        }
        (p, len)
    }

    fn link(&mut self, ptr: NonNull<u8>, layout: Layout, len: usize) {
        self.tags = self.tags.wrapping_add(1);
        let tag = self.tags.wrapping_mul(0x2545_F491);
        // SAFETY: a live block of `len` bytes that the model owns.
        let s = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
        fill(s, tag);
        let extent = self.cost(layout.size()).max(len);
        if layout.size() > 0 {
            self.addrs
                .insert(ptr.addr().get(), ptr.addr().get() + extent);
        }
        self.bytes += len;
        self.in_use += self.cost(layout.size());
        self.peak = self.peak.max(self.in_use);
        self.live.push(Rec {
            ptr,
            layout,
            len,
            tag,
        });
    }

    fn zeroes(&self, p: NonNull<u8>, from: usize, to: usize, what: &str) {
        // SAFETY: p..p+to is a live block the heap just handed out.
        let s = unsafe { core::slice::from_raw_parts(p.as_ptr(), to) };
        if let Some(i) = nonzero(&s[from..]) {
            bug!(
                self,
                "{what}: byte {} of {:#x} (len {to}) is {:#04x}, not zero",
                from + i,
                p.addr(),
                s[from + i]
            );
        }
    }

    /// After an operation that made `in_use` grow: the budget held.
    fn within_budget(&self, what: &str) {
        if let Some(b) = self.budget
            && self.in_use > b
        {
            bug!(
                self,
                "{what} succeeded past the budget: in use {} > {b}",
                self.in_use
            );
        }
    }

    /// Counts a failed request for `layout`: a bug unless the heap may fail or must.
    pub fn refused(&mut self, layout: Layout, what: &str) {
        if !self.opts.may_fail && !must_fail(layout) {
            bug!(
                self,
                "{what} of {layout:?} failed on a heap that must serve it"
            );
        }
        self.failed += 1;
    }

    /// Adopts a fresh block: checks it, checks it is zero if `zero`, patterns it, links it.
    pub fn adopt(&mut self, b: NonNull<[u8]>, layout: Layout, zero: bool, what: &str) {
        let (p, len) = self.accept(b, layout, what);
        if zero {
            self.zeroes(p, 0, len, what);
        }
        self.link(p, layout, len);
        if layout.size() > 0 {
            self.within_budget(what);
        }
    }

    /// Removes live block `i` from the model (after verifying it) and returns it with the
    /// layout to free it with (see [`Shadow::fit_layout`]); the caller frees it.
    pub fn take(&mut self, i: usize, fit: bool, what: &str) -> (NonNull<u8>, Layout) {
        let l = self.fit_layout(i, fit);
        let r = self.live.swap_remove(i);
        self.verify(&r, r.len, what);
        self.unlink(&r);
        (r.ptr, l)
    }

    // ---- the primitives, each followed by `after` ----

    /// Allocates `l` (zeroed if `zero`).
    pub fn alloc<F: Front + ?Sized>(&mut self, f: &F, l: Layout, zero: bool) {
        let what = if zero { "allocate_zeroed" } else { "allocate" };
        let r = if zero {
            f.allocate_zeroed(l)
        } else {
            f.allocate(l)
        };
        match r {
            Ok(b) => self.adopt(b, l, zero, what),
            Err(_) => self.refused(l, what),
        }
        self.after(f, what);
    }

    /// Frees live block `i` (with its returned length as the size, if `fit`).
    pub fn free<F: Front + ?Sized>(&mut self, f: &F, i: usize, fit: bool) {
        let (p, l) = self.take(i, fit, "before deallocate");
        // SAFETY: a live block of this heap; `l` fits it.
        unsafe { f.deallocate(p, l) };
        self.after(f, "deallocate");
    }

    /// Grows live block `i` from `old` (which must fit it: [`Shadow::fit_layout`]) to `new`
    /// (zeroing the new bytes if `zero`); `new` must be at least as large.
    pub fn grow<F: Front + ?Sized>(
        &mut self,
        f: &F,
        i: usize,
        old: Layout,
        new: Layout,
        zero: bool,
    ) {
        let what = if zero { "grow_zeroed" } else { "grow" };
        self.verify(&self.live[i], self.live[i].len, "before grow");
        assert!(
            new.size() >= old.size(),
            "the model grows only to larger sizes"
        );
        let ptr = self.live[i].ptr;
        // SAFETY: a live block; `old` fits it; `new` is at least as large.
        let r = unsafe {
            if zero {
                f.grow_zeroed(ptr, old, new)
            } else {
                f.grow(ptr, old, new)
            }
        };
        match r {
            Ok(b) => {
                let r = self.live.swap_remove(i);
                self.unlink(&r);
                let (p, len) = self.accept(b, new, what);
                let moved = Rec { ptr: p, len, ..r };
                self.verify(&moved, old.size(), what);
                if zero && self.caps.grow_zeroes {
                    self.zeroes(p, old.size(), len, what);
                }
                self.link(p, new, len);
                if self.cost(new.size()) > self.cost(r.layout.size()) {
                    self.within_budget(what);
                }
            }
            Err(_) => {
                self.refused(new, what);
                self.verify(&self.live[i], self.live[i].len, "after a failed grow");
            }
        }
        self.after(f, what);
    }

    /// Shrinks live block `i` from `old` (which must fit it) to `new`, no larger.
    pub fn shrink<F: Front + ?Sized>(&mut self, f: &F, i: usize, old: Layout, new: Layout) {
        self.verify(&self.live[i], self.live[i].len, "before shrink");
        assert!(
            new.size() <= old.size(),
            "the model shrinks only to smaller sizes"
        );
        let ptr = self.live[i].ptr;
        // SAFETY: a live block; `old` fits it; `new` is no larger.
        match unsafe { f.shrink(ptr, old, new) } {
            Ok(b) => {
                let r = self.live.swap_remove(i);
                self.unlink(&r);
                let (p, len) = self.accept(b, new, "shrink");
                let moved = Rec { ptr: p, len, ..r };
                self.verify(&moved, new.size(), "shrink");
                self.link(p, new, len);
            }
            Err(_) => {
                self.refused(new, "shrink");
                self.verify(&self.live[i], self.live[i].len, "after a failed shrink");
            }
        }
        self.after(f, "shrink");
    }

    /// Forgets every live block (the heap was reset: they are all gone at once), and with
    /// `budget`, the heap's budget is now that one.
    pub fn forget_all(&mut self, budget: Option<Option<usize>>) {
        self.live.clear();
        self.addrs.clear();
        self.bytes = 0;
        self.in_use = 0;
        self.peak = 0;
        if let Some(b) = budget {
            self.budget = b;
        }
    }

    /// The heap's budget was set to `b` (`Heap::set_budget`).
    pub fn set_budget(&mut self, b: Option<usize>) {
        self.budget = b;
        self.budget_ever |= b.is_some();
    }

    // ---- counters and map ----

    /// The documented facts of [`Stats`]: `in_use` is the live blocks' sizes rounded up to 16;
    /// `in_use + free + metadata == mapped`; `largest_free` is one of the `free_blocks` free
    /// spans (so at most `free`, and `free` is at most `free_blocks × largest_free`); the peak is
    /// at least every `in_use` seen since the last reset; refusals by the budget are failures
    /// (and there are none without a budget); `budget` is the one set; a limit bounds `mapped`.
    pub fn check_stats<F: Front + ?Sized>(&self, f: &F) -> Stats {
        let s = f.stats();
        self.after(f, "stats()");
        if s.in_use != self.in_use {
            bug!(
                self,
                "stats().in_use = {}, but the live blocks take {} ({:?})",
                s.in_use,
                self.in_use,
                s
            );
        }
        if s.in_use + s.free + s.metadata != s.mapped {
            bug!(self, "in_use + free + metadata != mapped: {s:?}");
        }
        if s.largest_free > s.free
            || (s.free == 0) != (s.free_blocks == 0)
            || (s.free > 0 && s.largest_free == 0)
        {
            bug!(self, "free, free_blocks and largest_free disagree: {s:?}");
        }
        if s.largest_free.saturating_mul(s.free_blocks) < s.free {
            bug!(
                self,
                "{} free spans of at most {} bytes cannot hold {} free bytes",
                s.free_blocks,
                s.largest_free,
                s.free
            );
        }
        if s.peak_in_use < s.in_use || s.peak_in_use < self.peak {
            bug!(
                self,
                "peak_in_use {} below in use {} or the model's peak {}",
                s.peak_in_use,
                s.in_use,
                self.peak
            );
        }
        if s.budget_refusals > self.failed || (!self.budget_ever && s.budget_refusals > 0) {
            bug!(
                self,
                "{} budget refusals, but {} failures (budget ever set: {})",
                s.budget_refusals,
                self.failed,
                self.budget_ever
            );
        }
        if self.opts.track_budget && s.budget != self.budget {
            bug!(
                self,
                "stats().budget = {:?}, set {:?}",
                s.budget,
                self.budget
            );
        }
        if let Some(l) = self.opts.limit
            && s.mapped > l
        {
            bug!(self, "mapped {} past the limit {l}", s.mapped);
        }
        s
    }

    /// The documented facts of [`Heap::map`]: per chunk (in address order), spans tile the
    /// chunk from its metadata to its end, the frontier (if any) last; no two free spans and no
    /// two used spans are adjacent; the totals agree with the map's `stats()` (which agree with
    /// the model); every live block lies inside a used span; `largest_free()` is
    /// `stats().largest_free`. With `render`, the renderers run (into a `String`).
    pub fn check_map(&self, h: &Heap, render: bool) {
        let map = h.map();
        let st = map.stats();
        let (mut chunks, mut mapped, mut used, mut free, mut spans_free, mut meta, mut spans) =
            (0, 0, 0, 0, 0, 0, 0);
        let mut used_spans = Vec::new();
        let mut last_end = 0;
        for c in map.chunks() {
            if c.index != chunks || c.addr < last_end || c.len == 0 {
                bug!(
                    self,
                    "map: chunk {c:?} out of order (expected index {chunks}, above {last_end:#x})"
                );
            }
            chunks += 1;
            mapped += c.len;
            last_end = c.addr + c.len;
            let mut at = c.addr;
            let mut prev: Option<SpanKind> = None;
            for s in map.spans_in(&c) {
                spans += 1;
                if s.addr != at || s.len == 0 || s.len % GRANULE != 0 || s.chunk != c.index {
                    bug!(
                        self,
                        "map: span {s:?} does not follow at {at:#x} in chunk {c:?}"
                    );
                }
                match (prev, s.kind) {
                    (None, SpanKind::Metadata) => {}
                    (None, _) | (Some(_), SpanKind::Metadata) => {
                        bug!(self, "map: metadata not first in chunk {c:?}: {s:?}")
                    }
                    (Some(SpanKind::Frontier), _) => {
                        bug!(self, "map: span {s:?} after the frontier")
                    }
                    (Some(p), k) if p.is_free() && k.is_free() => {
                        bug!(self, "map: adjacent free spans at {:#x}", s.addr)
                    }
                    (Some(SpanKind::Used), SpanKind::Used) => {
                        bug!(self, "map: adjacent used spans at {:#x}", s.addr)
                    }
                    _ => {}
                }
                match s.kind {
                    SpanKind::Used => {
                        used += s.len;
                        used_spans.push((s.addr, s.end()));
                    }
                    SpanKind::Free | SpanKind::Frontier => {
                        free += s.len;
                        spans_free += 1;
                    }
                    SpanKind::Metadata => meta += s.len,
                    _ => {}
                }
                prev = Some(s.kind);
                at = s.end();
            }
            if at != c.addr + c.len {
                bug!(self, "map: spans of chunk {c:?} end at {at:#x}");
            }
        }
        let all = map.spans().count();
        // A heap over a buffer counts the quick lists' table carved from the buffer's start in
        // `mapped` and `metadata` (see `Stats::quick_table`); the map shows chunks only.
        let table = if st.mapped == mapped + st.quick_table && st.metadata == meta + st.quick_table
        {
            st.quick_table
        } else {
            0
        };
        let (mapped, meta) = (mapped + table, meta + table);
        if (chunks, mapped, used, free, spans_free, meta, all)
            != (
                st.chunks,
                st.mapped,
                self.in_use,
                st.free,
                st.free_blocks,
                st.metadata,
                spans,
            )
        {
            bug!(
                self,
                "map totals (chunks {chunks}, mapped {mapped}, used {used}, free {free} in {spans_free} spans, metadata {meta}, {spans} spans by chunk / {all} in all) disagree with {st:?} / model in use {}",
                self.in_use
            );
        }
        let largest = map.largest_free().map_or(0, |s| s.len);
        if largest != st.largest_free {
            bug!(
                self,
                "map: largest free span {largest}, stats say {}",
                st.largest_free
            );
        }
        let mut blocks: Vec<(usize, usize)> = self
            .live
            .iter()
            .filter(|r| r.len > 0)
            .map(|r| (r.ptr.addr().get(), r.len))
            .collect();
        blocks.sort_unstable();
        let mut k = 0;
        for (a, len) in blocks {
            while k < used_spans.len() && used_spans[k].1 <= a {
                k += 1;
            }
            if k == used_spans.len() || used_spans[k].0 > a || used_spans[k].1 < a + len {
                bug!(
                    self,
                    "map: live block {a:#x}+{len} is not inside a used span"
                );
            }
        }
        if render {
            let mut s = String::new();
            write!(s, "{map}").expect("text");
            map.write_strips(&mut s, 64).expect("strips");
            map.write_svg(&mut s).expect("svg");
            write!(s, "{h:?}").expect("debug");
        }
    }

    /// Frees every live block (checking after each), then the heap must be empty.
    pub fn teardown<F: Front + ?Sized>(&mut self, f: &F) {
        while let Some(i) = self.pick(self.live.len() / 2) {
            self.free(f, i, i % 2 == 0);
        }
        self.check_stats(f);
        let s = f.stats();
        if s.in_use != 0 || s.free + s.metadata != s.mapped {
            bug!(self, "every block freed, yet {s:?}");
        }
    }

    /// Frees every live block, newest first, with its own layout (checking after each); then
    /// the heap must have merged back into one free span per chunk, and its largest span must be
    /// allocatable without mapping more.
    pub fn finish_merged<F: Front + ?Sized>(&mut self, f: &F) {
        while let Some(i) = self.live.len().checked_sub(1) {
            let (p, l) = self.take(i, false, "final free");
            // SAFETY: a live block of this heap, with its own layout.
            unsafe { f.deallocate(p, l) };
        }
        self.after(f, "freeing everything");
        let s = f.stats();
        if s.in_use != 0 || s.free_blocks != s.chunks || s.free + s.metadata != s.mapped {
            bug!(self, "every block freed, yet not fully merged: {s:?}");
        }
        if s.largest_free > 0 {
            let tag = if self.checked { TAG } else { 0 };
            let layout = Layout::from_size_align(s.largest_free - tag, GRANULE).unwrap();
            let Ok(b) = f.allocate(layout) else {
                bug!(
                    self,
                    "largest free span of {} bytes not allocatable",
                    s.largest_free
                );
            };
            let after = f.stats();
            if after.mapped != s.mapped || after.in_use != s.largest_free {
                bug!(
                    self,
                    "allocating the largest span ({} bytes) mapped more or used other than it: {after:?}",
                    s.largest_free
                );
            }
            // SAFETY: just allocated with this layout.
            unsafe { f.deallocate(b.cast(), layout) };
            self.after(f, "allocating and freeing the largest span");
        }
    }
}
