//! The shared driver of isoheap's fuzz targets.
//!
//! Every target decodes its input into a setup (how to build the heap) and a sequence of
//! [`Op`]s, wraps its front end (a `Heap` through allocator-api2's or core's `Allocator`, a heap
//! over a buffer, a `SyncHeap`/`SharedHeap`, a `GlobalHeap` through `GlobalAlloc`) in a
//! [`Front`], and hands both to [`run`]. The driver keeps a model of the live blocks (address,
//! exact layout, returned length, a tag), writes a distinct byte pattern into every live block,
//! and checks after every single operation:
//!
//! - the heap's own `check()` (a failure is a crash);
//! - every block handed out is aligned, has the documented length, does not overlap any live
//!   block (and lies inside the buffer, for a buffer heap);
//! - zeroed allocations and the new bytes of zeroed grows read as zero;
//! - a block's pattern is intact before every resize and free, and a resize keeps the bytes it
//!   must keep;
//! - sizes that cannot be a block (at least 2^47 bytes) and alignments above
//!   `isoheap::MAX_ALIGN` fail, and a failure leaves the live set (and the block to resize) as
//!   it was;
//! - on `Stats` and `Map` ops, the counters and the map agree with the model (see
//!   [`Model::check_stats`] and [`Model::check_map`] for exactly which documented facts).
//!
//! Only isoheap's public API is used.

use arbitrary::{Arbitrary, Result as ArbResult, Unstructured};
use core::alloc::Layout;
use core::fmt::Write as _;
use core::ptr::NonNull;
use isoheap::{Heap, HeapError, SpanKind, Stats};
use std::collections::BTreeMap;

/// Most operations run per input (inputs are short anyway; this bounds the worst case).
pub const MAX_OPS: usize = 2048;
/// Cap on the bytes of live blocks the driver keeps (a request past it is skipped), so that no
/// input can run the fuzzer out of memory.
pub const CAP: usize = 64 << 20;
/// Sizes from here up cannot be served on any machine (x86_64 user space is 2^47 bytes): the
/// allocation must fail.
pub const ABSURD: usize = 1 << 47;

/// Bytes guarded on each side of a buffer heap's buffer.
pub const GUARD: usize = 64;

// ---------------------------------------------------------------------------------------------
// Operations, decoded from the fuzzer's bytes.

/// A requested size: mostly small, sometimes up to a few MiB, sometimes absurd.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct Size {
    class: u8,
    raw: u32,
}

impl Size {
    /// The size in bytes (not yet clamped to a valid `Layout`; see [`layout`]).
    pub fn bytes(self) -> usize {
        let r = self.raw as usize;
        match self.class % 32 {
            0..=17 => r % 129,
            18..=25 => r % 4097,
            26..=28 => r % 65537,
            29 => r % ((1 << 20) + 1),
            30 => r % ((4 << 20) + 1),
            _ => absurd(r),
        }
    }
}

/// Sizes that no heap can serve, near `isize::MAX` and `usize::MAX` and in between; those that
/// are not even a valid `Layout` are clamped by [`layout`] to the largest valid one.
fn absurd(r: usize) -> usize {
    let k = r >> 3;
    let imax = isize::MAX as usize;
    match r & 7 {
        0 => imax,
        1 => imax - (k & 31),
        2 => usize::MAX - (k & 0xffff),
        3 => ABSURD + k,
        4 => 1 << 62,
        5 => imax - 15 - (k & 15),
        6 => 1 << (47 + (k % 16)),
        _ => ABSURD | (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) & imax),
    }
}

/// An alignment: mostly 1..=16, often up to 4096, rarely 8 KiB..128 MiB (above `MAX_ALIGN`).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct Align(u8);

impl Align {
    pub fn bytes(self) -> usize {
        let a = self.0;
        if a < 128 {
            1 << (a % 5)
        } else if a < 236 {
            1 << (a % 13)
        } else {
            1 << (13 + a % 15)
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct Req {
    pub size: Size,
    pub align: Align,
}

/// One step of a script. Blocks are picked by index modulo the number of live blocks; `fit`
/// passes the length the heap returned instead of the requested size as the old layout's size
/// (both "fit" the block, per the `Allocator` contract).
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Alloc {
        req: Req,
        zero: bool,
    },
    Free {
        which: u16,
        fit: bool,
    },
    Grow {
        which: u16,
        by: Size,
        align: Option<Align>,
        fit: bool,
        zero: bool,
    },
    Shrink {
        which: u16,
        keep: u16,
        align: Option<Align>,
        fit: bool,
    },
    /// Up to 32 allocations of one layout.
    Burst {
        n: u8,
        req: Req,
        zero: bool,
    },
    /// Frees up to 32 blocks, `step` apart.
    FreeMany {
        start: u16,
        step: u8,
        n: u8,
        fit: bool,
    },
    /// Frees a block and allocates its exact layout again (the quick lists' case).
    Reuse {
        which: u16,
        zero: bool,
    },
    Stats,
    Map {
        render: bool,
    },
    /// `reset()` (or, with `renew`, drop the heap and build a new one like it), where the front
    /// end has it; every live block is forgotten.
    Reset {
        renew: bool,
    },
    SetBudget {
        budget: Option<u32>,
    },
    /// Frees some blocks and allocates others on other threads, where the front end is `Sync`.
    Elsewhere {
        frees: u8,
        allocs: u8,
        req: Req,
        zero: bool,
    },
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> ArbResult<Self> {
        let sel: u8 = u.arbitrary()?;
        Ok(match sel {
            0..=89 => Op::Alloc {
                req: u.arbitrary()?,
                zero: sel >= 70,
            },
            90..=149 => Op::Free {
                which: u.arbitrary()?,
                fit: u.arbitrary()?,
            },
            150..=189 => Op::Grow {
                which: u.arbitrary()?,
                by: u.arbitrary()?,
                align: u.arbitrary()?,
                fit: u.arbitrary()?,
                zero: sel >= 172,
            },
            190..=209 => Op::Shrink {
                which: u.arbitrary()?,
                keep: u.arbitrary()?,
                align: u.arbitrary()?,
                fit: u.arbitrary()?,
            },
            210..=217 => Op::Burst {
                n: u.arbitrary()?,
                req: u.arbitrary()?,
                zero: u.arbitrary()?,
            },
            218..=223 => Op::FreeMany {
                start: u.arbitrary()?,
                step: u.arbitrary()?,
                n: u.arbitrary()?,
                fit: u.arbitrary()?,
            },
            224..=229 => Op::Reuse {
                which: u.arbitrary()?,
                zero: u.arbitrary()?,
            },
            230..=235 => Op::Stats,
            236..=239 => Op::Map {
                render: u.arbitrary()?,
            },
            240..=241 => Op::Reset {
                renew: u.arbitrary()?,
            },
            242..=245 => Op::SetBudget {
                budget: u.arbitrary()?,
            },
            _ => Op::Elsewhere {
                frees: u.arbitrary()?,
                allocs: u.arbitrary()?,
                req: u.arbitrary()?,
                zero: u.arbitrary()?,
            },
        })
    }
}

/// `Layout::from_size_align(size, align)`, or, when `size` is too large for a `Layout` at that
/// alignment, the largest size that is one (itself absurd).
pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap_or_else(|_| {
        Layout::from_size_align(isize::MAX as usize + 1 - align, align).expect("largest layout")
    })
}

fn round16(n: usize) -> usize {
    (n + 15) & !15
}

/// Bytes of the tag checked mode puts after every block (`HeapBuilder::checked`'s docs).
const TAG: usize = 2;

/// Whether the crate's heaps are in checked mode by default (builds with debug assertions or
/// the `checked` feature): what `SyncHeap` and `GlobalHeap` use.
pub fn checked_default() -> bool {
    Heap::new().is_checked()
}

// ---------------------------------------------------------------------------------------------
// Front ends.

/// What a front end's contract allows and promises.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// The returned length is the request rounded up to 16 bytes (`Heap::allocate`'s docs).
    pub exact_len: bool,
    /// Checked mode (`HeapBuilder::checked`): `allocate` returns exactly the size asked, and
    /// each block carries 2 more bytes (a tag), so its size in `stats().in_use` is the request
    /// plus 2, rounded up to 16.
    pub checked: bool,
    /// A block may be freed/resized with any size between the request and the returned length.
    pub fit_range: bool,
    /// A resize may ask for another alignment.
    pub align_change: bool,
    /// Zero-size layouts may be asked for.
    pub zero_size: bool,
    /// `grow(.., zero = true)` zeroes the new bytes.
    pub grow_zeroes: bool,
    /// [`Front::elsewhere`] is implemented.
    pub threads: bool,
}

impl Caps {
    /// The `Allocator` traits.
    pub const ALLOCATOR: Caps = Caps {
        exact_len: true,
        fit_range: true,
        align_change: true,
        zero_size: true,
        grow_zeroes: true,
        checked: false,
        threads: false,
    };
    /// `GlobalAlloc`: exact layouts, no zero sizes, `realloc` keeps the alignment, no zeroing
    /// grow; the length is what was asked for.
    pub const GLOBAL: Caps = Caps {
        exact_len: false,
        fit_range: false,
        align_change: false,
        zero_size: false,
        grow_zeroes: false,
        checked: false,
        threads: true,
    };
}

/// A value that may cross to another thread (raw block pointers, whose blocks the model hands
/// over whole).
pub struct Sendable<T>(pub T);
// SAFETY: used only for block pointers whose blocks are owned by whoever holds the value.
unsafe impl<T> Send for Sendable<T> {}

pub type Block = NonNull<[u8]>;

/// One front end of isoheap, as the driver uses it. `Err(())` is the front end's failure
/// (`AllocError`, or null for `GlobalAlloc`).
pub trait Front {
    fn caps(&self) -> Caps;
    fn allocate(&self, layout: Layout, zero: bool) -> Result<Block, ()>;
    /// # Safety
    /// The `Allocator`/`GlobalAlloc` contract: a live block of this heap that fits `layout`.
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout);
    /// # Safety
    /// As for `Allocator::grow` (or `GlobalAlloc::realloc`).
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<Block, ()>;
    /// # Safety
    /// As for `Allocator::shrink` (or `GlobalAlloc::realloc`).
    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<Block, ()>;
    /// The heap's `check()`, plus whatever else the front end can verify.
    fn check(&self) -> Result<(), String>;
    fn stats(&self) -> Stats;
    /// The `Heap` itself, for `map()` and `set_budget()`.
    fn heap(&self) -> Option<&Heap> {
        None
    }
    /// The budget the heap was built with.
    fn budget(&self) -> Option<usize> {
        None
    }
    /// A bound on `stats().mapped` (a builder's limit, a buffer's length).
    fn limit(&self) -> Option<usize> {
        None
    }
    /// Resets the heap (or, with `renew`, builds a new one like it, where the front end can),
    /// if the front end can: `None` if it cannot, else `Some(renewed)`. A renewed heap has the
    /// budget it was built with; a reset one keeps what `set_budget` set.
    fn reset(&mut self, _renew: bool) -> Option<bool> {
        None
    }
    /// The address range every block must lie in.
    fn range(&self) -> Option<(usize, usize)> {
        None
    }
    /// Frees `frees` and allocates `allocs` on other threads (only if `caps().threads`).
    fn elsewhere(
        &self,
        _frees: Vec<(Sendable<NonNull<u8>>, Layout)>,
        _allocs: &[(Layout, bool)],
    ) -> Vec<Result<Sendable<Block>, ()>> {
        unreachable!("front end without threads")
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

/// Period of the byte pattern: a prime, so a block copied or handed out at a shifted address
/// does not match its own pattern.
const PERIOD: usize = 4093;

/// Two periods of pseudo-random bytes: byte `i` of the block tagged `t` is
/// `PATTERN[(t % PERIOD + i) % PERIOD]`, and any run of up to `PERIOD` bytes of it is one slice
/// of this table. Filling and comparing go through `copy_from_slice` and slice equality
/// (memcpy/memcmp), not byte loops, which coverage instrumentation would make very slow.
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

struct Rec {
    ptr: NonNull<u8>,
    /// The layout it was allocated (or last resized) with.
    layout: Layout,
    /// The length the heap returned (the usable bytes, all holding the pattern).
    len: usize,
    tag: u32,
}

/// The driver's model of the heap: live blocks and what the counters must say.
pub struct Model {
    caps: Caps,
    live: Vec<Rec>,
    /// start -> end of every live block of nonzero length.
    addrs: BTreeMap<usize, usize>,
    /// Sum of live lengths (for the cap).
    bytes: usize,
    /// Sum of the live blocks' [`Model::cost`]: what `stats().in_use` must say.
    in_use: usize,
    /// Highest `in_use` since the last reset.
    peak: usize,
    /// Failed operations, ever (bounds `budget_refusals`).
    failed: usize,
    budget: Option<usize>,
    budget_ever: bool,
    tags: u32,
    /// Where every block must lie (a buffer heap's buffer).
    range: Option<(usize, usize)>,
    step: usize,
    op: Option<Op>,
}

macro_rules! bug {
    ($m:expr, $($arg:tt)*) => {
        match $m.op {
            Some(op) => panic!("op #{} {:?}: {}", $m.step, op, format!($($arg)*)),
            None => panic!("at the start or end of the script: {}", format!($($arg)*)),
        }
    };
}

fn must_fail(layout: Layout) -> bool {
    layout.size() >= ABSURD || (layout.size() > 0 && layout.align() > isoheap::MAX_ALIGN)
}

impl Model {
    fn new(caps: Caps, budget: Option<usize>, range: Option<(usize, usize)>) -> Model {
        Model {
            caps,
            live: Vec::new(),
            addrs: BTreeMap::new(),
            bytes: 0,
            in_use: 0,
            peak: 0,
            failed: 0,
            budget,
            budget_ever: budget.is_some(),
            tags: 0,
            range,
            step: 0,
            op: None,
        }
    }

    fn checked<F: Front>(&self, f: &F, what: &str) {
        if let Err(e) = f.check() {
            bug!(self, "check() failed after {what}: {e}");
        }
    }

    fn size(&self, s: usize) -> usize {
        if self.caps.zero_size { s } else { s.max(1) }
    }

    /// Would a block of `size` bytes pass the cap? Absurd sizes always "fit": they must fail.
    fn room(&self, size: usize, freed: usize) -> bool {
        size >= ABSURD || self.bytes - freed + round16(size) <= CAP
    }

    fn pick(&self, which: u16) -> Option<usize> {
        (!self.live.is_empty()).then(|| which as usize % self.live.len())
    }

    fn fit_layout(&self, r: &Rec, fit: bool) -> Layout {
        if fit && self.caps.fit_range && r.layout.size() > 0 {
            Layout::from_size_align(r.len, r.layout.align()).expect("returned length")
        } else {
            r.layout
        }
    }

    fn verify(&self, r: &Rec, upto: usize, what: &str) {
        // SAFETY: the block is live and `len` bytes long, all written by `adopt`/`retag`.
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

    /// What a block of `size` bytes adds to `stats().in_use`.
    fn cost(&self, size: usize) -> usize {
        match size {
            0 => 0,
            s if self.caps.checked => round16(s + TAG),
            s => round16(s),
        }
    }

    fn unlink(&mut self, r: &Rec) {
        if r.len > 0 {
            self.addrs.remove(&r.ptr.addr().get());
        }
        self.bytes -= r.len;
        self.in_use -= self.cost(r.layout.size());
    }

    /// Validates a block the heap just handed out for `layout` and returns (pointer, length).
    fn accept(&self, b: Block, layout: Layout, what: &str) -> (NonNull<u8>, usize) {
        if must_fail(layout) {
            bug!(
                self,
                "{what} succeeded for {layout:?} (size >= 2^47 or align > MAX_ALIGN)"
            );
        }
        let p = b.cast::<u8>();
        let len = b.len();
        let a = p.addr().get();
        if a % layout.align() != 0 {
            bug!(
                self,
                "{what} returned {a:#x}, not aligned to {}",
                layout.align()
            );
        }
        let expected = if self.caps.checked {
            layout.size()
        } else {
            round16(layout.size())
        };
        if self.caps.exact_len && len != expected {
            bug!(
                self,
                "{what} returned length {len} for {layout:?}, expected {expected} (checked mode: {})",
                self.caps.checked
            );
        }
        if len < layout.size() {
            bug!(self, "{what} returned length {len} < {}", layout.size());
        }
        if len > 0 {
            if let Some((&s, &e)) = self.addrs.range(..a + len).next_back() {
                if e > a {
                    bug!(
                        self,
                        "{what} returned {a:#x}+{len}, overlapping live block {s:#x}..{e:#x}"
                    );
                }
            }
            if let Some((lo, hi)) = self.range.filter(|&(lo, hi)| a < lo || a + len > hi) {
                bug!(
                    self,
                    "{what} returned {a:#x}+{len}, outside the heap's range {lo:#x}..{hi:#x}"
                );
            }
        }
        (p, len)
    }

    fn link(&mut self, ptr: NonNull<u8>, layout: Layout, len: usize) {
        self.tags = self.tags.wrapping_add(1);
        let tag = self.tags.wrapping_mul(0x2545_F491);
        // SAFETY: a live block of `len` bytes that the model owns.
        let s = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
        fill(s, tag);
        if len > 0 {
            self.addrs.insert(ptr.addr().get(), ptr.addr().get() + len);
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
        if let Some(b) = self.budget {
            if self.in_use > b {
                bug!(
                    self,
                    "{what} succeeded past the budget: in use {} > {b}",
                    self.in_use
                );
            }
        }
    }

    /// Adopts a fresh block: checks it, zeroes if asked, patterns it, links it.
    fn adopt(&mut self, b: Block, layout: Layout, zero: bool, what: &str) {
        let (p, len) = self.accept(b, layout, what);
        if zero {
            self.zeroes(p, 0, len, what);
        }
        self.link(p, layout, len);
        if layout.size() > 0 {
            self.within_budget(what);
        }
    }

    // ---- the primitives, each followed by `check()` ----

    fn alloc<F: Front>(&mut self, f: &F, req: Req, zero: bool) {
        let l = layout(self.size(req.size.bytes()), req.align.bytes());
        self.alloc_layout(f, l, zero);
    }

    fn alloc_layout<F: Front>(&mut self, f: &F, l: Layout, zero: bool) {
        if !self.room(l.size(), 0) {
            return;
        }
        let what = if zero { "allocate_zeroed" } else { "allocate" };
        match f.allocate(l, zero) {
            Ok(b) => self.adopt(b, l, zero, what),
            Err(()) => self.failed += 1,
        }
        self.checked(f, what);
    }

    fn free<F: Front>(&mut self, f: &F, i: usize, fit: bool) {
        let r = self.live.swap_remove(i);
        self.verify(&r, r.len, "before deallocate");
        let l = self.fit_layout(&r, fit);
        self.unlink(&r);
        // SAFETY: a live block of this heap; `l` fits it.
        unsafe { f.deallocate(r.ptr, l) };
        self.checked(f, "deallocate");
    }

    fn new_align(&self, old: Layout, a: Option<Align>) -> usize {
        match a {
            Some(a) if self.caps.align_change => a.bytes(),
            _ => old.align(),
        }
    }

    fn grow<F: Front>(
        &mut self,
        f: &F,
        i: usize,
        by: Size,
        align: Option<Align>,
        fit: bool,
        zero: bool,
    ) {
        let what = if zero { "grow_zeroed" } else { "grow" };
        self.verify(&self.live[i], self.live[i].len, "before grow");
        let old = self.fit_layout(&self.live[i], fit);
        let new = layout(
            old.size().saturating_add(by.bytes()),
            self.new_align(old, align),
        );
        if new.size() < old.size() || !self.room(new.size(), self.live[i].len) {
            return;
        }
        let ptr = self.live[i].ptr;
        // SAFETY: a live block; `old` fits it; `new` is at least as large.
        match unsafe { f.grow(ptr, old, new, zero) } {
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
            Err(()) => {
                self.failed += 1;
                self.verify(&self.live[i], self.live[i].len, "after a failed grow");
            }
        }
        self.checked(f, what);
    }

    fn shrink<F: Front>(&mut self, f: &F, i: usize, keep: u16, align: Option<Align>, fit: bool) {
        self.verify(&self.live[i], self.live[i].len, "before shrink");
        let old = self.fit_layout(&self.live[i], fit);
        let size = self.size((old.size() as u128 * keep as u128 / u16::MAX as u128) as usize);
        let new = layout(size, self.new_align(old, align));
        if new.size() > old.size() {
            return;
        }
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
            Err(()) => {
                self.failed += 1;
                self.verify(&self.live[i], self.live[i].len, "after a failed shrink");
            }
        }
        self.checked(f, "shrink");
    }

    fn elsewhere<F: Front>(&mut self, f: &F, frees: u8, allocs: u8, req: Req, zero: bool) {
        if !self.caps.threads {
            return;
        }
        let mut gone = Vec::new();
        let mut k = frees as usize;
        for _ in 0..(frees % 9) {
            let Some(i) = self.pick(k as u16) else { break };
            k = k.wrapping_mul(31).wrapping_add(7);
            let r = self.live.swap_remove(i);
            self.verify(&r, r.len, "before a free on another thread");
            let l = self.fit_layout(&r, k & 1 == 0);
            self.unlink(&r);
            gone.push((Sendable(r.ptr), l));
        }
        let l = layout(self.size(req.size.bytes()), req.align.bytes());
        let n = if self.room(l.size().saturating_mul(8), 0) {
            allocs as usize % 9
        } else {
            0
        };
        let want = vec![(l, zero); n];
        let got = f.elsewhere(gone, &want);
        assert_eq!(got.len(), n);
        for r in got {
            match r {
                Ok(b) => self.adopt(b.0, l, zero, "allocate on another thread"),
                Err(()) => self.failed += 1,
            }
        }
        self.checked(f, "frees and allocations on other threads");
    }

    fn apply<F: Front>(&mut self, f: &mut F, op: Op) {
        match op {
            Op::Alloc { req, zero } => self.alloc(f, req, zero),
            Op::Free { which, fit } => {
                if let Some(i) = self.pick(which) {
                    self.free(f, i, fit);
                }
            }
            Op::Grow {
                which,
                by,
                align,
                fit,
                zero,
            } => {
                if let Some(i) = self.pick(which) {
                    self.grow(f, i, by, align, fit, zero);
                }
            }
            Op::Shrink {
                which,
                keep,
                align,
                fit,
            } => {
                if let Some(i) = self.pick(which) {
                    self.shrink(f, i, keep, align, fit);
                }
            }
            Op::Burst { n, req, zero } => {
                let l = layout(self.size(req.size.bytes()), req.align.bytes());
                for _ in 0..=(n % 32) {
                    self.alloc_layout(f, l, zero);
                }
            }
            Op::FreeMany {
                start,
                step,
                n,
                fit,
            } => {
                let mut at = start as usize;
                for _ in 0..=(n % 32) {
                    let Some(i) = self.pick(at as u16) else { break };
                    self.free(f, i, fit);
                    at = at.wrapping_add(step as usize);
                }
            }
            Op::Reuse { which, zero } => {
                if let Some(i) = self.pick(which) {
                    let l = self.live[i].layout;
                    self.free(f, i, false);
                    self.alloc_layout(f, l, zero);
                }
            }
            Op::Stats => self.check_stats(f),
            Op::Map { render } => {
                if let Some(h) = f.heap() {
                    self.check_map(h, render);
                    self.checked(f, "map()");
                }
            }
            Op::Reset { renew } => {
                // The blocks are forgotten, not freed: reset frees them all at once.
                self.verify_all("before reset");
                if let Some(renewed) = f.reset(renew) {
                    self.live.clear();
                    self.addrs.clear();
                    self.bytes = 0;
                    self.in_use = 0;
                    self.peak = 0;
                    if renewed {
                        self.budget = f.budget();
                    }
                    self.checked(f, "reset");
                    let s = f.stats();
                    if s.in_use != 0 || s.peak_in_use != 0 {
                        bug!(
                            self,
                            "after reset: in use {}, peak {} (both must be 0)",
                            s.in_use,
                            s.peak_in_use
                        );
                    }
                    self.check_stats(f);
                }
            }
            Op::SetBudget { budget } => {
                if let Some(h) = f.heap() {
                    let b = budget.map(|b| b as usize % ((8 << 20) + 1));
                    h.set_budget(b);
                    self.budget = b;
                    self.budget_ever |= b.is_some();
                    self.checked(f, "set_budget");
                }
            }
            Op::Elsewhere {
                frees,
                allocs,
                req,
                zero,
            } => self.elsewhere(f, frees, allocs, req, zero),
        }
    }

    fn verify_all(&self, what: &str) {
        for r in &self.live {
            self.verify(r, r.len, what);
        }
    }

    // ---- counters and map ----

    /// The documented facts of [`Stats`]: `in_use` is the live blocks' sizes rounded up to 16;
    /// `in_use + free + metadata == mapped`; `largest_free` is one of the `free_blocks` free
    /// spans (so at most `free`, and `free` is at most `free_blocks × largest_free`); the peak is
    /// at least every `in_use` seen since the last reset; refusals by the budget are failures
    /// (and there are none without a budget); `budget` is the one set; a limit bounds `mapped`.
    pub fn check_stats<F: Front>(&self, f: &F) {
        let s = f.stats();
        self.checked(f, "stats()");
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
        if f.heap().is_some() && s.budget != self.budget {
            bug!(
                self,
                "stats().budget = {:?}, set {:?}",
                s.budget,
                self.budget
            );
        }
        if let Some(l) = f.limit() {
            if s.mapped > l {
                bug!(self, "mapped {} past the limit {l}", s.mapped);
            }
        }
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
                if s.addr != at || s.len == 0 || s.len % isoheap::GRANULE != 0 || s.chunk != c.index
                {
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
    fn teardown<F: Front>(&mut self, f: &F) {
        while let Some(i) = self.pick((self.live.len() / 2) as u16) {
            self.free(f, i, i % 2 == 0);
        }
        self.check_stats(f);
        let s = f.stats();
        if s.in_use != 0 || s.free + s.metadata != s.mapped {
            bug!(self, "every block freed, yet {s:?}");
        }
    }
}

/// Runs `ops` against `f`; with `free_at_end`, frees every block at the end (else the caller
/// drops the heap with its blocks live).
pub fn run<F: Front>(f: &mut F, ops: &[Op], free_at_end: bool) {
    let mut m = Model::new(f.caps(), f.budget(), f.range());
    m.checked(f, "building the heap");
    m.check_stats(f);
    for (i, &op) in ops.iter().take(MAX_OPS).enumerate() {
        m.step = i;
        m.op = Some(op);
        m.apply(f, op);
    }
    m.step = usize::MAX;
    m.op = None;
    m.verify_all("at the end");
    m.check_stats(f);
    if let Some(h) = f.heap() {
        m.check_map(h, false);
    }
    if free_at_end {
        m.teardown(f);
    }
    m.checked(f, "the end");
}

// ---------------------------------------------------------------------------------------------
// Heaps from a setup (the `heap` and `nightly` targets).

/// How the `heap` and `nightly` targets build their `Heap`.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum HeapSetup {
    New,
    /// Checked mode off (it is on by default in the fuzz build, which has debug assertions).
    Unchecked,
    /// A hard limit of 128 KiB, 256 KiB, 512 KiB or 1 MiB.
    Limit {
        size: u8,
    },
    NoQuick,
    /// A budget of up to 1 MiB.
    Budget {
        bytes: u32,
    },
    WithCapacity {
        bytes: u32,
    },
    Builder {
        initial: u32,
        growth: u8,
        limit: Option<u32>,
        quick: bool,
        warm: u32,
        budget: Option<u32>,
        give_back: u8,
        checked: bool,
        zero_on_free: bool,
    },
}

/// A built heap and what the driver must know of its configuration.
pub struct Built {
    pub heap: Heap,
    pub budget: Option<usize>,
    pub limit: Option<usize>,
}

/// Builds the heap `s` describes; `None` for a builder configuration that fails (as it may;
/// the documented failures are asserted). Presets must build.
pub fn build_heap(s: HeapSetup) -> Option<Built> {
    let plain = |heap| {
        Some(Built {
            heap,
            budget: None,
            limit: None,
        })
    };
    match s {
        HeapSetup::New => plain(Heap::new()),
        HeapSetup::Unchecked => plain(
            Heap::builder()
                .checked(false)
                .build()
                .expect("an unchecked heap"),
        ),
        HeapSetup::Limit { size } => {
            let limit = (128 << 10) << (size % 4);
            let heap = Heap::builder()
                .limit(limit)
                .build()
                .expect("a heap with a limit of 128 KiB..1 MiB");
            Some(Built {
                heap,
                budget: None,
                limit: Some(limit),
            })
        }
        HeapSetup::NoQuick => plain(
            Heap::builder()
                .quick_reuse(false)
                .build()
                .expect("a heap without quick lists"),
        ),
        HeapSetup::Budget { bytes } => {
            let b = bytes as usize % ((1 << 20) + 1);
            let heap = Heap::builder()
                .budget(b)
                .build()
                .expect("a heap with a budget");
            Some(Built {
                heap,
                budget: Some(b),
                limit: None,
            })
        }
        HeapSetup::WithCapacity { bytes } => {
            let n = bytes as usize % ((1 << 20) + 1);
            match Heap::with_capacity(n) {
                Ok(heap) => plain(heap),
                Err(HeapError::ZeroSize) if n == 0 => None,
                Err(e) => panic!("Heap::with_capacity({n}): {e}"),
            }
        }
        HeapSetup::Builder {
            initial,
            growth,
            limit,
            quick,
            warm,
            budget,
            give_back,
            checked,
            zero_on_free,
        } => {
            let initial = if initial % 4 == 0 {
                0
            } else {
                initial as usize % ((2 << 20) + 1)
            };
            let growth = match growth % 8 {
                0 => 0,
                7 => 1 + growth as usize * 997,
                k => 4096 << (2 * (k - 1)),
            };
            let limit = limit.map(|l| l as usize % ((8 << 20) + 1));
            let budget = budget.map(|b| b as usize % ((4 << 20) + 1));
            let give_back = [0, 1, 4096, 16 << 10, 64 << 10, 1 << 20, usize::MAX, 12345]
                [give_back as usize % 8];
            let mut b = Heap::builder()
                .initial(initial)
                .growth(growth)
                .quick_reuse(quick)
                .checked(checked)
                .zero_on_free(zero_on_free)
                .warm(warm as usize % ((2 << 20) + 1))
                .give_back(give_back);
            if let Some(l) = limit {
                b = b.limit(l);
            }
            if let Some(x) = budget {
                b = b.budget(x);
            }
            match b.build() {
                Ok(heap) => {
                    if growth == 0 || limit == Some(0) {
                        panic!(
                            "{s:?}: built with a zero growth step or limit (documented ZeroSize)"
                        );
                    }
                    Some(Built {
                        heap,
                        budget,
                        limit,
                    })
                }
                Err(_) => None,
            }
        }
    }
}
