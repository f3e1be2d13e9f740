//! The records a block holds while it is neither used nor free, in its first granule:
//!
//! ```text
//! quick-list link (heap::alloc/free, quick.rs):  | next: Option<NonNull<u8>> | (rest unused) |
//! remote free (sync::arena, another thread's):   | next: *mut u8 | size | align_log2 << 58 |
//! ```
//!
//! A block is at least one granule (16 bytes), 16-byte aligned, so both fit and are aligned.
//! The pointers written here are block pointers rebuilt from their chunk's base (provenance).

#![cfg_attr(not(feature = "mmap"), allow(dead_code))]

use core::ptr::NonNull;

/// Bit position of log2 of the alignment in a remote record's size word: its top 6 bits. A
/// block's size never reaches them (blocks are at most 2^32 granules, and below `isize::MAX`).
const ALIGN_SHIFT: u32 = usize::BITS - 6;

/// Writes the quick-list link of block `p`.
///
/// # Safety
/// 1. `p` is a block of at least one granule that nobody uses, with the chunk's provenance;
/// 2. it is on no list and not free (its first granule is not an index node).
#[inline]
pub(crate) unsafe fn set_quick_link(p: NonNull<u8>, next: Option<NonNull<u8>>) {
    crate::vg::defined(p.as_ptr(), core::mem::size_of::<usize>());
    // SAFETY: (1) the block is ours, 16-byte aligned, with room for the link; (2) nothing else
    // is stored there.
    unsafe { p.cast::<Option<NonNull<u8>>>().write(next) }
}

/// Reads the quick-list link of block `p`.
///
/// # Safety
/// `p` is on a quick list: its link was written by [`set_quick_link`].
#[inline]
pub(crate) unsafe fn quick_link(p: NonNull<u8>) -> Option<NonNull<u8>> {
    // SAFETY: the first word is the link (contract).
    unsafe { p.cast::<Option<NonNull<u8>>>().read() }
}

/// Writes a remote-free record's size word: the caller's `size` and `align` (a power of two
/// up to `MAX_ALIGN`).
///
/// # Safety
/// 1. `b` is a block of at least one granule that its owner gave up (the caller's free), with
///    the chunk's provenance; 2. nobody else writes it until the owning arena drains it.
#[inline]
pub(crate) unsafe fn set_remote(b: NonNull<u8>, size: usize, align: usize) {
    debug_assert!(
        size >> ALIGN_SHIFT == 0 && align.is_power_of_two(),
        "remote record: size {size} or alignment {align} does not fit the size word"
    );
    let word = size | (align.trailing_zeros() as usize) << ALIGN_SHIFT;
    // SAFETY: (1) the second word of a granule-sized, aligned block; (2) exclusive.
    unsafe { b.cast::<usize>().add(1).write(word) }
}

/// Writes a remote-free record's link to the next record on the stack.
///
/// # Safety
/// As for [`set_remote`].
#[inline]
pub(crate) unsafe fn remote_next_set(b: NonNull<u8>, next: *mut u8) {
    // SAFETY: the first word of a granule-sized, aligned block we may write (contract).
    unsafe { b.cast::<*mut u8>().write(next) }
}

/// Reads a remote-free record's link.
///
/// # Safety
/// `b` holds a record written by [`set_remote`] and [`remote_next_set`], published to this
/// thread (the stack's Release/Acquire pair).
#[inline]
pub(crate) unsafe fn remote_next(b: NonNull<u8>) -> *mut u8 {
    // SAFETY: the first word is the link (contract).
    unsafe { b.cast::<*mut u8>().read() }
}

/// Reads a remote-free record's size and alignment.
///
/// # Safety
/// As for [`remote_next`].
#[inline]
pub(crate) unsafe fn remote_layout(b: NonNull<u8>) -> (usize, usize) {
    // SAFETY: the second word is the size word (contract).
    let word = unsafe { b.cast::<usize>().add(1).read() };
    (word & ((1 << ALIGN_SHIFT) - 1), 1 << (word >> ALIGN_SHIFT))
}
