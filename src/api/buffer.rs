//! A heap over a caller's buffer: no OS, no `mmap`, no global allocator, so it works in a
//! `#![no_std]` program with default features off.
//!
//! [`Heap::from_buffer`] lays one chunk (or, past 64 GiB, several) over the buffer and returns a
//! [`BufferHeap`], which borrows the buffer for as long as the heap lives and derefs to the
//! [`Heap`]. The heap never grows (`can_grow` is off: an allocation that does not fit fails with
//! `AllocError`), and its chunks are marked not mapped, so nothing ever hands the buffer to the
//! OS: dropping and resetting skip unmapping and the process cache of mappings, and the give-back
//! paths skip `madvise`. Every pointer the heap makes is derived from the buffer's pointer.

use crate::GRANULE;
use crate::api::Heap;
use crate::error::HeapError;
use crate::heap::{BUFFER_MAX_PIECE as MAX_PIECE, BUFFER_MIN_GRANULES as MIN_GRANULES};
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::Deref;
use core::ptr::NonNull;

/// A [`Heap`] over a caller's buffer, made by [`Heap::from_buffer`].
///
/// It derefs to the [`Heap`], so `&*heap` (or `&heap` where a `&Heap` is expected) is the
/// allocator, and every `Heap` method works: `stats()`, `check()`, `map()`, `set_budget()`. The
/// lifetime `'a` is that of the borrow of the buffer: the buffer cannot be touched, moved or
/// freed while the heap lives, and every collection borrowing the heap ends before it.
///
/// There is deliberately no `DerefMut`: `core::mem::swap` or `replace` through it would move the
/// `Heap` out, loose from the buffer's lifetime. [`BufferHeap::reset`] stands in for
/// [`Heap::reset`].
///
/// The buffer stays borrowed while the heap lives:
///
/// ```compile_fail,E0506
/// use core::mem::MaybeUninit;
/// let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
/// let heap = isoheap::Heap::from_buffer(&mut buf).unwrap();
/// buf[100] = MaybeUninit::new(1); // error: `buf` is borrowed by the heap
/// drop(heap);
/// ```
///
/// and the `Heap` inside cannot be moved out of it:
///
/// ```compile_fail,E0596
/// use core::mem::MaybeUninit;
/// let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
/// let mut heap = isoheap::Heap::from_buffer(&mut buf).unwrap();
/// let stolen = core::mem::replace(&mut *heap, isoheap::Heap::new()); // error: no `DerefMut`
/// ```
pub struct BufferHeap<'a> {
    heap: Heap,
    _buf: PhantomData<&'a mut [MaybeUninit<u8>]>,
}

impl BufferHeap<'_> {
    /// The smallest buffer [`Heap::from_buffer`] accepts if it starts on a 16-byte boundary: the
    /// heap's metadata (its chunk header and bitmaps, sized for checked mode) plus one 16-byte
    /// block: 384 bytes on 64-bit targets (the example checks the figure). A buffer that does
    /// not start on 16 bytes needs up to 15 bytes more.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// use isoheap::{BufferHeap, Heap};
    ///
    /// # #[cfg(target_pointer_width = "64")]
    /// assert_eq!(BufferHeap::MIN_LEN, 384);
    /// #[repr(align(16))]
    /// struct Aligned([MaybeUninit<u8>; BufferHeap::MIN_LEN]);
    /// let mut buf = Aligned([MaybeUninit::uninit(); BufferHeap::MIN_LEN]);
    /// let heap = Heap::from_buffer(&mut buf.0).unwrap();
    /// assert!(heap.stats().free >= 16);                // room for one block
    /// ```
    pub const MIN_LEN: usize = MIN_GRANULES * GRANULE;

    /// Frees every block at once, like [`Heap::reset`]: the whole buffer is free again, O(1 +
    /// buffer size / 1024). Taking `&mut self` guarantees that no collection still borrows the
    /// heap. The buffer's contents are left as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// use isoheap::Heap;
    ///
    /// let mut buf = [MaybeUninit::<u8>::uninit(); 8 << 10];
    /// let mut heap = Heap::from_buffer(&mut buf)?;
    /// let v = allocator_api2::vec::Vec::<u8, &Heap>::with_capacity_in(4000, &heap);
    /// core::mem::forget(v);                               // leaked: reset frees it anyway
    /// heap.reset();
    /// assert_eq!(heap.stats().in_use, 0);
    /// # Ok::<(), isoheap::HeapError>(())
    /// ```
    pub fn reset(&mut self) {
        self.heap.reset();
    }
}

impl Deref for BufferHeap<'_> {
    type Target = Heap;

    #[inline]
    fn deref(&self) -> &Heap {
        &self.heap
    }
}

impl AsRef<Heap> for BufferHeap<'_> {
    #[inline]
    fn as_ref(&self) -> &Heap {
        &self.heap
    }
}

impl fmt::Debug for BufferHeap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BufferHeap").field(&self.heap).finish()
    }
}

impl Heap {
    /// A heap over `buf`, the caller's memory: no system call, no `mmap`, available without
    /// default features (`#![no_std]`, bare metal). The heap serves blocks from the buffer only
    /// and never grows: an allocation that does not fit fails with `AllocError` and leaves the
    /// heap usable. The returned [`BufferHeap`] derefs to the `Heap` and borrows the buffer
    /// until it is dropped; the buffer is never unmapped or handed to anyone else.
    ///
    /// The contents may be uninitialised: nothing is read before it is written, and
    /// `allocate_zeroed` zeroes what it hands out. A start that is not on a 16-byte boundary is
    /// rounded up to one (blocks are 16-byte granules) and the length is rounded down to whole
    /// granules, so at most 15 bytes at each end go unused. The heap's metadata (about 1/128 of
    /// the buffer, at least [`BufferHeap::MIN_LEN`] minus one granule) lives at its start; see
    /// [`Heap::stats`] for what is left. More than 64 GiB becomes several chunks (a block cannot
    /// span two). O(buffer size / 1024) to clear the bitmap.
    ///
    /// # Errors
    /// An empty buffer is [`HeapError::ZeroSize`]; one too small for the metadata and one
    /// 16-byte block once its start is aligned is [`HeapError::TooSmall`], whose `minimum` is
    /// the smallest length that works at this buffer's address (the padding to the next
    /// 16-byte boundary plus [`BufferHeap::MIN_LEN`]). Never a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// use isoheap::{Heap, HeapError};
    /// use allocator_api2::vec::Vec;
    ///
    /// let mut buf = [MaybeUninit::<u8>::uninit(); 16 << 10];
    /// let heap = Heap::from_buffer(&mut buf)?;
    /// let mut v: Vec<u32, &Heap> = Vec::new_in(&heap);
    /// v.extend(0..1000);
    /// assert_eq!(v.iter().sum::<u32>(), 499_500);
    /// assert!(v.try_reserve(1 << 20).is_err());     // past the buffer: an error, not a panic
    /// drop(v);
    /// assert_eq!(heap.stats().in_use, 0);
    /// heap.check().expect("heap invariants hold");
    ///
    /// assert_eq!(Heap::from_buffer(&mut []).unwrap_err(), HeapError::ZeroSize);
    /// assert!(matches!(Heap::from_buffer(&mut buf[..20]), Err(HeapError::TooSmall { .. })));
    /// # Ok::<(), HeapError>(())
    /// ```
    pub fn from_buffer(buf: &mut [MaybeUninit<u8>]) -> Result<BufferHeap<'_>, HeapError> {
        from_buffer_in_pieces(buf, MAX_PIECE)
    }
}

/// [`Heap::from_buffer`] with chunks of at most `max_piece` bytes (a multiple of 16, at least
/// the minimum chunk; tests pass small ones).
fn from_buffer_in_pieces(
    buf: &mut [MaybeUninit<u8>],
    max_piece: usize,
) -> Result<BufferHeap<'_>, HeapError> {
    debug_assert!(max_piece.is_multiple_of(GRANULE) && max_piece >= BufferHeap::MIN_LEN);
    let len = buf.len();
    if len == 0 {
        return Err(HeapError::ZeroSize);
    }
    // The provenance root of the whole heap: every chunk and block pointer derives from it.
    let start = NonNull::from(buf).cast::<u8>();
    let pad = start.addr().get().wrapping_neg() & (GRANULE - 1);
    let usable = len.saturating_sub(pad) & !(GRANULE - 1);
    if usable < BufferHeap::MIN_LEN {
        return Err(HeapError::TooSmall {
            requested: len,
            minimum: pad + BufferHeap::MIN_LEN,
        });
    }
    // SAFETY: pad + usable <= len, so `base` and `base + usable` stay inside the buffer.
    let base = unsafe { start.add(pad) };
    let heap = Heap::new();
    // SAFETY: `base..base + usable` lies inside the buffer (pad + usable <= len), starts on a
    // granule and is a whole number of granules; the BufferHeap returned borrows the buffer
    // exclusively for the heap's whole life; `heap` is new and empty.
    heap.with_core(|core| unsafe { core.adopt_buffer(base, usable, max_piece) });
    Ok(BufferHeap {
        heap,
        _buf: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::alloc::Layout;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    fn buffer(len: usize) -> Box<[MaybeUninit<u8>]> {
        vec![MaybeUninit::uninit(); len].into_boxed_slice()
    }

    #[test]
    fn smallest_buffer_holds_one_granule() {
        let mut buf = buffer(BufferHeap::MIN_LEN + GRANULE);
        let pad = buf.as_ptr().addr().wrapping_neg() & (GRANULE - 1);
        let heap = Heap::from_buffer(&mut buf[pad..pad + BufferHeap::MIN_LEN]).unwrap();
        let s = heap.stats();
        // The minimum is sized for checked mode's metadata (three bitmaps): one granule is
        // left then, a little more without checked mode.
        let meta = crate::block::meta_granules(MIN_GRANULES, heap.is_checked()) * GRANULE;
        let room = BufferHeap::MIN_LEN - meta;
        assert!(room >= GRANULE);
        assert_eq!((s.mapped, s.free, s.chunks), (BufferHeap::MIN_LEN, room, 1));
        // One granule holds 16 bytes, or 14 and the tag in checked mode.
        let l = Layout::from_size_align(GRANULE - 2, 1).unwrap();
        let b = heap.allocate_zeroed(l).unwrap();
        // SAFETY: a live block of GRANULE bytes.
        assert!(unsafe { b.as_ref() }.iter().all(|&x| x == 0));
        let more: Vec<_> = (1..room / GRANULE)
            .map(|_| heap.allocate(l).unwrap())
            .collect();
        assert!(heap.allocate(l).is_err());
        for m in more {
            // SAFETY: allocated just above with this layout.
            unsafe { heap.deallocate(m.cast(), l) };
        }
        heap.check().unwrap();
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(b.cast(), l) };
        heap.check().unwrap();
        drop(heap);
        let e = Heap::from_buffer(&mut buf[pad..pad + BufferHeap::MIN_LEN - 1]).unwrap_err();
        assert_eq!(
            e,
            HeapError::TooSmall {
                requested: BufferHeap::MIN_LEN - 1,
                minimum: BufferHeap::MIN_LEN
            }
        );
    }

    /// A buffer larger than one chunk becomes several, in address order, each usable.
    #[test]
    fn large_buffer_is_split_into_chunks() {
        let piece = 4096;
        // Room for the quick lists' table too (checked mode carves it from the buffer's start).
        let table = crate::quick::BUFFER_TABLE_LEN;
        let mut buf = buffer(4 * piece + table + 100);
        let pad = buf.as_ptr().addr().wrapping_neg() & (GRANULE - 1);
        let mut heap = from_buffer_in_pieces(&mut buf, piece).unwrap();
        let s = heap.stats();
        // 4 whole pieces, and a fifth chunk from the tail when what is left after aligning
        // (which depends on where the allocator put the buffer) still holds one.
        assert!(s.chunks == 4 || s.chunks == 5, "{s:?}");
        let whole = s.mapped;
        assert!(whole >= 4 * piece && whole <= (4 * piece + table + 100 - pad) & !(GRANULE - 1));
        heap.check().unwrap();
        let l = Layout::from_size_align(3000, 16).unwrap();
        let blocks: Vec<_> = (0..4).map(|_| heap.allocate(l).unwrap()).collect();
        assert!(heap.allocate(l).is_err(), "a block cannot span two chunks");
        let mut addrs: Vec<_> = blocks.iter().map(|b| b.cast::<u8>().addr().get()).collect();
        addrs.sort_unstable();
        assert!(
            addrs.windows(2).all(|w| w[1] - w[0] == piece),
            "one block per chunk"
        );
        heap.check().unwrap();
        heap.reset();
        assert_eq!(heap.stats().in_use, 0);
        assert_eq!(
            heap.stats().mapped,
            s.mapped,
            "reset keeps every buffer chunk"
        );
        heap.check().unwrap();
    }

    /// Without `mmap` a heap that must map memory says why it cannot, and an empty one fails
    /// its allocations cleanly (CI runs this module's tests with `--no-default-features`).
    #[test]
    #[cfg(not(feature = "mmap"))]
    fn no_backing_without_mmap() {
        let e = Heap::with_capacity(4096).unwrap_err();
        assert_eq!(e, HeapError::NoBacking);
        assert_eq!(
            Heap::builder().initial(1 << 20).build().unwrap_err(),
            HeapError::NoBacking
        );
        let text = std::format!("{e}");
        assert!(
            text.contains("`mmap`") && text.contains("Heap::from_buffer"),
            "{text}"
        );
        let heap = Heap::new();
        assert!(heap.allocate(Layout::new::<u64>()).is_err());
        assert_eq!(heap.stats().mapped, 0);
    }

    #[test]
    fn reset_and_drop_leave_the_buffer_to_its_owner() {
        let mut buf = buffer(8192);
        for round in 0..3u8 {
            let mut heap = Heap::from_buffer(&mut buf).unwrap();
            let l = Layout::from_size_align(1000, 8).unwrap();
            for _ in 0..2 {
                let b = heap.allocate(l).unwrap();
                // SAFETY: a live block of at least 1000 bytes.
                unsafe { b.cast::<u8>().write_bytes(round, 1000) };
                heap.reset();
                assert_eq!(heap.stats().in_use, 0);
                heap.check().unwrap();
            }
            let b = heap.allocate_zeroed(l).unwrap();
            // SAFETY: a live block of b.len() bytes.
            assert!(unsafe { b.as_ref() }.iter().all(|&x| x == 0));
            drop(heap);
        }
        // The buffer is the caller's again; its bytes are readable once written.
        buf.fill(MaybeUninit::new(7));
    }
}
