//! Side-by-side comparison of `isoheap` with other allocators, all driven through one small
//! trait ([`Subject`]) in one process, interleaved, with fixed seeds.
//!
//! ```text
//! cargo run --release --example compare -- --quick      # 3 repetitions, smaller op counts (< 1 min)
//! cargo run --release --example compare                 # 5 repetitions (< 10 min)
//! options: --quick  --reps N  --out DIR  --only SUBJECT[,SUBJECT]  --filter WORKLOAD (id such as
//!          churn_100, or a substring of the name)
//! ```
//!
//! Subjects: `isoheap` (inherent `allocate`/`deallocate`/`grow`/`shrink`), glibc malloc
//! (`std::alloc::System`), `mimalloc` (`MiMalloc` used directly, not as the global allocator),
//! `bumpalo` (`Bump`, its allocator-api2 `Allocator` impl for free/grow/shrink; it frees only the
//! most recent block), and three buffer-backed allocators that each run over their own
//! anonymous `mmap` region (`MAP_NORESERVE`, 8 GiB of address space, 64 MiB for `efficiency`):
//! `talc` (`Talc<Manual>` + `claim`), `rlsf` (`Tlsf<u32, u32, 30, 32>`) and
//! `linked_list_allocator` (`Heap::init`). A fresh subject (new region / new `Heap` / new
//! `Bump`) is built for every workload run; the system allocator and mimalloc are global state.
//!
//! # Random numbers and distributions
//! SplitMix64 with a fixed seed per workload (the same op sequence for every subject and
//! repetition). "Log-uniform a..b" means `a * (b/a)^u`, `u` uniform in [0, 1), taken from a
//! 4096-entry quantile table (so drawing costs one table load, not `exp`). Every block gets a
//! random tag byte written at its first and last byte; the tags are checked on free and after
//! each realloc, and any mismatch is reported as corruption. Nothing else is written, so the
//! times are allocator + copy cost + a small harness overhead (PRNG, bookkeeping, two byte
//! writes) that is the same for every subject.
//!
//! - **churn K** (K = 100, 10 000, 100 000, 1 000 000): fill to K live blocks (untimed), then
//!   `ops` steps (timed): allocate with p = 0.55 while live < K and p = 0.45 otherwise, else
//!   free a uniformly chosen live block. Sizes log-uniform 8 B..4 KiB (mean ~660 B); alignment
//!   8 (70 %), 16 (25 %), 64 (5 %). Then everything is freed (untimed). `linked_list_allocator`
//!   is O(free blocks) per call: its op count is capped at K = 10 000 and 100 000 (see
//!   `LLA_CHURN_CAP`, `LLA_CHURN_CAP_QUICK`) and it is skipped at K = 1 000 000.
//! - **request**: one request makes 2 000 objects: 40 % strings (8..64 B uniform, align 1),
//!   30 % structs (16..128 B in steps of 8, align 8 or 16 at 4:1), 30 % small vecs (start 16 B,
//!   align 8, grown by doubling realloc to 16 << U{0..6} B). 30 % of the objects are
//!   temporaries kept in an 8-slot ring (freed when pushed out). A hash-table-like array (1 KiB,
//!   align 16) is rehashed (allocate 2x, copy, free old) after objects 250, 500, 1000 and 1800.
//!   At the end every object is freed in allocation order. The **reset** variant (isoheap:
//!   `Heap::reset()`, which keeps 1 MiB warm; bumpalo: `Bump::reset()`) frees
//!   the temporaries and the old tables one by one but drops the rest with the heap; the reset
//!   counts as one call.
//! - **vec_push**: 1 000 vecs of u64; each step picks a vec uniformly and makes one allocator
//!   call: the first allocation (4 elements), a doubling realloc, or - once the capacity
//!   reaches the vec's target length (log-uniform 1..16 384 elements) - its free, after which
//!   the slot starts a new vec. Reports the fraction of reallocs that returned the same pointer.
//! - **vec_push_isolated**: the same, but isoheap gives each vec its own `Heap::new()` and
//!   bumpalo its own `Bump::new()` (made at the first allocation, dropped with the vec, both
//!   inside the timing); the other subjects share one allocator, as in vec_push.
//! - **realloc_strings**: 1 000 strings (align 1); each step picks one uniformly: new strings
//!   start at 1..16 B, then grow by 1..16 B appends through exact-size realloc until their
//!   target (log-uniform 16 B..8 KiB), then are freed. Reports the in-place fraction too.
//! - **efficiency**: a fixed 64 MiB heap (isoheap: `Heap::builder().initial(64 MiB).limit(64
//!   MiB)`; talc, rlsf, linked_list_allocator: a 64 MiB region; bumpalo: `Bump` with an
//!   allocation limit of 64 MiB; system and mimalloc have no fixed heap and are skipped). Steps:
//!   55 % allocate, 20 % free a random block, 25 % realloc a random block to a new log-uniform
//!   8 B..4 KiB size (alignment mix as in churn), until the first allocation or realloc fails.
//!   Reports the bytes requested by live blocks at that moment / 64 MiB (higher is better).
//!   Deterministic, so it runs once.
//!
//! # Output
//! Medians over the repetitions (subject order rotates each repetition). A Markdown table of
//! ns per allocator call with the ratio to the system allocator (lower is better), a table of
//! in-place realloc fractions, the same as CSV in `target/compare/compare.csv` (and `.md`),
//! and `target/compare/churn.svg` (ns per call against live blocks, both axes log-scale).
//! isoheap's heap invariants (`Heap::check`, and `in_use == 0` once everything is freed) are
//! checked after every run, outside the timing.

use allocator_api2::alloc::Allocator as _;
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::{self, NonNull};
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// The subjects
// ---------------------------------------------------------------------------------------------

/// One allocator under test. All sizes are non-zero.
trait Subject: Sized {
    /// Short display name.
    fn name(&self) -> &'static str;
    /// Allocates a block for `layout`; null on failure.
    ///
    /// # Safety
    /// `layout.size() > 0`.
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8;
    /// Frees a block.
    ///
    /// # Safety
    /// `ptr` came from this subject's `alloc`/`realloc` with `layout` and is not used again.
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout);
    /// Resizes a block to `new_size` (same alignment), moving it if needed; null on failure
    /// (then the old block is untouched and still live).
    ///
    /// # Safety
    /// As for `dealloc`; `new_size > 0`.
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8;
    /// Frees every block at once, if this subject can; every pointer it handed out is then
    /// dead. Returns false (and does nothing) if it cannot.
    fn reset(&mut self) -> bool {
        false
    }
    /// A new, separate instance for one collection (vec_push_isolated), if that is this
    /// subject's natural use; `None` means "share `self`".
    fn spawn(&self) -> Option<Self> {
        None
    }
    /// Checks the subject's own invariants (outside the timing). `all_freed`: the caller has
    /// freed every block it allocated.
    fn verify(&mut self, all_freed: bool) -> Result<(), String> {
        let _ = all_freed;
        Ok(())
    }
}

/// The new layout for a realloc: same alignment, new size.
#[inline(always)]
fn resized(layout: Layout, new_size: usize) -> Layout {
    // SAFETY: the alignment comes from a valid layout, and every size used here is far below
    // isize::MAX - align.
    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) }
}

// ---- isoheap ----

struct Iso {
    heap: isoheap::Heap,
}

impl Iso {
    fn new() -> Self {
        Iso {
            heap: isoheap::Heap::new(),
        }
    }

    /// Checked mode (`HeapBuilder::checked(true)`), for its cost.
    fn checked() -> Self {
        Iso {
            heap: isoheap::Heap::builder().checked(true).build().unwrap(),
        }
    }

    fn fixed(bytes: usize) -> Self {
        let heap = isoheap::Heap::builder()
            .initial(bytes)
            .limit(bytes)
            .build()
            .unwrap_or_else(|e| {
                panic!("isoheap: Heap::builder().initial({bytes}).limit({bytes}): {e}")
            });
        Iso { heap }
    }
}

impl Subject for Iso {
    fn name(&self) -> &'static str {
        if self.heap.is_checked() {
            "isoheap_checked"
        } else {
            "isoheap"
        }
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        match self.heap.allocate(layout) {
            Ok(b) => b.cast::<u8>().as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract; blocks are never null.
        unsafe { self.heap.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = resized(layout, new_size);
        // SAFETY: forwarded contract; grow for bigger sizes, shrink for smaller ones.
        let r = unsafe {
            let p = NonNull::new_unchecked(ptr);
            if new_size >= layout.size() {
                self.heap.grow(p, layout, new)
            } else {
                self.heap.shrink(p, layout, new)
            }
        };
        match r {
            Ok(b) => b.cast::<u8>().as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    fn reset(&mut self) -> bool {
        self.heap.reset();
        true
    }
    fn spawn(&self) -> Option<Self> {
        Some(if self.heap.is_checked() {
            Iso::checked()
        } else {
            Iso::new()
        })
    }
    fn verify(&mut self, all_freed: bool) -> Result<(), String> {
        self.heap.check().map_err(|e| format!("Heap::check: {e}"))?;
        let st = self.heap.stats();
        if all_freed && st.in_use != 0 {
            return Err(format!(
                "stats().in_use = {} after every block was freed ({st:?})",
                st.in_use
            ));
        }
        Ok(())
    }
}

// ---- glibc malloc and mimalloc, through GlobalAlloc ----

struct Sys;

impl Subject for Sys {
    fn name(&self) -> &'static str {
        "system"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (caller's contract).
        unsafe { System.alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

struct Mi;

impl Subject for Mi {
    fn name(&self) -> &'static str {
        "mimalloc"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (caller's contract).
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

// ---- bumpalo ----

struct BumpS {
    bump: bumpalo::Bump,
}

impl BumpS {
    fn new() -> Self {
        BumpS {
            bump: bumpalo::Bump::new(),
        }
    }
    fn limited(bytes: usize) -> Self {
        let bump = bumpalo::Bump::new();
        bump.set_allocation_limit(Some(bytes));
        BumpS { bump }
    }
}

impl Subject for BumpS {
    fn name(&self) -> &'static str {
        "bumpalo"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        match self.bump.try_alloc_layout(layout) {
            Ok(p) => p.as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (bumpalo reclaims only the most recent block).
        unsafe { (&self.bump).deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = resized(layout, new_size);
        // SAFETY: forwarded contract.
        let r = unsafe {
            let p = NonNull::new_unchecked(ptr);
            if new_size >= layout.size() {
                (&self.bump).grow(p, layout, new)
            } else {
                (&self.bump).shrink(p, layout, new)
            }
        };
        match r {
            Ok(b) => b.cast::<u8>().as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
    fn reset(&mut self) -> bool {
        self.bump.reset();
        true
    }
    fn spawn(&self) -> Option<Self> {
        Some(BumpS::new())
    }
}

// ---- buffer-backed: an anonymous mapping per instance ----

/// An anonymous private mapping, unmapped on drop.
struct Region {
    base: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize) -> Region {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of {len} bytes failed");
        Region {
            base: p.cast(),
            len,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: this mapping was made by Region::new and nothing uses it any more (the
        // allocator over it is declared before the region and so dropped first).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Address space for the buffer-backed peers outside `efficiency` (only touched pages cost).
const BIG_REGION: usize = 8 << 30;
/// The fixed heap of the `efficiency` workload.
const FIXED_HEAP: usize = 64 << 20;

type TalcHeap = talc::base::Talc<talc::source::Manual, talc::DefaultBinning>;

struct TalcS {
    talc: TalcHeap,
    _region: Region,
}

impl TalcS {
    fn new(len: usize) -> Self {
        let region = Region::new(len);
        let mut talc = TalcHeap::new(talc::source::Manual);
        // SAFETY: the region is ours, outlives `talc` (field order) and is used by nothing else.
        let ok = unsafe { talc.claim(region.base, region.len) };
        assert!(ok.is_some(), "talc: claim failed");
        TalcS {
            talc,
            _region: region,
        }
    }
}

impl Subject for TalcS {
    fn name(&self) -> &'static str {
        "talc"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (caller's contract).
        unsafe { self.talc.allocate(layout) }.map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.talc.deallocate(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract; on a move the old block is copied and freed here.
        unsafe {
            if self.talc.try_realloc_in_place(ptr, layout, new_size) {
                return ptr;
            }
            let Some(n) = self.talc.allocate(resized(layout, new_size)) else {
                return ptr::null_mut();
            };
            ptr::copy_nonoverlapping(ptr, n.as_ptr(), layout.size().min(new_size));
            self.talc.deallocate(ptr, layout);
            n.as_ptr()
        }
    }
}

type Tlsf = rlsf::Tlsf<'static, u32, u32, 30, 32>;

struct RlsfS {
    tlsf: Tlsf,
    _region: Region,
}

impl RlsfS {
    fn new(len: usize) -> Self {
        let region = Region::new(len);
        let mut tlsf = Tlsf::new();
        let block = NonNull::slice_from_raw_parts(
            NonNull::new(region.base).expect("mmap returned null"),
            region.len,
        );
        // SAFETY: the region is ours and outlives `tlsf` (field order); nothing else uses it.
        let ok = unsafe { tlsf.insert_free_block_ptr(block) };
        assert!(ok.is_some(), "rlsf: insert_free_block_ptr failed");
        RlsfS {
            tlsf,
            _region: region,
        }
    }
}

impl Subject for RlsfS {
    fn name(&self) -> &'static str {
        "rlsf"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.tlsf
            .allocate(layout)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract; same alignment as allocated.
        unsafe {
            self.tlsf
                .deallocate(NonNull::new_unchecked(ptr), layout.align())
        }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract; the alignment is unchanged, as rlsf requires.
        unsafe {
            self.tlsf
                .reallocate(NonNull::new_unchecked(ptr), resized(layout, new_size))
                .map_or(ptr::null_mut(), |p| p.as_ptr())
        }
    }
}

struct Lla {
    heap: linked_list_allocator::Heap,
    _region: Region,
}

impl Lla {
    fn new(len: usize) -> Self {
        let region = Region::new(len);
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: the region is ours and outlives `heap` (field order); nothing else uses it.
        unsafe { heap.init(region.base, region.len) };
        Lla {
            heap,
            _region: region,
        }
    }
}

impl Subject for Lla {
    fn name(&self) -> &'static str {
        "linked_list_allocator"
    }
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.heap
            .allocate_first_fit(layout)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // linked_list_allocator has no realloc: allocate, copy, free.
        let Ok(n) = self.heap.allocate_first_fit(resized(layout, new_size)) else {
            return ptr::null_mut();
        };
        // SAFETY: distinct live blocks; forwarded contract for the free.
        unsafe {
            ptr::copy_nonoverlapping(ptr, n.as_ptr(), layout.size().min(new_size));
            self.heap.deallocate(NonNull::new_unchecked(ptr), layout);
        }
        n.as_ptr()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Isoheap,
    IsoChecked,
    System,
    Mimalloc,
    Bumpalo,
    Talc,
    Rlsf,
    Lla,
}

const KINDS: [Kind; 8] = [
    Kind::Isoheap,
    Kind::IsoChecked,
    Kind::System,
    Kind::Mimalloc,
    Kind::Bumpalo,
    Kind::Talc,
    Kind::Rlsf,
    Kind::Lla,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Isoheap => "isoheap",
            Kind::IsoChecked => "isoheap_checked",
            Kind::System => "system",
            Kind::Mimalloc => "mimalloc",
            Kind::Bumpalo => "bumpalo",
            Kind::Talc => "talc",
            Kind::Rlsf => "rlsf",
            Kind::Lla => "linked_list_allocator",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Kind::Isoheap => "#d62728",
            Kind::IsoChecked => "#e377c2",
            Kind::System => "#1f77b4",
            Kind::Mimalloc => "#2ca02c",
            Kind::Bumpalo => "#9467bd",
            Kind::Talc => "#ff7f0e",
            Kind::Rlsf => "#8c564b",
            Kind::Lla => "#7f7f7f",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n < 2^32), from the low 32 bits of `r`.
    #[inline(always)]
    fn pick(r: u64, n: usize) -> usize {
        (((r & 0xFFFF_FFFF) * n as u64) >> 32) as usize
    }
}

/// 4096 quantiles of a log-uniform distribution on `lo..=hi`.
struct LogTable(Vec<u32>);

impl LogTable {
    fn new(lo: usize, hi: usize) -> Self {
        let (a, b) = ((lo as f64).ln(), ((hi + 1) as f64).ln());
        LogTable(
            (0..4096)
                .map(|i| {
                    let u = (i as f64 + 0.5) / 4096.0;
                    ((a + (b - a) * u).exp() as usize).clamp(lo, hi) as u32
                })
                .collect(),
        )
    }
    #[inline(always)]
    fn get(&self, r: u64) -> usize {
        self.0[(r & 4095) as usize] as usize
    }
}

/// Alignment shift for 8 (70 %), 16 (25 %), 64 (5 %), from 16 bits of `r`.
#[inline(always)]
fn align_shift(r: u64) -> u8 {
    match Rng::pick(r & 0xFFFF, 20 << 16) >> 16 {
        0..=13 => 3,
        14..=18 => 4,
        _ => 6,
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks with tag bytes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Blk {
    ptr: *mut u8,
    size: u32,
    align_shift: u8,
    tag: u8,
}

impl Blk {
    #[inline(always)]
    fn layout(&self) -> Layout {
        // SAFETY: power-of-two alignment, small size.
        unsafe { Layout::from_size_align_unchecked(self.size as usize, 1 << self.align_shift) }
    }
}

/// Counters of one workload run.
#[derive(Default, Debug)]
struct Outcome {
    calls: u64,
    nanos: u64,
    reallocs: u64,
    in_place: u64,
    corrupt: u64,
    /// efficiency only: live bytes / heap bytes at the first failure.
    eff: Option<f64>,
    note: Option<String>,
}

impl Outcome {
    fn ns_per_call(&self) -> f64 {
        self.nanos as f64 / self.calls.max(1) as f64
    }
}

/// Allocates `size` bytes at `1 << shift` and writes the tag at both ends. Null on failure.
#[inline(always)]
fn new_blk<S: Subject>(s: &mut S, size: usize, shift: u8, tag: u8) -> Option<Blk> {
    let b = Blk {
        ptr: ptr::null_mut(),
        size: size as u32,
        align_shift: shift,
        tag,
    };
    // SAFETY: size > 0 everywhere in this program.
    let p = unsafe { s.alloc(b.layout()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a fresh block of `size` bytes.
    unsafe {
        p.write(tag);
        p.add(size - 1).write(tag);
    }
    Some(Blk { ptr: p, ..b })
}

/// Checks the tags and frees the block.
#[inline(always)]
fn free_blk<S: Subject>(s: &mut S, b: Blk, out: &mut Outcome) {
    // SAFETY: b is a live block of s with its layout; its two ends were written.
    unsafe {
        let n = b.size as usize;
        if b.ptr.read() != b.tag || b.ptr.add(n - 1).read() != b.tag {
            out.corrupt += 1;
        }
        s.dealloc(b.ptr, b.layout());
    }
}

/// Reallocs to `new_size`, checks what must have survived, writes the new last byte, counts
/// in-place moves. Returns false (block unchanged) on failure.
#[inline(always)]
fn realloc_blk<S: Subject>(s: &mut S, b: &mut Blk, new_size: usize, out: &mut Outcome) -> bool {
    let old = b.size as usize;
    // SAFETY: b is a live block of s; the new pointer spans new_size bytes; reads of bytes the
    // program wrote before (the first byte; the old last byte when it is still inside).
    unsafe {
        let p = s.realloc(b.ptr, b.layout(), new_size);
        if p.is_null() {
            return false;
        }
        out.reallocs += 1;
        if p == b.ptr {
            out.in_place += 1;
        }
        if p.read() != b.tag || (new_size >= old && p.add(old - 1).read() != b.tag) {
            out.corrupt += 1;
        }
        p.add(new_size - 1).write(b.tag);
        b.ptr = p;
        b.size = new_size as u32;
    }
    true
}

fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wl {
    Churn(usize),
    Request { reset: bool },
    VecPush { isolated: bool },
    ReallocStrings,
    Efficiency,
}

impl Wl {
    fn name(self) -> String {
        match self {
            Wl::Churn(k) => format!("churn K={k}"),
            Wl::Request { reset: false } => "request (free each)".into(),
            Wl::Request { reset: true } => "request (reset heap)".into(),
            Wl::VecPush { isolated: false } => "vec_push".into(),
            Wl::VecPush { isolated: true } => "vec_push_isolated".into(),
            Wl::ReallocStrings => "realloc_strings".into(),
            Wl::Efficiency => "efficiency (live/64 MiB)".into(),
        }
    }
    fn id(self) -> String {
        match self {
            Wl::Churn(k) => format!("churn_{k}"),
            Wl::Request { reset: false } => "request_free".into(),
            Wl::Request { reset: true } => "request_reset".into(),
            Wl::VecPush { isolated: false } => "vec_push".into(),
            Wl::VecPush { isolated: true } => "vec_push_isolated".into(),
            Wl::ReallocStrings => "realloc_strings".into(),
            Wl::Efficiency => "efficiency".into(),
        }
    }
    fn seed(self) -> u64 {
        match self {
            Wl::Churn(k) => 0xC0FFEE ^ k as u64,
            Wl::Request { .. } => 0x5EED_0001,
            Wl::VecPush { .. } => 0x5EED_0002,
            Wl::ReallocStrings => 0x5EED_0003,
            Wl::Efficiency => 0x5EED_0004,
        }
    }
    fn has_inplace(self) -> bool {
        matches!(self, Wl::VecPush { .. } | Wl::ReallocStrings)
    }
}

struct Dists {
    /// 8 B..4 KiB.
    small: LogTable,
    /// 1..16384 elements.
    vec_len: LogTable,
    /// 16 B..8 KiB.
    str_len: LogTable,
}

fn churn<S: Subject>(
    s: &mut S,
    k: usize,
    ops: usize,
    seed: u64,
    d: &Dists,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut live: Vec<Blk> = Vec::with_capacity(k + k / 4 + 64);
    let fresh = |s: &mut S, rng: &mut Rng| {
        let r = rng.next();
        new_blk(s, d.small.get(r), align_shift(r >> 12), (r >> 40) as u8)
    };
    for _ in 0..k {
        live.push(fresh(s, &mut rng).ok_or("allocation failed while filling")?);
    }
    let t = Instant::now();
    for _ in 0..ops {
        let r = rng.next();
        let p_alloc = if live.len() < k { 55 } else { 45 };
        if live.is_empty() || Rng::pick(r, 100) < p_alloc {
            live.push(fresh(s, &mut rng).ok_or("allocation failed")?);
        } else {
            let i = Rng::pick(r >> 32, live.len());
            let b = live.swap_remove(i);
            free_blk(s, b, &mut out);
        }
        out.calls += 1;
    }
    out.nanos = elapsed_ns(t);
    s.verify(false)?;
    for b in live.drain(..) {
        free_blk(s, b, &mut out);
    }
    s.verify(true)?;
    Ok(out)
}

fn request<S: Subject>(
    s: &mut S,
    requests: usize,
    reset: bool,
    seed: u64,
) -> Result<Outcome, String> {
    const OBJECTS: usize = 2000;
    const RING: usize = 8;
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut objs: Vec<Blk> = Vec::with_capacity(OBJECTS + 16);
    let mut ring: [Option<Blk>; RING] = [None; RING];
    let t = Instant::now();
    for _ in 0..requests {
        let mut ri = 0;
        let mut table = new_blk(s, 1024, 4, 0x7A).ok_or("table allocation failed")?;
        out.calls += 1;
        for i in 0..OBJECTS {
            let r = rng.next();
            let what = Rng::pick(r, 100);
            let tag = (r >> 56) as u8;
            let b = if what < 40 {
                let size = 8 + Rng::pick(r >> 32, 57);
                out.calls += 1;
                new_blk(s, size, 0, tag)
            } else if what < 70 {
                let size = 16 + 8 * Rng::pick(r >> 32, 15);
                let shift = if Rng::pick(r >> 40, 5) == 0 { 4 } else { 3 };
                out.calls += 1;
                new_blk(s, size, shift, tag)
            } else {
                let target = 16usize << Rng::pick(r >> 32, 7);
                out.calls += 1;
                new_blk(s, 16, 3, tag).and_then(|mut b| {
                    while (b.size as usize) < target {
                        out.calls += 1;
                        let n = b.size as usize * 2;
                        if !realloc_blk(s, &mut b, n, &mut out) {
                            return None;
                        }
                    }
                    Some(b)
                })
            }
            .ok_or("allocation failed")?;
            if Rng::pick(r >> 44, 10) < 3 {
                if let Some(old) = ring[ri].replace(b) {
                    free_blk(s, old, &mut out);
                    out.calls += 1;
                }
                ri = (ri + 1) % RING;
            } else {
                objs.push(b);
            }
            if matches!(i, 250 | 500 | 1000 | 1800) {
                let n = table.size as usize * 2;
                let nt = new_blk(s, n, 4, table.tag).ok_or("table allocation failed")?;
                // SAFETY: two distinct live blocks; the old one's bytes are copied (rehash).
                unsafe { ptr::copy_nonoverlapping(table.ptr, nt.ptr, table.size as usize) };
                // SAFETY: nt spans n bytes; restore its last tag after the copy.
                unsafe { nt.ptr.add(n - 1).write(nt.tag) };
                free_blk(s, table, &mut out);
                table = nt;
                out.calls += 2;
            }
        }
        if reset {
            objs.clear();
            ring = [None; RING];
            if !s.reset() {
                return Err("reset not supported".into());
            }
            out.calls += 1;
        } else {
            for b in ring.iter_mut().filter_map(Option::take) {
                free_blk(s, b, &mut out);
                out.calls += 1;
            }
            for b in objs.drain(..) {
                free_blk(s, b, &mut out);
                out.calls += 1;
            }
            free_blk(s, table, &mut out);
            out.calls += 1;
        }
    }
    out.nanos = elapsed_ns(t);
    s.verify(true)?;
    Ok(out)
}

struct VecSlot<S> {
    b: Option<Blk>,
    /// Target capacity in bytes.
    target: usize,
    owner: Option<S>,
}

fn vec_push<S: Subject>(
    s: &mut S,
    nvec: usize,
    steps: usize,
    isolated: bool,
    seed: u64,
    d: &Dists,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut vs: Vec<VecSlot<S>> = (0..nvec)
        .map(|_| VecSlot {
            b: None,
            target: 0,
            owner: None,
        })
        .collect();
    let t = Instant::now();
    for _ in 0..steps {
        let r = rng.next();
        let v = &mut vs[Rng::pick(r, nvec)];
        match v.b {
            None => {
                v.target = 8 * d.vec_len.get(r >> 32);
                if isolated {
                    v.owner = s.spawn();
                }
                let sub = v.owner.as_mut().unwrap_or(&mut *s);
                v.b = Some(new_blk(sub, 32, 3, (r >> 48) as u8).ok_or("allocation failed")?);
            }
            Some(b) if b.size as usize >= v.target => {
                let sub = v.owner.as_mut().unwrap_or(&mut *s);
                free_blk(sub, b, &mut out);
                v.b = None;
                v.owner = None;
            }
            Some(mut b) => {
                let sub = v.owner.as_mut().unwrap_or(&mut *s);
                let n = b.size as usize * 2;
                if !realloc_blk(sub, &mut b, n, &mut out) {
                    return Err("realloc failed".into());
                }
                v.b = Some(b);
            }
        }
        out.calls += 1;
    }
    out.nanos = elapsed_ns(t);
    s.verify(false)?;
    for v in &mut vs {
        if let Some(o) = v.owner.as_mut() {
            o.verify(false)?;
        }
        if let Some(b) = v.b.take() {
            let sub = v.owner.as_mut().unwrap_or(&mut *s);
            free_blk(sub, b, &mut out);
        }
        if let Some(o) = v.owner.as_mut() {
            o.verify(true)?;
        }
        v.owner = None;
    }
    s.verify(true)?;
    Ok(out)
}

fn realloc_strings<S: Subject>(
    s: &mut S,
    nstr: usize,
    steps: usize,
    seed: u64,
    d: &Dists,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut strs: Vec<(Option<Blk>, usize)> = vec![(None, 0); nstr];
    let t = Instant::now();
    for _ in 0..steps {
        let r = rng.next();
        let slot = &mut strs[Rng::pick(r, nstr)];
        let add = 1 + ((r >> 32) & 15) as usize;
        match slot.0 {
            None => {
                slot.1 = d.str_len.get(r >> 40);
                slot.0 = Some(new_blk(s, add, 0, (r >> 56) as u8).ok_or("allocation failed")?);
            }
            Some(b) if b.size as usize >= slot.1 => {
                free_blk(s, b, &mut out);
                slot.0 = None;
            }
            Some(mut b) => {
                let n = b.size as usize + add;
                if !realloc_blk(s, &mut b, n, &mut out) {
                    return Err("realloc failed".into());
                }
                slot.0 = Some(b);
            }
        }
        out.calls += 1;
    }
    out.nanos = elapsed_ns(t);
    s.verify(false)?;
    for b in strs.iter_mut().filter_map(|x| x.0.take()) {
        free_blk(s, b, &mut out);
    }
    s.verify(true)?;
    Ok(out)
}

fn efficiency<S: Subject>(
    s: &mut S,
    seed: u64,
    d: &Dists,
    max_ops: usize,
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut live: Vec<Blk> = Vec::new();
    let mut live_bytes: u64 = 0;
    let mut failed = false;
    let t = Instant::now();
    for _ in 0..max_ops {
        let r = rng.next();
        let what = Rng::pick(r, 100);
        out.calls += 1;
        if live.is_empty() || what < 55 {
            let size = d.small.get(r >> 32);
            match new_blk(s, size, align_shift(r >> 44), (r >> 24) as u8) {
                Some(b) => {
                    live_bytes += size as u64;
                    live.push(b);
                }
                None => {
                    failed = true;
                    break;
                }
            }
        } else if what < 75 {
            let b = live.swap_remove(Rng::pick(r >> 32, live.len()));
            live_bytes -= b.size as u64;
            free_blk(s, b, &mut out);
        } else {
            let i = Rng::pick(r >> 32, live.len());
            let new_size = d.small.get(r >> 20);
            let mut b = live[i];
            if !realloc_blk(s, &mut b, new_size, &mut out) {
                failed = true;
                break;
            }
            live_bytes = live_bytes - live[i].size as u64 + new_size as u64;
            live[i] = b;
        }
    }
    out.nanos = elapsed_ns(t);
    if !failed {
        out.note = Some(format!("no failure within {max_ops} ops"));
    }
    out.eff = Some(live_bytes as f64 / FIXED_HEAP as f64);
    s.verify(false)?;
    for b in live.drain(..) {
        free_blk(s, b, &mut out);
    }
    s.verify(true)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------------------------

struct Cfg {
    quick: bool,
    reps: usize,
    churn_ops: usize,
    requests: usize,
    vec_steps: usize,
    str_steps: usize,
}

/// Churn op cap for linked_list_allocator (O(free blocks) per call), by K.
/// Full run: (K, cap). Its time per call grows as the free list develops (~4 us after 10 000
/// ops at K = 100 000, ~28 us after 50 000).
const LLA_CHURN_CAP: [(usize, usize); 2] = [(10_000, 100_000), (100_000, 50_000)];
/// `--quick`: (K, cap).
const LLA_CHURN_CAP_QUICK: [(usize, usize); 2] = [(10_000, 50_000), (100_000, 10_000)];

enum Plan {
    Run,
    Skip(&'static str),
}

fn plan(kind: Kind, wl: Wl) -> Plan {
    match (kind, wl) {
        (Kind::Lla, Wl::Churn(k)) if k >= 1_000_000 => Plan::Skip("skipped (O(n))"),
        (Kind::System | Kind::Mimalloc, Wl::Efficiency) => Plan::Skip("no fixed heap"),
        // Checked mode's cost is measured on churn and requests (the issue's workloads).
        (Kind::IsoChecked, Wl::Churn(_) | Wl::Request { .. }) => Plan::Run,
        (Kind::IsoChecked, _) => Plan::Skip("not measured"),
        (k, Wl::Request { reset: true })
            if !matches!(k, Kind::Isoheap | Kind::IsoChecked | Kind::Bumpalo) =>
        {
            Plan::Skip("no bulk free")
        }
        _ => Plan::Run,
    }
}

fn run_on<S: Subject>(
    s: &mut S,
    kind: Kind,
    wl: Wl,
    cfg: &Cfg,
    d: &Dists,
) -> Result<Outcome, String> {
    assert_eq!(s.name(), kind.name(), "subject and kind disagree");
    let seed = wl.seed();
    match wl {
        Wl::Churn(k) => {
            let mut ops = cfg.churn_ops;
            let mut note = None;
            if kind == Kind::Lla
                && let Some(&(_, cap)) = (if cfg.quick {
                    &LLA_CHURN_CAP_QUICK
                } else {
                    &LLA_CHURN_CAP
                })
                .iter()
                .find(|&&(kk, _)| kk == k)
                && cap < ops
            {
                ops = cap;
                note = Some(format!("ops capped at {cap}"));
            }
            let mut o = churn(s, k, ops, seed, d)?;
            o.note = note;
            Ok(o)
        }
        Wl::Request { reset } => request(s, cfg.requests, reset, seed),
        Wl::VecPush { isolated } => vec_push(s, 1000, cfg.vec_steps, isolated, seed, d),
        Wl::ReallocStrings => realloc_strings(s, 1000, cfg.str_steps, seed, d),
        Wl::Efficiency => efficiency(s, seed, d, 20_000_000),
    }
}

fn run_one(kind: Kind, wl: Wl, cfg: &Cfg, d: &Dists) -> Result<Outcome, String> {
    let fixed = wl == Wl::Efficiency;
    let region = if fixed { FIXED_HEAP } else { BIG_REGION };
    match kind {
        Kind::Isoheap => {
            let mut s = if fixed {
                Iso::fixed(FIXED_HEAP)
            } else {
                Iso::new()
            };
            run_on(&mut s, kind, wl, cfg, d)
        }
        Kind::IsoChecked => run_on(&mut Iso::checked(), kind, wl, cfg, d),
        Kind::System => run_on(&mut Sys, kind, wl, cfg, d),
        Kind::Mimalloc => run_on(&mut Mi, kind, wl, cfg, d),
        Kind::Bumpalo => {
            let mut s = if fixed {
                BumpS::limited(FIXED_HEAP)
            } else {
                BumpS::new()
            };
            run_on(&mut s, kind, wl, cfg, d)
        }
        Kind::Talc => run_on(&mut TalcS::new(region), kind, wl, cfg, d),
        Kind::Rlsf => run_on(&mut RlsfS::new(region), kind, wl, cfg, d),
        Kind::Lla => run_on(&mut Lla::new(region), kind, wl, cfg, d),
    }
}

#[derive(Default)]
struct Cell {
    ns: Vec<f64>,
    inplace: Vec<f64>,
    eff: Option<f64>,
    skip: Option<&'static str>,
    error: Option<String>,
    corrupt: u64,
    note: Option<String>,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let n = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model} ({n} logical CPUs)")
}

/// Current UTC date and time, from the Unix clock (civil-from-days, proleptic Gregorian).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn out_dir(arg: Option<String>) -> std::path::PathBuf {
    if let Some(a) = arg {
        return a.into();
    }
    // target/<profile>/examples/compare -> target/compare
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.join("compare")))
        .unwrap_or_else(|| "target/compare".into())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut reps, mut out) = (false, None, None);
    let (mut only, mut filter): (Option<String>, Option<String>) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--reps" => {
                reps = args
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n > 0)
            }
            "--out" => out = args.next(),
            "--only" => only = args.next(),
            "--filter" => filter = args.next(),
            "--bench" => {} // passed by `cargo bench`-style runners; ignored
            "-h" | "--help" => {
                println!(
                    "usage: compare [--quick] [--reps N] [--out DIR] [--only SUBJECT[,SUBJECT..]] [--filter WORKLOAD-SUBSTRING]\n\
                     subjects: isoheap isoheap_checked system mimalloc bumpalo talc rlsf linked_list_allocator"
                );
                return;
            }
            other => {
                eprintln!("compare: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let cfg = if quick {
        Cfg {
            quick,
            reps: reps.unwrap_or(3),
            churn_ops: 300_000,
            requests: 60,
            vec_steps: 100_000,
            str_steps: 300_000,
        }
    } else {
        Cfg {
            quick,
            reps: reps.unwrap_or(5),
            churn_ops: 2_000_000,
            requests: 300,
            vec_steps: 400_000,
            str_steps: 1_500_000,
        }
    };
    let dir = out_dir(out);
    let d = Dists {
        small: LogTable::new(8, 4096),
        vec_len: LogTable::new(1, 16_384),
        str_len: LogTable::new(16, 8192),
    };
    let all_wls = [
        Wl::Churn(100),
        Wl::Churn(10_000),
        Wl::Churn(100_000),
        Wl::Churn(1_000_000),
        Wl::Request { reset: false },
        Wl::Request { reset: true },
        Wl::VecPush { isolated: false },
        Wl::VecPush { isolated: true },
        Wl::ReallocStrings,
        Wl::Efficiency,
    ];
    let wls: Vec<Wl> = all_wls
        .into_iter()
        .filter(|w| {
            filter
                .as_ref()
                .is_none_or(|f| w.id() == *f || w.name().contains(f.as_str()))
        })
        .collect();
    let wanted = |k: Kind| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|n| n == k.name()))
    };

    let started = Instant::now();
    let date = utc_now();
    let cpu = cpu_model();
    println!("# isoheap comparison");
    println!();
    println!("- date: {date}");
    println!("- cpu: {cpu}");
    println!(
        "- mode: {} ({} repetitions, medians; churn {} ops after the fill, request x{}, vec_push {} steps, realloc_strings {} steps)",
        if cfg.quick { "--quick" } else { "full" },
        cfg.reps,
        cfg.churn_ops,
        cfg.requests,
        cfg.vec_steps,
        cfg.str_steps
    );
    println!();

    let mut cells: Vec<Vec<Cell>> = wls
        .iter()
        .map(|_| KINDS.iter().map(|_| Cell::default()).collect())
        .collect();
    for rep in 0..cfg.reps {
        for (wi, &wl) in wls.iter().enumerate() {
            if wl == Wl::Efficiency && rep > 0 {
                continue; // deterministic: once is enough
            }
            let t_wl = Instant::now();
            let mut line = String::new();
            for j in 0..KINDS.len() {
                let ki = (j + rep) % KINDS.len();
                let kind = KINDS[ki];
                let cell = &mut cells[wi][ki];
                if !wanted(kind) {
                    cell.skip = Some("not selected");
                    continue;
                }
                if let Plan::Skip(why) = plan(kind, wl) {
                    cell.skip = Some(why);
                    continue;
                }
                if cell.error.is_some() {
                    continue; // failed before: do not repeat
                }
                let t_run = Instant::now();
                let r = catch_unwind(AssertUnwindSafe(|| run_one(kind, wl, &cfg, &d)));
                let secs = t_run.elapsed().as_secs_f64();
                let took = if secs >= 0.5 {
                    format!("[{secs:.1}s]")
                } else {
                    String::new()
                };
                let r = match r {
                    Ok(r) => r,
                    Err(p) => Err(format!("panicked: {}", panic_text(&*p))),
                };
                match r {
                    Ok(o) => {
                        if o.corrupt > 0 {
                            eprintln!(
                                "!! {} {}: {} tag mismatches (memory corruption)",
                                kind.name(),
                                wl.name(),
                                o.corrupt
                            );
                        }
                        cell.corrupt += o.corrupt;
                        cell.note = o.note.clone().or(cell.note.take());
                        if let Some(e) = o.eff {
                            cell.eff = Some(e);
                            let _ = write!(line, " {}={:.1}%{took}", kind.name(), e * 100.0);
                        } else {
                            cell.ns.push(o.ns_per_call());
                            let _ = write!(line, " {}={:.1}{took}", kind.name(), o.ns_per_call());
                        }
                        if wl.has_inplace() {
                            cell.inplace
                                .push(o.in_place as f64 / o.reallocs.max(1) as f64);
                        }
                    }
                    Err(e) => {
                        eprintln!("!! {} {}: {e}", kind.name(), wl.name());
                        let _ = write!(line, " {}=FAILED", kind.name());
                        cell.error = Some(e);
                    }
                }
            }
            eprintln!(
                "[{:>5.1}s] rep {}/{} {:<24} ({:.1}s){}",
                started.elapsed().as_secs_f64(),
                rep + 1,
                cfg.reps,
                wl.name(),
                t_wl.elapsed().as_secs_f64(),
                line
            );
        }
    }
    let total = started.elapsed().as_secs_f64();

    let md = report(&wls, &cells, &cfg, &date, &cpu, total);
    println!("{md}");

    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("compare: cannot create {}: {e}", dir.display());
        return;
    }
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        match std::fs::write(&p, text) {
            Ok(()) => eprintln!("wrote {}", p.display()),
            Err(e) => eprintln!("compare: cannot write {}: {e}", p.display()),
        }
    };
    write("compare.csv", csv(&wls, &cells, &cfg));
    write(
        "compare.md",
        format!("# isoheap comparison\n\n- date: {date}\n- cpu: {cpu}\n\n{md}"),
    );
    write("churn.svg", churn_svg(&wls, &cells, &cfg));
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

fn sys_idx() -> usize {
    KINDS.iter().position(|&k| k == Kind::System).unwrap_or(0)
}

fn cell_text(wl: Wl, c: &Cell, sys: Option<f64>) -> String {
    if let Some(e) = &c.error {
        let short: String = e.chars().take(40).collect();
        return format!("FAILED ({short})");
    }
    if let Some(s) = c.skip {
        return if s == "skipped (O(n))" {
            "skipped (O(n))".into()
        } else {
            "—".into()
        };
    }
    let mut t = if wl == Wl::Efficiency {
        match c.eff {
            Some(e) => format!("{:.1}%", e * 100.0),
            None => "—".into(),
        }
    } else {
        match median(&c.ns) {
            Some(m) => match sys {
                Some(s) if s > 0.0 => format!("{m:.1} ({:.2}×)", m / s),
                _ => format!("{m:.1}"),
            },
            None => "—".into(),
        }
    };
    if c.corrupt > 0 {
        let _ = write!(t, " CORRUPT×{}", c.corrupt);
    }
    if c.note.is_some() {
        t.push_str(" ¹");
    }
    t
}

fn report(wls: &[Wl], cells: &[Vec<Cell>], cfg: &Cfg, date: &str, cpu: &str, total: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## ns per allocator call (median of {}; ratio to system in parentheses; lower is better)\n",
        cfg.reps
    );
    let _ = write!(s, "| workload |");
    for k in KINDS {
        let _ = write!(s, " {} |", k.name());
    }
    let _ = write!(s, "\n|---|");
    for _ in KINDS {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for (wi, &wl) in wls.iter().enumerate() {
        let sys = if wl == Wl::Efficiency {
            None
        } else {
            median(&cells[wi][sys_idx()].ns)
        };
        let _ = write!(s, "| {} |", wl.name());
        for c in &cells[wi] {
            let _ = write!(s, " {} |", cell_text(wl, c, sys));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n## reallocs that stayed in place (pointer unchanged; median)\n"
    );
    let _ = write!(s, "| workload |");
    for k in KINDS {
        let _ = write!(s, " {} |", k.name());
    }
    let _ = write!(s, "\n|---|");
    for _ in KINDS {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for (wi, &wl) in wls.iter().enumerate() {
        if !wl.has_inplace() {
            continue;
        }
        let _ = write!(s, "| {} |", wl.name());
        for c in &cells[wi] {
            let t = match (&c.error, median(&c.inplace)) {
                (Some(_), _) => "FAILED".into(),
                (None, Some(m)) => format!("{:.1}%", m * 100.0),
                (None, None) => "—".into(),
            };
            let _ = write!(s, " {t} |");
        }
        s.push('\n');
    }
    let mut notes = String::new();
    for (wi, &wl) in wls.iter().enumerate() {
        for (ki, c) in cells[wi].iter().enumerate() {
            if let Some(n) = &c.note {
                let _ = writeln!(notes, "- ¹ {} / {}: {n}", KINDS[ki].name(), wl.name());
            }
            if let Some(e) = &c.error {
                let _ = writeln!(notes, "- FAILED {} / {}: {e}", KINDS[ki].name(), wl.name());
            }
            if c.corrupt > 0 {
                let _ = writeln!(
                    notes,
                    "- CORRUPT {} / {}: {} tag mismatches over all repetitions",
                    KINDS[ki].name(),
                    wl.name(),
                    c.corrupt
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nNotes: bumpalo frees only its most recent block and bumps downward, so its grow of \
         the last block returns a new pointer (an overlapping move). \"—\": not applicable \
         (no bulk free / no fixed heap). Efficiency runs once (deterministic); higher is better."
    );
    if !notes.is_empty() {
        let _ = write!(s, "\n{notes}");
    }
    let _ = writeln!(s, "\nRun: {date}, {cpu}, {total:.1} s.");
    s
}

fn csv(wls: &[Wl], cells: &[Vec<Cell>], cfg: &Cfg) -> String {
    let mut s = String::from(
        "workload,subject,metric,median,min,max,ratio_to_system,samples,status,note\n",
    );
    for (wi, &wl) in wls.iter().enumerate() {
        let sys = median(&cells[wi][sys_idx()].ns);
        for (ki, c) in cells[wi].iter().enumerate() {
            let status = if let Some(e) = &c.error {
                format!("failed: {}", e.replace([',', '\n', '"'], " "))
            } else if let Some(k) = c.skip {
                k.to_string()
            } else if c.corrupt > 0 {
                format!("corrupt: {}", c.corrupt)
            } else {
                "ok".into()
            };
            let note = c.note.clone().unwrap_or_default().replace(',', ";");
            let name = KINDS[ki].name();
            if wl == Wl::Efficiency {
                let v = c.eff.map_or(String::new(), |e| format!("{e:.4}"));
                let _ = writeln!(
                    s,
                    "{},{name},live_fraction,{v},{v},{v},,{},{status},{note}",
                    wl.id(),
                    usize::from(c.eff.is_some())
                );
                continue;
            }
            let (m, (lo, hi)) = (median(&c.ns), min_max(&c.ns));
            let f = |x: f64| {
                if x.is_finite() {
                    format!("{x:.2}")
                } else {
                    String::new()
                }
            };
            let ratio = match (m, sys) {
                (Some(m), Some(sy)) if sy > 0.0 => format!("{:.3}", m / sy),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "{},{name},ns_per_call,{},{},{},{ratio},{},{status},{note}",
                wl.id(),
                m.map_or(String::new(), f),
                f(lo),
                f(hi),
                c.ns.len()
            );
            if wl.has_inplace() {
                let (m, (lo, hi)) = (median(&c.inplace), min_max(&c.inplace));
                let _ = writeln!(
                    s,
                    "{},{name},in_place_fraction,{},{},{},,{},{status},{note}",
                    wl.id(),
                    m.map_or(String::new(), |x| format!("{x:.4}")),
                    if lo.is_finite() {
                        format!("{lo:.4}")
                    } else {
                        String::new()
                    },
                    if hi.is_finite() {
                        format!("{hi:.4}")
                    } else {
                        String::new()
                    },
                    c.inplace.len()
                );
            }
        }
    }
    let _ = cfg;
    s
}

/// A hand-drawn line chart: ns per call against live blocks, log-log.
fn churn_svg(wls: &[Wl], cells: &[Vec<Cell>], cfg: &Cfg) -> String {
    let (w, h) = (900.0_f64, 540.0_f64);
    let (l, r, t, b) = (80.0, 230.0, 56.0, 64.0);
    let mut series: Vec<(Kind, Vec<(f64, f64)>)> = Vec::new();
    for (ki, &kind) in KINDS.iter().enumerate() {
        let pts: Vec<(f64, f64)> = wls
            .iter()
            .enumerate()
            .filter_map(|(wi, &wl)| match wl {
                Wl::Churn(k) if cells[wi][ki].error.is_none() => {
                    median(&cells[wi][ki].ns).map(|m| (k as f64, m))
                }
                _ => None,
            })
            .collect();
        series.push((kind, pts));
    }
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .filter(|&y| y > 0.0 && y.is_finite())
        .collect();
    if ys.is_empty() {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"80\"><text x=\"20\" y=\"40\" font-family=\"sans-serif\">no churn results in this run</text></svg>\n"
        );
    }
    let ylo = ys.iter().copied().fold(f64::INFINITY, f64::min).max(0.1);
    let yhi = ys.iter().copied().fold(0.0_f64, f64::max).max(ylo * 10.0);
    let (y0, y1) = (ylo.log10().floor(), yhi.log10().ceil());
    let (x0, x1) = (2.0_f64, 6.0_f64);
    let px = |x: f64| l + (x.log10() - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| t + (1.0 - (y.log10() - y0) / (y1 - y0)) * (h - t - b);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">churn: ns per allocator call vs live blocks (median of {}{})</text>"#,
        (l + w - r) / 2.0,
        cfg.reps,
        if cfg.quick { ", --quick" } else { "" }
    );
    // y grid: 1, 2, 5 per decade
    for e in (y0 as i32)..=(y1 as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v.log10() > y1 + 1e-9 {
                break;
            }
            let y = py(v);
            let major = m == 1.0;
            let _ = writeln!(
                s,
                r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"##,
                w - r,
                if major { "#bbb" } else { "#e5e5e5" }
            );
            let label = if v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
                l - 6.0,
                y + 4.0
            );
        }
    }
    // x grid: decades
    for ex in 2..=6 {
        let v = 10f64.powi(ex);
        let x = px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#bbb" stroke-width="1"/>"##,
            h - b
        );
        let label = match ex {
            2 => "100".to_string(),
            3 => "1 000".into(),
            4 => "10 000".into(),
            5 => "100 000".into(),
            _ => "1 000 000".into(),
        };
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            h - b + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        w - l - r,
        h - t - b
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">live blocks K (log scale)</text>"#,
        (l + w - r) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">ns per call (log scale)</text>"#,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for (i, (kind, pts)) in series.iter().enumerate() {
        let width = if *kind == Kind::Isoheap { 3.0 } else { 1.8 };
        if pts.len() > 1 {
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}"/>"#,
                path.join(" "),
                kind.color()
            );
        }
        for &(x, y) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{} K={x}: {y:.1} ns</title></circle>"#,
                px(x),
                py(y),
                kind.color(),
                kind.name()
            );
        }
        // legend
        let lx = w - r + 16.0;
        let ly = t + 10.0 + i as f64 * 22.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="{width}"/>"#,
            lx + 26.0,
            kind.color()
        );
        let suffix = if pts.len() < 4 { " (partial)" } else { "" };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}{suffix}</text>"#,
            lx + 32.0,
            ly + 4.0,
            kind.name()
        );
    }
    s.push_str("</svg>\n");
    s
}
