//! The chunk provider: heaps take their chunks (up to half a segment) from here, not from the
//! OS, so that making a heap, growing it by a small chunk and dropping it take no system call,
//! and so that the owner of any address in a chunk is found in O(1).
//!
//! Memory comes in *segments* of [`SEG`] bytes (4 MiB; 1 MiB under Miri), aligned to their size
//! and recorded in the process page map (`pagemap`, tagged so they are told apart from the
//! large chunks mapped on their own). A segment is split buddy-style into blocks of
//! `MIN_CARVE << k` bytes (512 B up to half the segment), each aligned to its size:
//!
//! ```text
//! segment base                                                       base + SEG
//! | header: slice table (64K) | 64K | 128K.. |    ...    |       SEG / 2 block        |
//! ```
//!
//! The header is a table with one 64-bit entry per 512 B *slice*: on every slice of a chunk of
//! `MIN_CARVE << k` bytes (below 64 KiB) that is handed out, `k + 1` in the low byte and the
//! chunk's owner (the heap identity it was published with) above; `FREE | (k + 1)` on the first
//! slice of a free block; 0 elsewhere. A chunk of 64 KiB or more has the same entry in a
//! *coarse table* of one entry per 64 KiB instead (in the header's own, otherwise unused,
//! entries), which a lookup reads first. So one or two atomic loads give the chunk of an address,
//! `align_down(addr, MIN_CARVE << k)`, and its owner (O(1), lock-free: the entries are written
//! before a chunk's pointers are handed out, see [`publish`]), and a freed chunk merges with its
//! buddy when the buddy's first slice says it is a free block of the same size (O(log)
//! merges). The header's own slices are never a chunk's: their first entries hold the
//! segment's fields.
//!
//! Free blocks are on one doubly linked list per size (links in the block's first 24 bytes,
//! with the count of bytes from its start that may be non-zero: the *dirty* prefix, so a heap
//! that takes the block zeroes only what was used). One spin lock guards the lists; it is held
//! for a few list operations, and across a system call only to give a segment back or to
//! decommit idle memory past the limit. A chunk's slice entries are written only after the
//! heap has written its header ([`publish`]).
//!
//! Bounds: the provider keeps at most one segment with nothing carved from it (more go back to
//! the OS at once), and at most the *idle limit* ([`set_idle_limit`], 8 MiB by default) of
//! dirty free memory: past it, the pages of free blocks beyond their first go back to the OS
//! (`madvise`), largest blocks first, down to half the limit. Under Miri nothing is decommitted.

use super::{os, pagemap};
use core::cell::UnsafeCell;
use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*, fence};

/// log2 of the segment size.
const SEG_SHIFT: u32 = pagemap::ALIGN_SHIFT;
/// Bytes per segment (and its alignment): 4 MiB (1 MiB under Miri).
pub(crate) const SEG: usize = 1 << SEG_SHIFT;
const MIN_SHIFT: u32 = 9;
/// The smallest chunk the provider hands out: 512 B.
pub(crate) const MIN_CARVE: usize = 1 << MIN_SHIFT;
/// The largest: half a segment. Larger chunks are mapped on their own.
pub(crate) const MAX_CARVE: usize = SEG / 2;
/// Slices per segment.
const SLICES: usize = SEG >> MIN_SHIFT;
/// Block sizes: `MIN_CARVE << k` for `k < ORDERS`.
const ORDERS: usize = (SEG_SHIFT - MIN_SHIFT) as usize;
/// Slice-table flag: the first slice of a free block.
const FREE: u64 = 0x80;
/// Bytes of a free block's links (always dirty).
const LINK: usize = core::mem::size_of::<Link>();
/// Pages mapped for the page map tag: a segment's entry has this bit set.
const TAG: usize = 1;

/// The header at a segment's base: one entry per slice (see the module docs). The entries of
/// the header's own slices, never a chunk's, hold the segment's fields ([`CARVED`],
/// [`MAP_OFF`], [`MAP_LEN`]).
#[repr(C)]
struct Segment {
    slices: [AtomicU64; SLICES],
}

/// Field entry: bytes handed out from this segment now (changed under the lock).
const CARVED: usize = 0;
/// Field entries: the underlying OS mapping (`base - map_off`, `map_len`; larger than the
/// segment only under Miri, which cannot unmap part of an over-aligned mapping). Written once,
/// before the segment is published.
const MAP_OFF: usize = 1;
const MAP_LEN: usize = 2;

/// The order of the block the header occupies (the smallest power of two that holds it).
const HEADER_ORDER: usize = {
    let mut k = 0;
    while (MIN_CARVE << k) < core::mem::size_of::<Segment>() {
        k += 1;
    }
    k
};
/// Bytes of the header block: no chunk lies below this offset.
const HEADER_LEN: usize = MIN_CARVE << HEADER_ORDER;
/// Chunks of at least `COARSE` bytes (64 KiB) are recorded in the *coarse table*, one entry per
/// `COARSE` bytes of the segment, not in the slice entries: a lookup in a large chunk reads one
/// of 64 entries (a few cache lines per segment, not a line per 4 KiB of chunk), and a large
/// chunk is published with one store per 64 KiB. A lookup reads the coarse entry first and the
/// slice entry only if it is 0.
const COARSE_SHIFT: u32 = 16;
const COARSE: usize = 1 << COARSE_SHIFT;
/// Where the coarse table starts: the second half of the header's own slice entries (the first
/// half holds the segment's fields), which no chunk uses.
const COARSE_AT: usize = (HEADER_LEN >> MIN_SHIFT) / 2;
const _: () = assert!(COARSE_AT >= SEG >> COARSE_SHIFT && HEADER_LEN <= COARSE);
/// The low byte of a slice entry: the order code; the owner is above it.
const CODE: u64 = 0xff;
const OWNER_SHIFT: u32 = 8;

/// The links at the start of a free block.
#[repr(C)]
struct Link {
    next: *mut Link,
    prev: *mut Link,
    /// Bytes from the block's start that may be non-zero (at least `LINK`).
    dirty: usize,
}

struct State {
    heads: [*mut Link; ORDERS],
    /// The one segment kept with nothing carved from it (null: none).
    spare: *mut Segment,
    /// Sum of the free blocks' dirty prefixes.
    idle: usize,
    /// Segments mapped now.
    segments: usize,
    /// Idle bytes past which the next free trims (see `uncarve_in`).
    next_trim: usize,
}

struct Provider {
    lock: AtomicBool,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only reached through `with`, which holds `lock` (an acquire/release spin
// lock) for the whole access; the raw pointers in it point into segments the provider owns.
unsafe impl Sync for Provider {}

static P: Provider = Provider {
    lock: AtomicBool::new(false),
    state: UnsafeCell::new(State {
        heads: [null_mut(); ORDERS],
        spare: null_mut(),
        idle: 0,
        segments: 0,
        next_trim: 0,
    }),
};

static IDLE_LIMIT: AtomicUsize = AtomicUsize::new(8 << 20);
static HANDLERS: AtomicBool = AtomicBool::new(false);

/// Sets how many bytes of freed, still committed memory the process-wide chunk provider keeps
/// for the next heap before it gives their pages back to the OS (8 MiB by default). Memory
/// past it is decommitted at the next free of a chunk, largest free blocks first, down to half
/// the limit. 0 decommits every free block's pages (beyond its first) at once. Besides this,
/// each thread keeps up to 128 KiB of chunks its heaps gave back, for its next heaps (given to
/// the provider when the thread exits, or by `release_cached` on that thread).
///
/// ```
/// use allocator_api2::vec::Vec;
///
/// isoheap::set_idle_limit(1 << 20); // keep at most 1 MiB of dropped heaps' memory committed
/// let heap = isoheap::Heap::new();
/// let mut v: Vec<u8, _> = Vec::with_capacity_in(100, &heap);
/// v.extend_from_slice(b"hello");
/// drop(v);
/// drop(heap); // its chunk goes to this thread's cache, for the next heap
/// ```
pub fn set_idle_limit(bytes: usize) {
    IDLE_LIMIT.store(bytes, Relaxed);
}

/// Releases the lock when dropped (so a panic inside, a failed debug assertion, does not leave
/// it held for every later caller).
struct Held;

impl Drop for Held {
    fn drop(&mut self) {
        P.lock.store(false, Release);
    }
}

/// Runs `f` on the state under the lock.
fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    while P
        .lock
        .compare_exchange_weak(false, true, Acquire, Relaxed)
        .is_err()
    {
        while P.lock.load(Relaxed) {
            core::hint::spin_loop();
        }
    }
    let _held = Held;
    // SAFETY: the lock is held (until `_held` drops, after `f`), so this is the only reference
    // to the state.
    f(unsafe { &mut *P.state.get() })
}

/// Runs `f` on the state under the lock if the lock is free now (`None`, running nothing, if
/// it is held).
fn try_with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    if P.lock
        .compare_exchange(false, true, Acquire, Relaxed)
        .is_err()
    {
        return None;
    }
    let _held = Held;
    // SAFETY: the lock is held (until `_held` drops, after `f`), so this is the only reference
    // to the state.
    Some(f(unsafe { &mut *P.state.get() }))
}

/// Registers the provider's `fork` handlers (once). Called before the lock is ever taken: a
/// child forked while another thread held it would wait for it forever, so fork takes it
/// first and both sides release it (plain functions that allocate nothing). Registering may
/// allocate, so never under the lock. A fork-safe `GlobalHeap` calls it before registering
/// its own handlers: prepare handlers run in the reverse order of registration, so the
/// provider's lock is taken last, after every heap lock whose holder may be waiting for it.
pub(crate) fn register_fork_handlers() {
    #[cfg(not(miri))]
    if !HANDLERS.load(Relaxed) && !HANDLERS.swap(true, AcqRel) {
        os::atfork(fork_prepare, fork_after, fork_child);
    }
    #[cfg(miri)]
    let _ = &HANDLERS;
}

#[cfg(not(miri))]
extern "C" fn fork_prepare() {
    while P
        .lock
        .compare_exchange_weak(false, true, Acquire, Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
}

#[cfg(not(miri))]
extern "C" fn fork_after() {
    P.lock.store(false, Release);
}

/// In the child, the only thread is the one that forked: no lookup is in flight, whatever the
/// count said when another thread was inside one.
#[cfg(not(miri))]
extern "C" fn fork_child() {
    READERS.store(0, Relaxed);
    P.lock.store(false, Release);
}

/// The order of a block of `len` bytes (a power of two in `MIN_CARVE..=MAX_CARVE`).
fn order(len: usize) -> usize {
    debug_assert!(
        len.is_power_of_two() && (MIN_CARVE..=MAX_CARVE).contains(&len),
        "provider: {len} bytes is not a block size"
    );
    (len.trailing_zeros() - MIN_SHIFT) as usize
}

/// The segment holding `p` (a pointer into one, with the segment's provenance).
fn segment_of<T>(p: *mut T) -> *mut Segment {
    p.cast::<u8>().map_addr(|a| a & !(SEG - 1)).cast()
}

/// The slice entry at `off` of `seg`. The reference must not outlive the segment (the lifetime
/// is the caller's to bound).
///
/// # Safety
/// `seg` is a live segment and `off < SEG`.
unsafe fn slice<'a>(seg: *mut Segment, off: usize) -> &'a AtomicU64 {
    // SAFETY: live segment (contract); `off < SEG`, so the index is in the table; the table is
    // never moved while the segment lives, and atomics may be shared.
    unsafe { &(*seg).slices[off >> MIN_SHIFT] }
}

/// The entries that record a chunk of `len` bytes at offset `off` of `seg` (one bounds check
/// for all of them): one per [`COARSE`] bytes in the coarse table for a chunk of at least
/// that, else one per slice.
///
/// # Safety
/// `seg` is a live segment, `off + len <= SEG`, `len` a provider chunk size and `off` a
/// multiple of it; the references must not outlive the segment.
#[inline]
unsafe fn entries<'a>(seg: *mut Segment, off: usize, len: usize) -> &'a [AtomicU64] {
    let range = if len >= COARSE {
        COARSE_AT + (off >> COARSE_SHIFT)..COARSE_AT + ((off + len) >> COARSE_SHIFT)
    } else {
        off >> MIN_SHIFT..(off + len) >> MIN_SHIFT
    };
    // SAFETY: live segment (contract); the range is inside the table (`off + len <= SEG`, and
    // the coarse table has `SEG / COARSE` entries from `COARSE_AT`); the table is never moved
    // while the segment lives, and atomics may be shared.
    unsafe { &(&(*seg).slices)[range] }
}

/// The entries that record the carved chunk `base`, `len` (see [`entries`]).
///
/// # Safety
/// `base`, `len` are exactly a chunk `carve` returned, not given back; the references must
/// not outlive its segment.
#[inline]
unsafe fn chunk_entries<'a>(base: NonNull<u8>, len: usize) -> &'a [AtomicU64] {
    let seg = segment_of(base.as_ptr());
    // SAFETY: a carved chunk lies in a live segment, aligned to its size (contract).
    unsafe { entries(seg, base.addr().get() - seg.addr(), len) }
}

/// Field entry `i` of `seg`'s header (an entry of the header's own slices).
///
/// # Safety
/// `seg` is a live segment; the reference must not outlive it.
unsafe fn field<'a>(seg: *mut Segment, i: usize) -> &'a AtomicU64 {
    const { assert!(MAP_LEN < COARSE_AT) };
    // SAFETY: live segment (contract); `i` indexes a header slice's entry.
    unsafe { &(*seg).slices[i] }
}

/// Bytes carved from `seg` now.
///
/// # Safety
/// `seg` is a live segment and the provider's lock is held.
unsafe fn carved(seg: *mut Segment) -> usize {
    // SAFETY: forwarded contract.
    unsafe { field(seg, CARVED) }.load(Relaxed) as usize
}

/// Adds `delta` (wrapping: pass `len.wrapping_neg()` to subtract) to `seg`'s carved bytes.
///
/// # Safety
/// As for [`carved`].
unsafe fn add_carved(seg: *mut Segment, delta: usize) {
    // SAFETY: forwarded contract.
    let f = unsafe { field(seg, CARVED) };
    f.store(
        (f.load(Relaxed) as usize).wrapping_add(delta) as u64,
        Relaxed,
    );
}

/// Puts the free block at `off` of `seg`, of order `k`, on its list.
///
/// # Safety
/// The block lies in the live segment `seg`, is on no list and nobody uses it.
unsafe fn push(st: &mut State, seg: *mut Segment, off: usize, k: usize, dirty: usize) {
    // SAFETY: the block is inside the segment (contract), and derived from its base.
    unsafe {
        let b = seg.cast::<u8>().add(off).cast::<Link>();
        crate::vg::defined(b.cast(), LINK);
        let next = st.heads[k];
        b.write(Link {
            next,
            prev: null_mut(),
            dirty,
        });
        if !next.is_null() {
            (*next).prev = b;
        }
        st.heads[k] = b;
        st.idle += dirty;
        slice(seg, off).store(FREE | (k as u64 + 1), Release);
    }
}

/// Takes free block `b` of order `k` off its list; returns its dirty prefix.
///
/// # Safety
/// `b` is on list `k`.
unsafe fn unlink(st: &mut State, b: *mut Link, k: usize) -> usize {
    // SAFETY: b and its neighbours are free blocks on list k (contract), with valid links.
    unsafe {
        let Link { next, prev, dirty } = b.read();
        if prev.is_null() {
            st.heads[k] = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        let seg = segment_of(b);
        slice(seg, b.addr() - seg.addr()).store(0, Relaxed);
        st.idle -= dirty;
        dirty
    }
}

/// Maps a segment, writes its header and publishes it in the page map. Its blocks are not on
/// the lists yet (see `adopt`).
fn map_segment() -> Option<*mut Segment> {
    let (base, map_off, map_len) = os::map_aligned(SEG, SEG).ok()?;
    let seg = base.cast::<Segment>().as_ptr();
    // SAFETY: a fresh mapping of SEG bytes, aligned, zero-filled: the header is valid as all
    // zeroes (atomics of 0), and only these fields need writing.
    unsafe {
        field(seg, MAP_OFF).store(map_off as u64, Relaxed);
        field(seg, MAP_LEN).store(map_len as u64, Relaxed);
    }
    let tagged = base.map_addr(|a| a | TAG);
    if !pagemap::insert(tagged, SEG, 0) {
        // SAFETY: exactly the mapping from `map_aligned`, never published, unused.
        unsafe { os::unmap(base.sub(map_off), map_len) };
        return None;
    }
    Some(seg)
}

/// Puts a fresh segment's blocks on the lists: everything after the header, as the largest
/// aligned blocks that tile it.
///
/// # Safety
/// `seg` is from `map_segment` and not adopted before.
unsafe fn adopt(st: &mut State, seg: *mut Segment) {
    st.segments += 1;
    for k in HEADER_ORDER..ORDERS {
        // SAFETY: blocks `MIN_CARVE << k .. MIN_CARVE << (k + 1)` tile the segment after the
        // header; each is free and on no list.
        unsafe { push(st, seg, MIN_CARVE << k, k, LINK) };
    }
}

/// Takes a segment's blocks off the lists (it is empty: all of them are the ones `adopt` put
/// there, merged back) and gives it to the OS. Returns false, changing nothing, if an
/// ownership lookup may be reading its table (see [`retire`]): the segment stays, empty and
/// adopted, and goes at a later drop.
///
/// # Safety
/// `seg` is a live, adopted segment with nothing carved from it.
unsafe fn drop_segment(st: &mut State, seg: *mut Segment) -> bool {
    // SAFETY: an empty segment's free blocks are exactly adopt's, each on its list (contract);
    // the mapping goes after it is out of the page map (`retire`) and off every list.
    unsafe {
        debug_assert!(carved(seg) == 0, "provider: dropping a segment in use");
        if !retire(seg) {
            return false;
        }
        for k in HEADER_ORDER..ORDERS {
            let b = seg.cast::<u8>().add(MIN_CARVE << k).cast::<Link>();
            unlink(st, b, k);
        }
        st.segments -= 1;
        unmap_segment(seg);
        true
    }
}

/// Takes a segment out of the page map, so that no lookup finds it from now on, and returns
/// true if none that found it before can still be reading its slice table ([`owner_at`]'s
/// count of lookups in flight is 0 after the removal: Dekker with `owner_at`, whose count goes
/// up before it loads the entry). Else puts the segment back in the page map and returns
/// false: never waiting here, which could be for a lookup that a signal handler interrupted on
/// this very thread, or for a stream of lookups that never pauses.
///
/// # Safety
/// `seg` is a live segment from `map_segment` that holds no chunk.
unsafe fn retire(seg: *mut Segment) -> bool {
    let base = segment_base(seg);
    pagemap::remove(base, SEG);
    fence(SeqCst);
    if READERS.load(Acquire) == 0 {
        return true;
    }
    // Its leaf of the page map exists (the segment was recorded there), so this cannot fail.
    let back = pagemap::insert(base.map_addr(|a| a | TAG), SEG, 0);
    debug_assert!(
        back,
        "provider: a segment could not be put back in the page map"
    );
    false
}

/// The segment's base pointer.
fn segment_base(seg: *mut Segment) -> NonNull<u8> {
    // SAFETY: segments are mappings, never at address 0.
    unsafe { NonNull::new_unchecked(seg.cast::<u8>()) }
}

/// Gives a segment that [`retire`] took out of the page map to the OS.
///
/// # Safety
/// `seg` is a live segment that `retire` returned true for, on no list and holding no chunk;
/// nothing reads or writes it afterwards.
unsafe fn unmap_segment(seg: *mut Segment) {
    // SAFETY: a live segment (contract), so its header is readable; no lookup can reach it
    // (out of the page map, and no ownership lookup was in flight after that, see `retire`;
    // the chunk lookups for blocks, `resolve`, only reach segments holding the caller's block,
    // and this one holds none).
    unsafe {
        let off = field(seg, MAP_OFF).load(Relaxed) as usize;
        let len = field(seg, MAP_LEN).load(Relaxed) as usize;
        os::unmap(segment_base(seg).sub(off), len);
    }
}

/// A chunk of `len` bytes (a power of two in `MIN_CARVE..=MAX_CARVE`), aligned to `len`, and
/// how many bytes from its start may be non-zero (the rest reads as zero). `None` if the OS
/// refuses a new segment.
pub(crate) fn carve(len: usize) -> Option<(NonNull<u8>, usize)> {
    register_fork_handlers();
    loop {
        if let Some(got) = with(|st| carve_in(st, len)) {
            return Some(got);
        }
        let seg = map_segment()?;
        // Another thread may have added a segment meanwhile: then ours goes back at once (a
        // segment nobody carves from would never be given back).
        let k = order(len);
        with(|st| {
            let room = (k..ORDERS).any(|j| !st.heads[j].is_null());
            // SAFETY: fresh from map_segment: published, never adopted, so never on a list or
            // carved; adopted once (here) if it stays.
            unsafe {
                if room && retire(seg) {
                    unmap_segment(seg);
                } else {
                    adopt(st, seg);
                }
            }
        });
    }
}

/// [`carve`] for a call that must not wait for the provider's lock (a signal handler that
/// interrupted a thread which may hold it): `None` if the lock is busy or no free block is
/// large enough (it maps no segment).
pub(crate) fn try_carve(len: usize) -> Option<(NonNull<u8>, usize)> {
    try_with(|st| carve_in(st, len)).flatten()
}

/// [`carve`] from the blocks on `st`'s lists (`None` if none is large enough).
fn carve_in(st: &mut State, len: usize) -> Option<(NonNull<u8>, usize)> {
    let k = order(len);
    let j = (k..ORDERS).find(|&j| !st.heads[j].is_null())?;
    let b = st.heads[j];
    // SAFETY: b heads list j; the split halves lie inside it, so inside its segment; the slices
    // written are the chunk's, inside the segment.
    unsafe {
        let mut dirty = unlink(st, b, j);
        let seg = segment_of(b);
        let off = b.addr() - seg.addr();
        for i in (k..j).rev() {
            let half = MIN_CARVE << i;
            push(st, seg, off + half, i, dirty.saturating_sub(half).max(LINK));
            dirty = dirty.min(half);
        }
        // The chunk's slices stay 0 (not free, not a chunk) until `publish`, after the heap has
        // written its header: a lookup must never find a chunk whose header is not there yet.
        if carved(seg) == 0 && st.spare == seg {
            st.spare = null_mut();
        }
        add_carved(seg, len);
        Some((NonNull::new_unchecked(b.cast::<u8>()), dirty.max(LINK)))
    }
}

/// Makes a chunk from [`carve`] findable from its addresses ([`resolve`]), as `owner`'s
/// ([`owner_at`]). Call it once its header is written: the Release stores pair with the
/// Acquire load in `chunk_in`, so whoever finds the chunk sees the header.
///
/// # Safety
/// `base`, `len` are exactly a chunk `carve` returned, not given back.
pub(crate) unsafe fn publish(base: NonNull<u8>, len: usize, owner: usize) {
    debug_assert!(
        (owner as u64) >> (64 - OWNER_SHIFT) == 0,
        "provider: owner {owner} does not fit a slice entry"
    );
    let e = (k_code(order(len))) | ((owner as u64) << OWNER_SHIFT);
    // SAFETY: forwarded contract.
    for s in unsafe { chunk_entries(base, len) } {
        s.store(e, Release);
    }
}

/// Makes a published chunk unfindable again (its slice entries say "no chunk"), as before
/// [`publish`], without taking the lock: for a chunk given back to the provider, or one that
/// leaves its heap for a thread's cache (`tcache`), carved still.
///
/// # Safety
/// `base`, `len` are exactly a chunk `carve` returned, not given back, that nobody uses now.
pub(crate) unsafe fn forget(base: NonNull<u8>, len: usize) {
    // SAFETY: forwarded contract; only the chunk's own entries change, and no entry of a
    // carved chunk says FREE, before or after, so a buddy's merge under the lock reads "not
    // free" either way.
    for e in unsafe { chunk_entries(base, len) } {
        e.store(0, Relaxed);
    }
}

/// The order code of a handed-out chunk of order `k`.
#[inline]
const fn k_code(k: usize) -> u64 {
    k as u64 + 1
}

/// Takes back a chunk from [`carve`]; `dirty` bytes from its start may be non-zero.
///
/// # Safety
/// 1. `base`, `len` are exactly a chunk `carve` returned that was not given back before;
/// 2. nothing reads or writes it afterwards.
pub(crate) unsafe fn uncarve(base: NonNull<u8>, len: usize, dirty: usize) {
    // Whatever memcheck thought of the blocks in it, the provider may write its links there.
    crate::vg::undefined(base.as_ptr(), len);
    // SAFETY: forwarded contract.
    with(|st| unsafe { uncarve_in(st, base, len, dirty) });
}

/// [`uncarve`] into `st`.
///
/// # Safety
/// As for [`uncarve`], with a chunk carved from `st`'s segments.
unsafe fn uncarve_in(st: &mut State, base: NonNull<u8>, len: usize, dirty: usize) {
    let mut k = order(len);
    // SAFETY: the chunk lies in a live segment (item 1); every block touched below is its buddy
    // or a free block of the same segment, found through the slice table.
    unsafe {
        forget(base, len);
        let seg = segment_of(base.as_ptr());
        let mut off = base.addr().get() - seg.addr();
        add_carved(seg, len.wrapping_neg());
        let mut dirty = dirty.max(LINK).min(len);
        while k + 1 < ORDERS {
            let half = MIN_CARVE << k;
            let buddy = off ^ half;
            // The header is never free (and its entries are the segment's fields).
            if buddy < HEADER_LEN || slice(seg, buddy).load(Relaxed) != FREE | k_code(k) {
                break;
            }
            let b = seg.cast::<u8>().add(buddy).cast::<Link>();
            let their = unlink(st, b, k);
            dirty = if buddy > off {
                half + their
            } else {
                half + dirty
            };
            off = off.min(buddy);
            k += 1;
        }
        push(st, seg, off, k, dirty);
        if carved(seg) == 0 {
            if st.spare.is_null() {
                st.spare = seg;
            } else if st.spare != seg {
                // If an ownership lookup is in flight, the segment stays (empty, its blocks on
                // the lists) and goes at a later drop.
                drop_segment(st, seg);
            }
        }
        let limit = IDLE_LIMIT.load(Relaxed);
        if st.idle > limit && st.idle > st.next_trim {
            trim(st, limit / 2);
            // What could not be decommitted (blocks of a page, no decommit on this system)
            // is not rescanned at every free: only after half the limit more is idle.
            st.next_trim = if st.idle > limit {
                st.idle + limit / 2
            } else {
                0
            };
        }
    }
}

/// Decommits the pages of free blocks (all but the first page of each, which holds its
/// links), largest first, until at most `keep` dirty bytes are idle.
fn trim(st: &mut State, keep: usize) {
    let page = os::page_size();
    for k in (0..ORDERS).rev() {
        let mut b = st.heads[k];
        while !b.is_null() && st.idle > keep {
            // SAFETY: b is on list k: a free block of the provider, with valid links; the
            // decommitted range is whole pages inside it after its first page.
            unsafe {
                let len = MIN_CARVE << k;
                let dirty = (*b).dirty;
                if len > page && dirty > page {
                    let from = NonNull::new_unchecked(b.cast::<u8>()).add(page);
                    let to = dirty.next_multiple_of(page).min(len);
                    if super::decommit(from, to - page) {
                        (*b).dirty = page;
                        st.idle -= dirty - page;
                    }
                }
                b = (*b).next;
            }
        }
    }
}

/// Gives back the spare segment and decommits every free block: what `release_cached` does
/// for the provider. Returns the bytes unmapped.
pub(crate) fn release_idle() -> usize {
    with(|st| {
        let spare = core::mem::replace(&mut st.spare, null_mut());
        trim(st, 0);
        if spare.is_null() {
            return 0;
        }
        // SAFETY: the spare is a live, adopted, empty segment.
        if unsafe { drop_segment(st, spare) } {
            SEG
        } else {
            st.spare = spare;
            0
        }
    })
}

/// The chunk of a carved chunk holding `addr`, if any: `seg` is the page map's entry for
/// `addr`'s window (tag cleared).
///
/// # Safety
/// `seg` is a live segment, and stays so during the call.
#[cfg(test)]
unsafe fn chunk_in(seg: NonNull<u8>, addr: usize) -> Option<NonNull<u8>> {
    // SAFETY: forwarded contract.
    unsafe { entry_in(seg, addr) }.map(|(c, _)| c)
}

/// The carved chunk holding `addr` in `seg` and its owner, from one load of the slice entry.
///
/// # Safety
/// As for [`chunk_in`].
#[inline]
unsafe fn entry_in(seg: NonNull<u8>, addr: usize) -> Option<(NonNull<u8>, usize)> {
    let off = addr.wrapping_sub(seg.addr().get());
    if !(HEADER_LEN..SEG).contains(&off) {
        return None;
    }
    let table = seg.cast::<Segment>().as_ptr();
    // SAFETY: a live segment (contract), `off < SEG`, so the coarse entry of its `COARSE`
    // block is in the table too.
    let e = unsafe {
        let coarse = field(table, COARSE_AT + (off >> COARSE_SHIFT)).load(Acquire);
        if coarse != 0 {
            coarse
        } else {
            slice(table, off).load(Acquire)
        }
    };
    let code = e & CODE;
    if code == 0 || code & FREE != 0 {
        return None;
    }
    let start = off & !((MIN_CARVE << (code - 1)) - 1);
    // SAFETY: inside the segment.
    Some((unsafe { seg.add(start) }, (e >> OWNER_SHIFT) as usize))
}

/// The owner recorded for the chunk holding `addr` (0: none), from the page map and the slice
/// table alone (see `region::owner_at`).
#[inline]
pub(crate) fn owner_at(addr: usize) -> usize {
    // Announce the read before loading the entry (Dekker with `unmap_segment`: either this
    // load misses the segment, or its unmapping waits until the count falls back).
    READERS.fetch_add(1, Relaxed);
    fence(SeqCst);
    // A tagged entry's segment stays mapped until this read is done: a segment is unmapped
    // only after `retire` took it out of the page map and then saw READERS at 0 (so, for this
    // lookup, `resolve`'s "the segment is live" holds for any address).
    let owner = resolve(addr).map_or(0, |(_, o)| o);
    READERS.fetch_sub(1, Release);
    owner
}

/// Lookups ([`owner_at`]) in flight that may read a segment's slice table: a segment is
/// unmapped only when none is (see `retire`). Lookups for a block the caller holds
/// ([`resolve`]) do not count: their segment cannot go while the block lives.
static READERS: AtomicUsize = AtomicUsize::new(0);

/// The chunk holding `addr` and the owner it was published with, from the page map and the
/// slice table alone (never a chunk header): a large chunk's base if `addr` is below its end,
/// or the carved chunk holding `addr` in a segment. For the chunk of a block the caller holds
/// (whose segment cannot go while the block lives); for any other address, [`owner_at`],
/// which a segment's unmapping waits for. A chunk in a thread's cache may still answer with the
/// identity of the dropped heap it came from (see `tcache::uncarve`), which no live heap has.
#[inline]
pub(crate) fn resolve(addr: usize) -> Option<(NonNull<u8>, usize)> {
    let (p, owner) = pagemap::owner_of(addr)?;
    if p.addr().get() & TAG == 0 {
        return (owner != 0).then_some((p, owner));
    }
    // SAFETY: a tagged entry is a segment published by map_segment. It is live here: `addr`
    // is in a block the caller holds (see above), so the segment holds a chunk and is not
    // dropped. (A foreign pointer, a misuse, may meet a segment being unmapped: README
    // "Hardening".)
    unsafe {
        entry_in(
            NonNull::new_unchecked(p.as_ptr().map_addr(|a| a & !TAG)),
            addr,
        )
    }
}

/// Counters of the provider: (segments mapped, idle dirty bytes).
pub(crate) fn counters() -> (usize, usize) {
    with(|st| (st.segments, st.idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private provider state (not the process's): the tests see exactly its lists.
    fn state() -> State {
        State {
            heads: [null_mut(); ORDERS],
            spare: null_mut(),
            idle: 0,
            segments: 0,
            next_trim: 0,
        }
    }

    /// The blocks on each list, as (offset in the segment, dirty prefix).
    fn lists(st: &State, seg: *mut Segment) -> [std::vec::Vec<(usize, usize)>; ORDERS] {
        core::array::from_fn(|k| {
            let mut out = std::vec::Vec::new();
            let mut b = st.heads[k];
            while !b.is_null() {
                // SAFETY: b is on list k of this private state: a free block with links.
                unsafe {
                    out.push((b.addr() - seg.addr(), (*b).dirty));
                    b = (*b).next;
                }
            }
            out
        })
    }

    /// A fresh segment, adopted by `st`.
    fn adopted_segment(st: &mut State) -> *mut Segment {
        let seg = map_segment().expect("a segment");
        // SAFETY: fresh from map_segment, adopted once (here).
        unsafe { adopt(st, seg) };
        seg
    }

    /// A segment is never unmapped, and never waited for, while an ownership lookup may be
    /// reading its table: the drop is refused (the segment stays whole, findable, its blocks on
    /// the lists) and succeeds once no lookup is in flight. (The first design spun until the
    /// count fell to 0, under the provider's lock: a lookup interrupted by a signal handler
    /// that dropped a heap on the same thread would have waited forever, and this test with
    /// it.)
    #[test]
    fn a_segment_is_not_unmapped_under_a_lookup() {
        let mut st = state();
        let seg = adopted_segment(&mut st);
        let start = lists(&st, seg);
        let inside = seg.addr() + SEG / 2;
        READERS.fetch_add(1, SeqCst); // a lookup in flight
        // SAFETY: an adopted segment with nothing carved.
        let dropped = unsafe { drop_segment(&mut st, seg) };
        assert!(!dropped, "dropped under a lookup");
        assert_eq!(lists(&st, seg), start, "the blocks stay on the lists");
        assert!(
            pagemap::get(inside).is_some(),
            "the segment is back in the page map"
        );
        READERS.fetch_sub(1, SeqCst);
        // SAFETY: as above; other tests' lookups may still be in flight for a moment.
        while !unsafe { drop_segment(&mut st, seg) } {
            std::thread::yield_now();
        }
        // (Not asked of the page map now: another test may map a segment at the same place.)
        assert!(st.heads.iter().all(|h| h.is_null()));
    }

    /// Chunks of 64 KiB and more are recorded in the coarse table, smaller ones in the slice
    /// entries, side by side in one segment: a lookup finds each live chunk and its owner from
    /// any of its addresses, and nothing once it is given back (then a smaller chunk carved
    /// where a large one was is found through its slice entries).
    #[test]
    fn large_and_small_chunks_are_found_side_by_side() {
        let mut st = state();
        let seg = adopted_segment(&mut st);
        let base = NonNull::new(seg.cast::<u8>()).unwrap();
        let sizes = [512, COARSE, 4096, 2 * COARSE, 512, SEG / 4];
        let chunks: std::vec::Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let (p, _) = carve_in(&mut st, len).expect("room in the segment");
                // SAFETY: just carved.
                unsafe { publish(p, len, 2 * i + 2) };
                (p, len, 2 * i + 2)
            })
            .collect();
        for &(p, len, owner) in &chunks {
            for at in [0, 1, len / 2, len - 1] {
                // SAFETY: seg is live.
                let found = unsafe { entry_in(base, p.addr().get() + at) };
                assert_eq!(
                    found,
                    Some((p, owner)),
                    "the chunk of {len} B holding +{at}"
                );
            }
        }
        for &(p, len, _) in &chunks {
            // SAFETY: carved above, given back once, unused after.
            unsafe { uncarve_in(&mut st, p, len, LINK) };
            for at in [0, len - 1] {
                // SAFETY: seg is live.
                assert_eq!(unsafe { entry_in(base, p.addr().get() + at) }, None);
            }
        }
        // Where the large chunks were, small ones now.
        let small: std::vec::Vec<_> = (0..64)
            .map(|_| carve_in(&mut st, 1024).unwrap().0)
            .collect();
        for &p in &small {
            // SAFETY: just carved.
            unsafe { publish(p, 1024, 7) };
            // SAFETY: seg is live.
            let found = unsafe { entry_in(base, p.addr().get() + 1000) };
            assert_eq!(found, Some((p, 7)));
        }
        for &p in &small {
            // SAFETY: carved above, given back once.
            unsafe { uncarve_in(&mut st, p, 1024, LINK) };
        }
        // SAFETY: nothing carved: the segment is the state's spare.
        unsafe {
            while !drop_segment(&mut st, seg) {
                std::thread::yield_now();
            }
        }
    }

    /// Chunks carved from a fresh segment and given back in a scrambled order merge back into
    /// exactly the blocks the segment started with; the dirty prefixes only grow (a block that
    /// was used is never reported clean), and a lookup finds each live chunk from any of its
    /// addresses, and nothing once it is freed.
    #[test]
    fn freed_chunks_merge_back_into_the_segment() {
        let mut st = state();
        let seg = adopted_segment(&mut st);
        let start = lists(&st, seg);
        let len = 16 << 10;
        let n = (SEG / 4) / len;
        let mut chunks: std::vec::Vec<_> = (0..n)
            .map(|i| {
                let (p, dirty) = carve_in(&mut st, len).expect("room in the segment");
                // SAFETY: just carved.
                unsafe { publish(p, len, 2) };
                assert_eq!(dirty, LINK, "a fresh segment is clean past the links");
                assert!(p.addr().get().is_multiple_of(len), "aligned to its size");
                // SAFETY: the chunk is ours: write its first and last bytes.
                unsafe {
                    p.as_ptr().write(i as u8);
                    p.as_ptr().add(len - 1).write(i as u8);
                }
                p
            })
            .collect();
        for &p in &chunks {
            let base = NonNull::new(seg.cast::<u8>()).unwrap();
            for at in [0, 1, len / 2, len - 1] {
                // SAFETY: seg is live.
                let found = unsafe { chunk_in(base, p.addr().get() + at) };
                assert_eq!(found, Some(p), "the chunk of an address inside it");
            }
        }
        // A fixed scramble: every 7th, wrapping (n is a power of two, so 7 is coprime to it).
        let order: std::vec::Vec<usize> = (0..n).map(|i| (i * 7) % n).collect();
        for i in order {
            // SAFETY: carved above, given back once, unused after.
            unsafe { uncarve_in(&mut st, chunks[i], len, len) };
            let base = NonNull::new(seg.cast::<u8>()).unwrap();
            // SAFETY: seg is live.
            assert_eq!(unsafe { chunk_in(base, chunks[i].addr().get()) }, None);
        }
        chunks.clear();
        let end = lists(&st, seg);
        for k in 0..ORDERS {
            let offs: std::vec::Vec<usize> = end[k].iter().map(|b| b.0).collect();
            let want: std::vec::Vec<usize> = start[k].iter().map(|b| b.0).collect();
            assert_eq!(offs, want, "blocks of order {k} after merging");
            for (b, s) in end[k].iter().zip(&start[k]) {
                assert!(b.1 >= s.1, "a used block reported cleaner than before");
            }
        }
        // SAFETY: a private state's only segment is its spare now: nothing carved.
        unsafe {
            assert_eq!(st.spare, seg);
            // Other tests' ownership lookups may be in flight: then the drop waits for a
            // later try.
            while !drop_segment(&mut st, seg) {
                std::thread::yield_now();
            }
        }
        assert!(
            st.heads.iter().all(|h| h.is_null()),
            "every block left with the segment"
        );
        assert_eq!(st.idle, 0);
    }
}
