//! The address-ordered set of free blocks of one chunk: insert, remove, first_fit.
//!
//! A treap stored inside the free blocks themselves (the node is the block's first granule, so
//! the index costs no memory). Keys are granule numbers (addresses); the heap order is on a
//! hash of the key, which makes the shape that of a random binary search tree whatever the
//! allocation pattern: expected depth about `2 ln n`. Each node carries the largest block size
//! in its subtree, so [`first_fit`] walks one root-to-node path to the **lowest-addressed**
//! block of at least the wanted size: O(log n) expected, no scan.
//!
//! Invariant (checked by `Heap::check`): a block is in the index iff it is free and below the
//! frontier; in-order keys ascend; `Max` of every node is the maximum `Size` in its subtree;
//! every child's priority is at most its parent's.

use crate::block::{Chunk, Gran, NodeField::*};
use core::ptr::NonNull;

/// Heap-order priority of a node: a fixed mix of its key (murmur3's finaliser).
#[inline]
pub(crate) fn prio(g: Gran) -> u32 {
    let mut x = g;
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^= x >> 16;
    x
}

/// Does `a` sit above `b` in the heap order? (Ties broken by key, so the order is total.)
#[inline]
fn above(a: Gran, b: Gran) -> bool {
    let (pa, pb) = (prio(a), prio(b));
    pa > pb || (pa == pb && a < b)
}

/// `Max` of a subtree, 0 for the empty one.
///
/// # Safety
/// `t` is 0 or a node of `c`'s index.
#[inline]
unsafe fn max_of(c: Chunk, t: Gran) -> u32 {
    if t == 0 {
        0
    } else {
        // SAFETY: t is a node (contract).
        unsafe { c.get(t, Max) }
    }
}

/// Recomputes `Max` of node `t` from its size and its children.
///
/// # Safety
/// `t` is a node of `c`'s index whose children are nodes or 0.
#[inline]
unsafe fn fix(c: Chunk, t: Gran) {
    // SAFETY: t and its children are nodes (contract).
    unsafe {
        let m = c
            .get(t, Size)
            .max(max_of(c, c.get(t, Left)))
            .max(max_of(c, c.get(t, Right)));
        c.put(t, Max, m);
    }
}

/// Pointer to the root link of `c`'s index.
#[inline]
fn root(c: Chunk) -> NonNull<u32> {
    // SAFETY: a field of the header of a live chunk (every Chunk the index sees is live).
    unsafe { NonNull::new_unchecked(&raw mut (*c.h()).root) }
}

/// Splits subtree `t` into keys `< key` and keys `> key`.
///
/// # Safety
/// `t` is 0 or a node of `c`'s index; `key` is not in the subtree.
unsafe fn split(c: Chunk, t: Gran, key: Gran) -> (Gran, Gran) {
    if t == 0 {
        return (0, 0);
    }
    // SAFETY: t is a node and its children are nodes or 0 (index invariant).
    unsafe {
        if t < key {
            let (l, r) = split(c, c.get(t, Right), key);
            c.put(t, Right, l);
            fix(c, t);
            (t, r)
        } else {
            let (l, r) = split(c, c.get(t, Left), key);
            c.put(t, Left, r);
            fix(c, t);
            (l, t)
        }
    }
}

/// Joins subtrees `a` and `b` where every key of `a` is below every key of `b`.
///
/// # Safety
/// `a` and `b` are 0 or disjoint subtrees of `c`'s index, ordered as said.
unsafe fn join(c: Chunk, a: Gran, b: Gran) -> Gran {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    // SAFETY: a and b are nodes with node or 0 children.
    unsafe {
        if above(a, b) {
            let r = join(c, c.get(a, Right), b);
            c.put(a, Right, r);
            fix(c, a);
            a
        } else {
            let l = join(c, a, c.get(b, Left));
            c.put(b, Left, l);
            fix(c, b);
            b
        }
    }
}

/// Inserts free block `g` (its size already written by `mark_free`) under `link`.
///
/// # Safety
/// `link` points at a link slot of `c`'s index holding 0 or a subtree; `g` is a free block
/// of `c` not yet in the index whose key belongs in that subtree's range.
unsafe fn insert_at(c: Chunk, link: NonNull<u32>, g: Gran) {
    // SAFETY: link is a valid slot; all nodes reached are index nodes (contract).
    unsafe {
        let t = link.read();
        if t == 0 || above(g, t) {
            let (l, r) = split(c, t, g);
            c.put(g, Left, l);
            c.put(g, Right, r);
            fix(c, g);
            link.write(g);
            return;
        }
        let next = if g < t {
            c.field(t, Left)
        } else {
            c.field(t, Right)
        };
        insert_at(c, next, g);
        let m = c.get(t, Max).max(c.get(g, Size));
        c.put(t, Max, m);
    }
}

/// Adds free block `g` to the index. Expected O(log n).
///
/// # Safety
/// `g` is a free block of live chunk `c` (marked with `mark_free`) and not in the index.
pub(crate) unsafe fn insert(c: Chunk, g: Gran) {
    // SAFETY: the root slot holds the whole index; g belongs anywhere in it.
    unsafe { insert_at(c, root(c), g) }
}

/// Removes `g` from the subtree under `link`.
///
/// # Safety
/// `g` is a node in the subtree under `link`.
unsafe fn remove_at(c: Chunk, link: NonNull<u32>, g: Gran) {
    // SAFETY: every node reached is an index node; g is in the subtree, so the search ends.
    unsafe {
        let t = link.read();
        debug_assert!(t != 0, "free block at granule {g} missing from the index");
        if t == g {
            link.write(join(c, c.get(g, Left), c.get(g, Right)));
            return;
        }
        let next = if g < t {
            c.field(t, Left)
        } else {
            c.field(t, Right)
        };
        remove_at(c, next, g);
        fix(c, t);
    }
}

/// Removes free block `g` from the index. Expected O(log n).
///
/// # Safety
/// `g` is in the index of live chunk `c`.
pub(crate) unsafe fn remove(c: Chunk, g: Gran) {
    // SAFETY: forwarded contract.
    unsafe { remove_at(c, root(c), g) }
}

/// Changes the size of indexed block `g` (same key), fixing the maxima on its path.
///
/// # Safety
/// `g` is in the index of live chunk `c`, and `g..g + size` is free and touches no other free
/// block.
pub(crate) unsafe fn resize(c: Chunk, g: Gran, size: Gran) {
    // SAFETY: the span belongs to the heap; g is a node so the descent ends at it.
    unsafe {
        c.set_size(g, size);
        resize_at(c, root(c), g);
    }
}

/// # Safety
/// `g` is in the subtree under `link`.
unsafe fn resize_at(c: Chunk, link: NonNull<u32>, g: Gran) {
    // SAFETY: every node reached is an index node.
    unsafe {
        let t = link.read();
        if t != g {
            let next = if g < t {
                c.field(t, Left)
            } else {
                c.field(t, Right)
            };
            resize_at(c, next, g);
        }
        fix(c, t);
    }
}

/// The lowest-addressed free block of at least `size` granules, if any. One root-to-node path:
/// expected O(log n).
///
/// # Safety
/// `c` is live.
#[inline]
pub(crate) unsafe fn first_fit(c: Chunk, size: Gran) -> Option<Gran> {
    // SAFETY: every node reached is an index node.
    unsafe {
        let mut t = root(c).read();
        if max_of(c, t) < size {
            return None;
        }
        loop {
            let l = c.get(t, Left);
            if max_of(c, l) >= size {
                t = l;
            } else if c.get(t, Size) >= size {
                return Some(t);
            } else {
                t = c.get(t, Right);
                debug_assert!(t != 0, "index maxima inconsistent in chunk {:p}", c.base());
            }
        }
    }
}

/// The free block with the greatest key `<= g`, if any (checked mode: is a pointer inside a
/// free block?).
///
/// # Safety
/// `c` is live.
pub(crate) unsafe fn floor(c: Chunk, g: Gran) -> Option<Gran> {
    // SAFETY: every node reached is an index node.
    unsafe {
        let mut t = root(c).read();
        let mut best = None;
        while t != 0 {
            if t <= g {
                best = Some(t);
                t = c.get(t, Right);
            } else {
                t = c.get(t, Left);
            }
        }
        best
    }
}

/// The largest free block of the chunk's index (its root's `Max`), 0 when empty.
///
/// # Safety
/// `c` is live.
#[inline]
pub(crate) unsafe fn largest(c: Chunk) -> Gran {
    // SAFETY: the root is 0 or a node.
    unsafe { max_of(c, root(c).read()) }
}

/// Calls `f(key, size)` for every node in key order, after checking the node's own
/// invariants. Returns the first violation as (granule, message).
///
/// # Safety
/// `c` is live.
pub(crate) unsafe fn walk(
    c: Chunk,
    f: &mut dyn FnMut(Gran, Gran) -> Result<(), (Gran, &'static str)>,
) -> Result<(), (Gran, &'static str)> {
    // SAFETY: live chunk; keys are bounded by the block area before they are followed.
    unsafe {
        let (first, frontier) = ((*c.h()).first, (*c.h()).frontier);
        walk_at(c, root(c).read(), first - 1, frontier, f)
    }
}

/// # Safety
/// `t` is 0 or a node of live chunk `c`.
unsafe fn walk_at(
    c: Chunk,
    t: Gran,
    lo: Gran,
    hi: Gran,
    f: &mut dyn FnMut(Gran, Gran) -> Result<(), (Gran, &'static str)>,
) -> Result<(), (Gran, &'static str)> {
    if t == 0 {
        return Ok(());
    }
    // SAFETY: t lies strictly between lo and hi, which start as the chunk's block area, and
    // its boundary bit is set, so it is a free block whose node we wrote; only then are its
    // fields read.
    unsafe {
        if t <= lo || t >= hi {
            return Err((
                t,
                "index keys out of address order or outside the block area",
            ));
        }
        if !c.bit(t) {
            return Err((t, "index holds a granule that is not a free block"));
        }
        let (l, r) = (c.get(t, Left), c.get(t, Right));
        for child in [l, r] {
            if child != 0 && above(child, t) {
                return Err((t, "index heap order broken (child above parent)"));
            }
        }
        walk_at(c, l, lo, t, f)?;
        f(t, c.get(t, Size))?;
        let want = c.get(t, Size).max(max_of(c, l)).max(max_of(c, r));
        if c.get(t, Max) != want {
            return Err((t, "index subtree maximum is wrong"));
        }
        walk_at(c, r, t, hi, f)
    }
}
