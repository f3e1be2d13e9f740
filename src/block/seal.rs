//! The checked-mode seal at the end of every used block:
//!
//! ```text
//! | caller's `size` bytes | canary: CANARY ^ i, for each byte i | tag: u16 |
//! ^ block start                                      block end - 2 ^        ^ block end
//! ```
//!
//! The tag holds the distance from the caller's end to the block's end (low byte) and log2 of
//! the alignment (high byte), XORed with a key that depends on the block's address, so a tag
//! copied elsewhere or random bytes rarely read as valid.

use super::{Chunk, GRANULE, GRANULE_SHIFT, Gran, MAX_ALIGN};

/// Bytes every sealed block carries after the caller's, at its very end: the `u16` tag.
pub(crate) const TAG: usize = 2;
/// The bytes between the caller's end and the tag.
pub(crate) const CANARY: u8 = 0xC5;

#[inline]
fn bytes(g: Gran) -> usize {
    (g as usize) << GRANULE_SHIFT
}

/// The key mixed into a block's tag: differs from block to block, so a tag copied elsewhere
/// (or random bytes) rarely reads as valid.
#[inline]
pub(crate) fn tag_key(c: Chunk, g: Gran) -> u16 {
    let x = (c.base().addr().get() >> 12) as u32 ^ g.wrapping_mul(0x9E37_79B9);
    (x ^ x >> 16) as u16 ^ 0xA5C3
}

/// writes the canary after the caller's `size` bytes and the tag (the distance
/// from the caller's end to the block's end, and log2 of the alignment) in the last two bytes.
///
/// # Safety
/// `g..g+n` is a used block of live chunk `c`, `size + TAG <= bytes(n) < size + TAG + GRANULE`.
#[inline]
pub(crate) unsafe fn seal(c: Chunk, g: Gran, n: Gran, size: usize, align: usize) {
    let end = bytes(n);
    let dist = end - size;
    debug_assert!(
        (TAG..TAG + GRANULE).contains(&dist),
        "seal: {size} bytes in {n} granules"
    );
    // SAFETY: the canary and tag lie in the block's last granule (contract); the tag is 2-byte
    // aligned because blocks end on a granule.
    unsafe {
        let p = c.ptr(g).as_ptr();
        for i in 0..dist - TAG {
            p.add(size + i).write(CANARY ^ i as u8);
        }
        let v = dist as u16 | (align.trailing_zeros() as u16) << 8;
        p.add(end - TAG).cast::<u16>().write(v ^ tag_key(c, g));
    }
}

/// the caller's size and alignment recorded in the tag of block `g..g+n`, if the
/// tag is well formed.
///
/// # Safety
/// `g..g+n` is a block of live chunk `c`.
#[inline]
pub(crate) unsafe fn unseal(c: Chunk, g: Gran, n: Gran) -> Option<(usize, usize)> {
    let end = bytes(n);
    // SAFETY: the tag is the block's last two bytes.
    let v = unsafe { c.ptr(g).as_ptr().add(end - TAG).cast::<u16>().read() } ^ tag_key(c, g);
    let (dist, log) = ((v & 0xff) as usize, (v >> 8) as u32);
    if !(TAG..TAG + GRANULE).contains(&dist) || dist > end || 1usize << log.min(63) > MAX_ALIGN {
        return None;
    }
    Some((end - dist, 1 << log))
}

/// is block `g..g+n`'s tag well formed and its canary intact? `skip_first`: the
/// block's first granule may be being overwritten by a deferred free (arenas): its bytes are not
/// read (a one-granule block is not checked).
///
/// # Safety
/// `g..g+n` is a block of live chunk `c`.
pub(crate) unsafe fn seal_intact(c: Chunk, g: Gran, n: Gran, skip_first: bool) -> bool {
    if skip_first && n == 1 {
        return true;
    }
    // SAFETY: the tag and canary lie in the block's last granule.
    unsafe {
        let Some((size, _)) = unseal(c, g, n) else {
            return false;
        };
        canary_intact(c, g, n, size, skip_first)
    }
}

/// are the canary bytes between the caller's `size` bytes and the tag of block
/// `g..g+n` intact? `skip_first`: bytes in the block's first granule are not read (a deferred
/// free may be writing them).
///
/// # Safety
/// `g..g+n` is a block of live chunk `c` whose tag says `size` (so `size + TAG <= bytes(n)`).
#[inline]
pub(crate) unsafe fn canary_intact(
    c: Chunk,
    g: Gran,
    n: Gran,
    size: usize,
    skip_first: bool,
) -> bool {
    let from = if skip_first {
        GRANULE.saturating_sub(size)
    } else {
        0
    };
    // SAFETY: the canary lies between the caller's bytes and the tag, inside the block.
    unsafe {
        let p = c.ptr(g).as_ptr();
        (from..bytes(n) - TAG - size).all(|i| p.add(size + i).read() == CANARY ^ i as u8)
    }
}
