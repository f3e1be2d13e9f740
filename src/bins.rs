//! Segregated free lists of one chunk: the free blocks of up to [`BIN_MAX`] granules (64 KiB),
//! one doubly linked list per size class, and a bitmap of the classes that have blocks. O(1)
//! insert, remove and fit, whatever the sizes.
//!
//! The links live in the free block's node (its first granule), in the index's child fields,
//! which a binned block does not use: `Left` is the previous block of its list, `Right` the next
//! (0: none). `Size` and the footer are as for every free block, so merging with neighbours
//! works the same whether a neighbour is binned or indexed. The heads and the bitmap are in the
//! chunk header.
//!
//! Classes: one per size for 1..=32 granules (16..512 B, so small blocks are an exact fit),
//! then four per doubling up to 4,096 granules (61 classes: one bit each in a `u64`). [`fit`]
//! takes the head of the request's own class if that block is large enough (for requests above
//! 1 KiB, the best of the first [`FIT_TRIES`] blocks of the class), else the head of the lowest
//! non-empty class whose every block is large enough (a good fit, not the lowest address); other
//! blocks that would fit but sit in the request's class, with smaller ones, are found only by
//! [`scan`], which the heap runs before it reports out of memory.
//!
//! Invariant (checked by `Heap::check`): in a heap that bins (see `HeapCore::binned`), a free
//! block of at most `BIN_MAX` granules is on exactly the list of its class, and no other block
//! is on any list; a class's bit is set iff its list is not empty; `Left` of each listed block
//! is its predecessor on the list.

use crate::block::{Chunk, Gran, NodeField::*};

/// The largest binned block, in granules (64 KiB). Larger free blocks are in the index.
pub(crate) const BIN_MAX: Gran = 4096;
/// Number of size classes.
pub(crate) const BINS: usize = 61;
const _: () = assert!(BINS <= 64 && class(BIN_MAX) == BINS - 1);

/// The class of a block of `n` granules (`1 <= n <= BIN_MAX`).
#[inline]
pub(crate) const fn class(n: Gran) -> usize {
    if n <= 32 {
        (n - 1) as usize
    } else {
        let e = n.ilog2(); // 5..=12
        let sub = (n >> (e - 2)) & 3;
        32 + ((e - 5) * 4 + sub) as usize
    }
}

/// The smallest size in each class.
const CLASS_MIN: [Gran; BINS] = {
    let mut t = [0; BINS];
    let mut n = BIN_MAX;
    while n >= 1 {
        t[class(n)] = n;
        n -= 1;
    }
    t
};

/// The lowest class whose every block has at least `n` granules (`1 <= n <= BIN_MAX`).
#[inline]
pub(crate) fn class_up(n: Gran) -> usize {
    let k = class(n);
    k + usize::from(CLASS_MIN[k] < n)
}

/// Puts free block `g` (its `Size` written) at the head of its class's list.
///
/// # Safety
/// 1. `c` is a live chunk;
/// 2. `g` is a free block of it, of at most `BIN_MAX` granules, its `Size` written, on no list
///    and not in the index.
#[inline]
pub(crate) unsafe fn insert(c: Chunk, g: Gran) {
    // SAFETY: (1) live chunk; (2) g's node is ours to write, and the old head is a listed
    // free block whose node we may update.
    unsafe {
        let k = class(c.get(g, Size));
        let head = c.bin_head(k);
        c.put(g, Left, 0);
        c.put(g, Right, head);
        if head != 0 {
            c.put(head, Left, g);
        }
        c.set_bin_head(k, g);
        c.set_bin_map(c.bin_map() | 1 << k);
    }
}

/// Takes free block `g` off its list.
///
/// # Safety
/// 1. `c` is a live chunk;
/// 2. `g` is on the list of its class, its `Size` unchanged since it was inserted.
#[inline]
pub(crate) unsafe fn remove(c: Chunk, g: Gran) {
    // SAFETY: (1) live; (2) g and its neighbours on the list are listed free blocks.
    unsafe {
        let (prev, next) = (c.get(g, Left), c.get(g, Right));
        if next != 0 {
            c.put(next, Left, prev);
        }
        if prev != 0 {
            c.put(prev, Right, next);
        } else {
            let k = class(c.get(g, Size));
            debug_assert!(
                c.bin_head(k) == g,
                "bins::remove: {g} has no predecessor but is not the head of class {k}"
            );
            c.set_bin_head(k, next);
            if next == 0 {
                c.set_bin_map(c.bin_map() & !(1 << k));
            }
        }
    }
}

/// Blocks of the request's own class that [`fit`] compares, for requests of more than
/// [`BEST_FIT_FROM`] granules: the smallest that fits is taken (an exact fit at once). A class
/// there spans a quarter of a doubling, so its head may be up to 25% larger than the request;
/// comparing a few keeps large blocks from being cut into ill-fitting remainders (in a fixed
/// 64 MiB heap, live at the first failure: log-uniform 8 B-64 KiB 94.8% -> 95.9%, bimodal
/// 93.5% -> 94.5%), for about one more instruction per call at 10,000 live blocks of 8 B-4 KiB.
/// Smaller requests take the head (comparing there cost ten more instructions for 0.1 point).
pub(crate) const FIT_TRIES: usize = 4;
/// See [`FIT_TRIES`]: 1 KiB.
pub(crate) const BEST_FIT_FROM: Gran = 64;

/// A listed block of at least `n` granules (`1 <= n <= BIN_MAX`) from the lowest class that
/// guarantees it, if any. O(1).
///
/// # Safety
/// `c` is a live chunk.
#[inline]
pub(crate) unsafe fn fit(c: Chunk, n: Gran) -> Option<Gran> {
    debug_assert!(
        (1..=BIN_MAX).contains(&n),
        "bins::fit: {n} granules is not a binned size"
    );
    let (k0, up) = (class(n), class_up(n));
    // SAFETY: live chunk (contract); a class's head, if not 0, is a listed free block, and so
    // is the `Right` link of a listed block, if not 0 (the list invariant).
    unsafe {
        let map = c.bin_map();
        if map >> k0 & 1 != 0 && (up != k0 || n > BEST_FIT_FROM) {
            // The request's own class holds blocks from a little below `n` up (from `n` up when
            // `n` is the class's smallest size): its head (or the best of its first few, see
            // FIT_TRIES) is a closer fit than any block of the classes above, if it is large
            // enough.
            let mut g = c.bin_head(k0);
            let mut best: Option<(Gran, Gran)> = None;
            for _ in 0..if n > BEST_FIT_FROM { FIT_TRIES } else { 1 } {
                let s = c.get(g, Size);
                if s >= n && best.is_none_or(|(_, b)| s < b) {
                    best = Some((g, s));
                    if s == n {
                        break;
                    }
                }
                g = c.get(g, Right);
                if g == 0 {
                    break;
                }
            }
            if let Some((g, _)) = best {
                return Some(g);
            }
        }
        let map = map >> up;
        if map == 0 {
            return None;
        }
        // The bit is set, so the list is not empty.
        Some(c.bin_head(up + map.trailing_zeros() as usize))
    }
}

/// The first listed block, in the classes `lo..=hi` in turn, for which `take(g, size)` says
/// yes. O(blocks in those classes): for the out-of-memory path, which must also find the blocks
/// [`fit`] passes over (those in the class of `n` that are large enough).
///
/// # Safety
/// `c` is a live chunk and `hi < BINS`.
#[cold]
pub(crate) unsafe fn scan(
    c: Chunk,
    lo: usize,
    hi: usize,
    mut take: impl FnMut(Gran, Gran) -> bool,
) -> Option<Gran> {
    // SAFETY: live chunk; the lists link listed free blocks.
    unsafe {
        for k in lo..=hi {
            let mut g = c.bin_head(k);
            while g != 0 {
                if take(g, c.get(g, Size)) {
                    return Some(g);
                }
                g = c.get(g, Right);
            }
        }
    }
    None
}

/// The largest listed block's size (0 if none): the longest list of the highest non-empty
/// class is scanned.
///
/// # Safety
/// `c` is a live chunk.
pub(crate) unsafe fn largest(c: Chunk) -> Gran {
    // SAFETY: live chunk; the list links listed free blocks.
    unsafe {
        let map = c.bin_map();
        if map == 0 {
            return 0;
        }
        let mut g = c.bin_head(63 - map.leading_zeros() as usize);
        let mut best = 0;
        while g != 0 {
            best = best.max(c.get(g, Size));
            g = c.get(g, Right);
        }
        best
    }
}

/// Calls `f(g, size)` for every listed block, class by class, after checking each list's
/// links, its class and its bit. Stops at the first error (granule and what is wrong); gives
/// up after `limit` blocks (a cycle).
///
/// # Safety
/// `c` is a live chunk whose listed blocks' nodes are readable (a heap's chunk).
pub(crate) unsafe fn walk(
    c: Chunk,
    limit: usize,
    f: &mut dyn FnMut(Gran, Gran) -> Result<(), (Gran, &'static str)>,
) -> Result<(), (Gran, &'static str)> {
    let mut seen = 0usize;
    // SAFETY: live chunk; the lists link listed free blocks, each checked against the bitmap
    // by `f` before its node is trusted further.
    unsafe {
        let map = c.bin_map();
        for k in 0..BINS {
            let head = c.bin_head(k);
            if (head != 0) != (map >> k & 1 != 0) {
                return Err((head, "size-class bit disagrees with its list"));
            }
            let (mut prev, mut g) = (0, head);
            while g != 0 {
                seen += 1;
                if seen > limit {
                    return Err((g, "size-class list longer than the free blocks (a cycle)"));
                }
                if g < c.first() || g >= c.frontier() || !c.bit(g) {
                    return Err((g, "size-class list holds a block that is not free"));
                }
                let s = c.get(g, Size);
                f(g, s)?;
                if s > BIN_MAX || class(s) != k {
                    return Err((g, "block on the list of another size class"));
                }
                if c.get(g, Left) != prev {
                    return Err((g, "size-class list's back link is wrong"));
                }
                (prev, g) = (g, c.get(g, Right));
            }
        }
        if map >> BINS != 0 {
            return Err((0, "bit set for a size class that does not exist"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_in_order() {
        let mut last = 0;
        for n in 1..=BIN_MAX {
            let k = class(n);
            assert!(k < BINS, "class {k} of {n} granules");
            assert!(k == last || k == last + 1, "classes skip at {n}");
            assert!(CLASS_MIN[k] <= n);
            last = k;
        }
        assert_eq!(last, BINS - 1);
        for n in 1..=32 {
            assert_eq!(CLASS_MIN[class(n)], n, "small sizes are exact classes");
        }
    }

    #[test]
    fn class_up_guarantees_the_size() {
        for n in 1..=BIN_MAX {
            let k = class_up(n);
            assert!(k < BINS);
            assert!(CLASS_MIN[k] >= n, "class {k} may hold blocks below {n}");
            assert!(
                k == 0 || CLASS_MIN[k - 1] < n,
                "class {k} is not the lowest for {n}"
            );
        }
    }
}
