//! The shared driver of isoheap's fuzz targets.
//!
//! Every target decodes its input into a setup (how to build the heap) and a sequence of
//! [`Op`]s, wraps its front end (a `Heap` through allocator-api2's or core's `Allocator`, a heap
//! over a buffer, a `SyncHeap`/`SharedHeap`, a `GlobalHeap` through `GlobalAlloc`: the test
//! kit's [`Front`] implementations) in a [`Target`], and hands both to [`run`]. The driver
//! decodes each op into the primitives of the kit's shadow model ([`Shadow`], shared with the
//! model test), which keeps the live blocks (address, exact layout, returned length, a tag),
//! writes a distinct byte pattern into every live block, and checks after every single
//! operation:
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
//!   [`Shadow::check_stats`] and [`Shadow::check_map`] for exactly which documented facts).
//!
//! Only isoheap's public API is used.

use arbitrary::{Arbitrary, Result as ArbResult, Unstructured};
use core::alloc::Layout;
use core::ptr::NonNull;
use isoheap::{AllocError, Heap, HeapError};
pub use isoheap_testkit::{ABSURD, Front, Options, Shadow, checked_default};

/// Most operations run per input (inputs are short anyway; this bounds the worst case).
pub const MAX_OPS: usize = 2048;
/// Cap on the bytes of live blocks the driver keeps (a request past it is skipped), so that no
/// input can run the fuzzer out of memory.
pub const CAP: usize = 64 << 20;

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

// ---------------------------------------------------------------------------------------------
// Targets.

/// A value that may cross to another thread (raw block pointers, whose blocks the model hands
/// over whole).
pub struct Sendable<T>(pub T);
// SAFETY: used only for block pointers whose blocks are owned by whoever holds the value.
unsafe impl<T> Send for Sendable<T> {}

/// A fuzz target's heap: its front end (the kit's [`Front`], made on demand) and what the
/// driver may do besides allocating through it.
pub trait Target {
    /// The front end.
    type F<'a>: Front
    where
        Self: 'a;
    /// The front end, borrowing the heap.
    fn front(&self) -> Self::F<'_>;
    /// Whether [`Target::elsewhere`] is implemented.
    fn threads(&self) -> bool {
        false
    }
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
    /// Resets the heap (or, with `renew`, builds a new one like it, where the target can), if
    /// the target can: `None` if it cannot, else `Some(renewed)`. A renewed heap has the
    /// budget it was built with; a reset one keeps what `set_budget` set.
    fn reset(&mut self, _renew: bool) -> Option<bool> {
        None
    }
    /// The address range every block must lie in.
    fn range(&self) -> Option<(usize, usize)> {
        None
    }
    /// Frees `frees` and allocates `allocs` on other threads (only if [`Target::threads`]).
    fn elsewhere(
        &self,
        _frees: Vec<(Sendable<NonNull<u8>>, Layout)>,
        _allocs: &[(Layout, bool)],
    ) -> Vec<Result<Sendable<NonNull<[u8]>>, AllocError>> {
        unreachable!("target without threads")
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: decodes each op into the kit's shadow-model primitives.

/// Runs [`Op`]s against one target with the kit's [`Shadow`] model.
struct Driver<'t, T: Target> {
    t: &'t mut T,
    m: Shadow<Op>,
}

impl<T: Target> Driver<'_, T> {
    fn size(&self, s: usize) -> usize {
        if self.m.caps().zero_size { s } else { s.max(1) }
    }

    /// Would a block of `size` bytes pass the cap? Absurd sizes always "fit": they must fail.
    fn room(&self, size: usize, freed: usize) -> bool {
        size >= ABSURD || self.m.bytes() - freed + size.next_multiple_of(16) <= CAP
    }

    fn pick(&self, which: u16) -> Option<usize> {
        self.m.pick(which as usize)
    }

    fn req_layout(&self, req: Req) -> Layout {
        layout(self.size(req.size.bytes()), req.align.bytes())
    }

    fn new_align(&self, old: Layout, a: Option<Align>) -> usize {
        match a {
            Some(a) if self.m.caps().align_change => a.bytes(),
            _ => old.align(),
        }
    }

    fn alloc_layout(&mut self, l: Layout, zero: bool) {
        if self.room(l.size(), 0) {
            self.m.alloc(&self.t.front(), l, zero);
        }
    }

    fn free(&mut self, i: usize, fit: bool) {
        self.m.free(&self.t.front(), i, fit);
    }

    fn grow(&mut self, i: usize, by: Size, align: Option<Align>, fit: bool, zero: bool) {
        self.m.verify_live(i, "before grow");
        let old = self.m.fit_layout(i, fit);
        let new = layout(
            old.size().saturating_add(by.bytes()),
            self.new_align(old, align),
        );
        if new.size() < old.size() || !self.room(new.size(), self.m.get(i).len) {
            return;
        }
        self.m.grow(&self.t.front(), i, old, new, zero);
    }

    fn shrink(&mut self, i: usize, keep: u16, align: Option<Align>, fit: bool) {
        self.m.verify_live(i, "before shrink");
        let old = self.m.fit_layout(i, fit);
        let size = self.size((old.size() as u128 * keep as u128 / u16::MAX as u128) as usize);
        let new = layout(size, self.new_align(old, align));
        if new.size() > old.size() {
            return;
        }
        self.m.shrink(&self.t.front(), i, old, new);
    }

    fn elsewhere(&mut self, frees: u8, allocs: u8, req: Req, zero: bool) {
        if !self.t.threads() {
            return;
        }
        let mut gone = Vec::new();
        let mut k = frees as usize;
        for _ in 0..(frees % 9) {
            let Some(i) = self.pick(k as u16) else { break };
            k = k.wrapping_mul(31).wrapping_add(7);
            let (p, l) = self.m.take(i, k & 1 == 0, "before a free on another thread");
            gone.push((Sendable(p), l));
        }
        let l = self.req_layout(req);
        let n = if self.room(l.size().saturating_mul(8), 0) {
            allocs as usize % 9
        } else {
            0
        };
        let want = vec![(l, zero); n];
        let got = self.t.elsewhere(gone, &want);
        assert_eq!(got.len(), n);
        for r in got {
            match r {
                Ok(b) => self.m.adopt(b.0, l, zero, "allocate on another thread"),
                Err(_) => self.m.refused(l, "allocate on another thread"),
            }
        }
        self.m
            .after(&self.t.front(), "frees and allocations on other threads");
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Alloc { req, zero } => self.alloc_layout(self.req_layout(req), zero),
            Op::Free { which, fit } => {
                if let Some(i) = self.pick(which) {
                    self.free(i, fit);
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
                    self.grow(i, by, align, fit, zero);
                }
            }
            Op::Shrink {
                which,
                keep,
                align,
                fit,
            } => {
                if let Some(i) = self.pick(which) {
                    self.shrink(i, keep, align, fit);
                }
            }
            Op::Burst { n, req, zero } => {
                let l = self.req_layout(req);
                for _ in 0..=(n % 32) {
                    self.alloc_layout(l, zero);
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
                    self.free(i, fit);
                    at = at.wrapping_add(step as usize);
                }
            }
            Op::Reuse { which, zero } => {
                if let Some(i) = self.pick(which) {
                    let l = self.m.get(i).layout;
                    self.free(i, false);
                    self.alloc_layout(l, zero);
                }
            }
            Op::Stats => {
                self.m.check_stats(&self.t.front());
            }
            Op::Map { render } => {
                if let Some(h) = self.t.heap() {
                    self.m.check_map(h, render);
                    self.m.after(&self.t.front(), "map()");
                }
            }
            Op::Reset { renew } => {
                // The blocks are forgotten, not freed: reset frees them all at once.
                self.m.verify_all("before reset");
                if let Some(renewed) = self.t.reset(renew) {
                    self.m
                        .forget_all(if renewed { Some(self.t.budget()) } else { None });
                    let f = self.t.front();
                    self.m.after(&f, "reset");
                    let s = f.stats();
                    if s.in_use != 0 || s.peak_in_use != 0 {
                        self.m.bug(format_args!(
                            "after reset: in use {}, peak {} (both must be 0)",
                            s.in_use, s.peak_in_use
                        ));
                    }
                    self.m.check_stats(&f);
                }
            }
            Op::SetBudget { budget } => {
                if let Some(h) = self.t.heap() {
                    let b = budget.map(|b| b as usize % ((8 << 20) + 1));
                    h.set_budget(b);
                    self.m.set_budget(b);
                    self.m.after(&self.t.front(), "set_budget");
                }
            }
            Op::Elsewhere {
                frees,
                allocs,
                req,
                zero,
            } => self.elsewhere(frees, allocs, req, zero),
        }
    }
}

/// Runs `ops` against `t`; with `free_at_end`, frees every block at the end (else the caller
/// drops the heap with its blocks live).
pub fn run<T: Target>(t: &mut T, ops: &[Op], free_at_end: bool) {
    let opts = Options {
        // Any request may fail (limits, budgets, buffers); absurd ones must.
        may_fail: true,
        // `stats()` flushes the quick lists: only on `Stats` ops, so the others see them.
        stats_every_step: false,
        budget: t.budget(),
        track_budget: t.heap().is_some(),
        limit: t.limit(),
        range: t.range(),
    };
    let m = Shadow::new(&t.front(), opts);
    let mut d = Driver { t, m };
    d.m.after(&d.t.front(), "building the heap");
    d.m.check_stats(&d.t.front());
    for (i, &op) in ops.iter().take(MAX_OPS).enumerate() {
        d.m.step = i;
        d.m.op = Some(op);
        d.apply(op);
    }
    d.m.step = usize::MAX;
    d.m.op = None;
    d.m.verify_all("at the end");
    d.m.check_stats(&d.t.front());
    if let Some(h) = d.t.heap() {
        d.m.check_map(h, false);
    }
    if free_at_end {
        d.m.teardown(&d.t.front());
    }
    d.m.after(&d.t.front(), "the end");
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
