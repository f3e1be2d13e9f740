//! The address-ordered set of free blocks of one chunk: insert, remove, first_fit.
//!
//! A treap stored inside the free blocks themselves (the node is the block's first granule, so
//! the index costs no memory). Keys are granule numbers (addresses); the heap order is on a
//! hash of the block's **end** (key + size), which makes the shape that of a random binary
//! search tree whatever the allocation pattern: expected depth about `2 ln n`. Hashing the end
//! rather than the start means that the two most frequent changes, cutting a block from the
//! front of a free block and merging a freed block into the free block after it, keep the
//! node's priority: the node just moves to its new start ([`move_key`], one root-to-node pass,
//! no rotations). Each node carries the largest block size
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

/// Heap-order priority of node `t`: the hash of its block's end, mixed with the chunk's address
/// (which the OS randomises), so no fixed allocation pattern can line the nodes up into a
/// deep chain.
///
/// # Safety
/// `t` is a node of `c`'s index.
#[inline]
unsafe fn prio_of(c: Chunk, t: Gran) -> u32 {
    let seed = (c.base().addr().get() >> 12) as u32;
    // SAFETY: t is a node (contract).
    prio(t.wrapping_add(unsafe { c.get(t, Size) }) ^ seed)
}

/// Does node `a` sit above node `b` in the heap order? (Ties broken by key: a total order.)
///
/// # Safety
/// `a` and `b` are nodes of `c`'s index.
#[inline]
unsafe fn above(c: Chunk, a: Gran, b: Gran) -> bool {
    // SAFETY: both are nodes (contract).
    let (pa, pb) = unsafe { (prio_of(c, a), prio_of(c, b)) };
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
    // SAFETY: every Chunk the index sees is live.
    unsafe { c.root_link() }
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
        if above(c, a, b) {
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
        if t == 0 || above(c, g, t) {
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
/// 1. `c` is live;
/// 2. `g` is a free block of it, marked with `mark_free` (size and boundary bits written);
/// 3. `g` is not in the index.
pub(crate) unsafe fn insert(c: Chunk, g: Gran) {
    // SAFETY: the root slot holds the whole index; g belongs anywhere in it.
    unsafe { insert_at(c, root(c), g) }
}

/// Removes `g` from the subtree under `link`.
///
/// # Safety
/// 1. `c` is live and `link` points at a link slot of its index (the root link or a node's
///    child link);
/// 2. `g` is a node in the subtree under `link`.
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
/// 1. `c` is live;
/// 2. `g` is in its index.
pub(crate) unsafe fn remove(c: Chunk, g: Gran) {
    // SAFETY: (1) `c` is live (this function's item 1) and `root(c)` is its root link; (2) `g`
    // is in the index (item 2), which is exactly the subtree under the root link.
    unsafe { remove_at(c, root(c), g) }
}

/// Changes the size of indexed block `g` (same key). Its end, hence its priority, changes, so
/// it is taken out and put back: two passes, expected O(log n).
///
/// # Safety
/// 1. `c` is live;
/// 2. `g` is in its index;
/// 3. `g..g + size` is marked free (`mark_free`) and belongs to nobody else;
/// 4. it touches no other free block.
pub(crate) unsafe fn resize(c: Chunk, g: Gran, size: Gran) {
    // SAFETY: the span belongs to the heap; g is a node until removed, then re-inserted.
    unsafe {
        remove(c, g);
        c.set_size(g, size);
        insert(c, g);
    }
}

/// Moves indexed block `old` to start at `new` with `size` granules, keeping its end: the
/// block lost a piece at its front (`new > old`) or absorbed the span just before it
/// (`new < old`). Order and priority are unchanged, so the node is relinked in place and only
/// the maxima on its path are fixed: one pass, expected O(log n).
///
/// # Safety
/// 1. `c` is live and `old` is in its index;
/// 2. `new + size == old + size(old)` (the `Size` field of `old`'s node);
/// 3. `new..new+size` is free (marked with `mark_free`) and belongs to nobody else;
/// 4. no other free block starts in it or between it and `old`.
pub(crate) unsafe fn move_key(c: Chunk, old: Gran, new: Gran, size: Gran) {
    // SAFETY: `move_at`: `move_key`'s items 1-4 are this function's; `old` is in the index
    // (item 1), which is the subtree under the root link, so the descent ends at its node.
    unsafe { move_at(c, root(c), old, new, size) }
}

/// # Safety
/// As for [`move_key`]; `old` is in the subtree under `link`.
unsafe fn move_at(c: Chunk, link: NonNull<u32>, old: Gran, new: Gran, size: Gran) {
    // SAFETY: every node reached is an index node; the new node's granule is free memory of
    // the block (contract), written only after the old node's links are read.
    unsafe {
        let t = link.read();
        if t == old {
            let (l, r) = (c.get(old, Left), c.get(old, Right));
            c.put(new, Left, l);
            c.put(new, Right, r);
            c.set_size(new, size);
            fix(c, new);
            link.write(new);
            return;
        }
        let next = if old < t {
            c.field(t, Left)
        } else {
            c.field(t, Right)
        };
        move_at(c, next, old, new, size);
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

/// The lowest-addressed free block at or after granule `from` with at least `size` granules,
/// if any. Expected O(log n): a bounded search down the left spine of the keys `>= from`,
/// then one first-fit descent.
///
/// # Safety
/// `c` is live.
pub(crate) unsafe fn first_fit_from(c: Chunk, size: Gran, from: Gran) -> Option<Gran> {
    /// # Safety
    /// `t` is 0 or an index node of live chunk `c`.
    unsafe fn go(c: Chunk, t: Gran, size: Gran, from: Gran) -> Option<Gran> {
        // SAFETY: every node reached is an index node.
        unsafe {
            if t == 0 || max_of(c, t) < size {
                return None;
            }
            if t < from {
                return go(c, c.get(t, Right), size, from);
            }
            if let Some(x) = go(c, c.get(t, Left), size, from) {
                return Some(x);
            }
            if c.get(t, Size) >= size {
                return Some(t);
            }
            go(c, c.get(t, Right), size, from)
        }
    }
    // SAFETY: the root is 0 or an index node.
    unsafe { go(c, root(c).read(), size, from) }
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
        let (first, frontier) = (c.first(), c.frontier());
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
            if child != 0 && above(c, child, t) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Chunk, meta_granules};
    use std::boxed::Box;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Bytes of the test chunk: 4096 granules.
    const LEN: usize = 64 << 10;
    /// Granules between the starts of two blocks; blocks are at most `STRIDE - 1` granules
    /// long, so two blocks never touch (`mark_free` asserts on bits already set).
    const STRIDE: Gran = 8;

    #[repr(C, align(16))]
    struct Buf([u8; LEN]);

    /// A chunk over a heap buffer whose whole block area is below the frontier. The buffer is
    /// held as a raw pointer (not a `Box`, whose moves would invalidate the chunk's pointers
    /// under Stacked Borrows) and freed on drop.
    struct TestChunk {
        c: Chunk,
        buf: *mut Buf,
    }

    impl Drop for TestChunk {
        fn drop(&mut self) {
            // SAFETY: `buf` came from `Box::into_raw` and the chunk dies with us.
            drop(unsafe { Box::from_raw(self.buf) });
        }
    }

    impl TestChunk {
        fn new() -> TestChunk {
            let buf = Box::into_raw(Box::new(Buf([0x5A; LEN])));
            let base = NonNull::new(buf.cast::<u8>()).unwrap();
            // SAFETY: the buffer is ours for the TestChunk's life, 16-aligned, LEN bytes.
            let c = unsafe { Chunk::init(base, LEN, false, LEN, false) };
            // SAFETY: c is live; the whole block area becomes "blocks" for the test.
            unsafe { c.set_frontier(c.granules()) };
            TestChunk { c, buf }
        }

        fn first(&self) -> Gran {
            // SAFETY: live chunk.
            unsafe { self.c.first() }
        }

        /// Number of block slots (each `STRIDE` granules).
        fn slots(&self) -> u32 {
            // SAFETY: live chunk.
            let granules = unsafe { self.c.granules() };
            (granules - self.first()) / STRIDE
        }

        fn key(&self, slot: u32) -> Gran {
            self.first() + slot * STRIDE
        }

        fn insert(&self, g: Gran, s: Gran) {
            // SAFETY: g..g+s lies in the block area, is not free, and no block touches it.
            unsafe {
                self.c.mark_free(g, s);
                insert(self.c, g);
            }
        }

        fn remove(&self, g: Gran, s: Gran) {
            // SAFETY: g is an indexed free block of size s.
            unsafe {
                remove(self.c, g);
                self.c.unmark_free(g, s);
            }
        }

        fn resize(&self, g: Gran, old: Gran, new: Gran) {
            // SAFETY: g is an indexed free block of size old; g..g+new touches no other block.
            unsafe {
                self.c.unmark_free(g, old);
                self.c.mark_free(g, new);
                resize(self.c, g, new);
            }
        }

        fn first_fit(&self, s: Gran) -> Option<Gran> {
            // SAFETY: live chunk.
            unsafe { first_fit(self.c, s) }
        }

        fn floor(&self, g: Gran) -> Option<Gran> {
            // SAFETY: live chunk.
            unsafe { floor(self.c, g) }
        }

        fn largest(&self) -> Gran {
            // SAFETY: live chunk.
            unsafe { largest(self.c) }
        }

        /// The index in key order, after `walk` checked order, heap order and maxima.
        fn contents(&self) -> Vec<(Gran, Gran)> {
            let mut out = Vec::new();
            // SAFETY: live chunk.
            let r = unsafe {
                walk(self.c, &mut |g, s| {
                    out.push((g, s));
                    Ok(())
                })
            };
            if let Err((g, what)) = r {
                panic!("index walk failed at granule {g}: {what}");
            }
            out
        }

        /// Depth of the treap (0 when empty).
        fn depth(&self) -> usize {
            fn d(c: Chunk, t: Gran) -> usize {
                if t == 0 {
                    return 0;
                }
                // SAFETY: t is a node of the index.
                let (l, r) = unsafe { (c.get(t, Left), c.get(t, Right)) };
                1 + d(c, l).max(d(c, r))
            }
            // SAFETY: live chunk.
            d(self.c, unsafe { self.c.root() })
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u32) -> u32 {
            (self.next() % n as u64) as u32
        }
    }

    fn assert_same(t: &TestChunk, model: &BTreeMap<Gran, Gran>) {
        let got = t.contents();
        let want: Vec<(Gran, Gran)> = model.iter().map(|(&g, &s)| (g, s)).collect();
        assert_eq!(got, want, "index disagrees with the model");
        assert_eq!(t.largest(), model.values().copied().max().unwrap_or(0));
    }

    #[test]
    fn random_ops_match_btreemap() {
        let ops = if cfg!(miri) { 300 } else { 20_000 };
        let t = TestChunk::new();
        let slots = t.slots();
        assert!(slots > 100);
        let mut model: BTreeMap<Gran, Gran> = BTreeMap::new();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for step in 0..ops {
            let g = t.key(rng.below(slots));
            let size = 1 + rng.below(STRIDE - 1);
            match rng.below(5) {
                0 | 1 => match model.get(&g).copied() {
                    None => {
                        t.insert(g, size);
                        model.insert(g, size);
                    }
                    Some(old) => {
                        t.remove(g, old);
                        model.remove(&g);
                    }
                },
                2 => {
                    if let Some(old) = model.get(&g).copied() {
                        t.resize(g, old, size);
                        model.insert(g, size);
                    }
                }
                3 => {
                    let want = 1 + rng.below(STRIDE);
                    let expect = model.iter().find(|&(_, &s)| s >= want).map(|(&k, _)| k);
                    assert_eq!(
                        t.first_fit(want),
                        expect,
                        "first_fit({want}) at step {step}"
                    );
                }
                _ => {
                    let probe = t.first() + rng.below(slots * STRIDE);
                    let expect = model.range(..=probe).next_back().map(|(&k, _)| k);
                    assert_eq!(t.floor(probe), expect, "floor({probe}) at step {step}");
                }
            }
            if step % 32 == 0 {
                assert_same(&t, &model);
            }
        }
        assert_same(&t, &model);
        // Empty it again in random order.
        while !model.is_empty() {
            let k = *model
                .keys()
                .nth(rng.below(model.len() as u32) as usize)
                .unwrap();
            let s = model.remove(&k).unwrap();
            t.remove(k, s);
        }
        assert_same(&t, &model);
        assert_eq!(t.first_fit(1), None);
        assert_eq!(t.floor(u32::MAX), None);
    }

    #[test]
    fn first_fit_prefers_lowest_address() {
        let t = TestChunk::new();
        // sizes by slot: 2, 5, 3, 7, 5
        let sizes = [2, 5, 3, 7, 5];
        let keys: Vec<Gran> = (0..sizes.len() as u32).map(|i| t.key(i * 3)).collect();
        // insert out of address order
        for i in [3, 0, 4, 1, 2] {
            t.insert(keys[i], sizes[i]);
        }
        assert_eq!(t.first_fit(1), Some(keys[0]));
        assert_eq!(t.first_fit(3), Some(keys[1]));
        assert_eq!(t.first_fit(5), Some(keys[1]));
        assert_eq!(t.first_fit(6), Some(keys[3]));
        assert_eq!(t.first_fit(7), Some(keys[3]));
        assert_eq!(t.first_fit(8), None);
        assert_eq!(t.largest(), 7);
        // shrinking the largest moves the answer for 6 nowhere, and for 5 stays lowest
        t.resize(keys[3], 7, 4);
        assert_eq!(t.first_fit(6), None);
        assert_eq!(t.largest(), 5);
        t.remove(keys[1], 5);
        assert_eq!(t.first_fit(5), Some(keys[4]));
        assert_eq!(t.floor(keys[1]), Some(keys[0]));
        assert_eq!(t.floor(keys[0] - 1), None);
        assert_eq!(t.floor(keys[4] + 100), Some(keys[4]));
        assert_eq!(t.contents().len(), 4);
    }

    #[test]
    fn ascending_inserts_stay_shallow() {
        let t = TestChunk::new();
        let n = if cfg!(miri) { 64 } else { t.slots() };
        for i in 0..n {
            t.insert(t.key(i), 1 + i % (STRIDE - 1));
        }
        assert_eq!(t.contents().len(), n as usize);
        // A random binary search tree of n keys has expected depth about 2 ln n (≈ 12 for 507
        // keys); an unbalanced one built from ascending keys would have depth n.
        let bound = 4 * (usize::BITS - (n as usize).leading_zeros()) as usize;
        let depth = t.depth();
        assert!(
            depth <= bound,
            "treap depth {depth} for {n} keys (bound {bound})"
        );
        for i in (0..n).rev() {
            t.remove(t.key(i), 1 + i % (STRIDE - 1));
        }
        assert_eq!(t.depth(), 0);
        assert!(t.contents().is_empty());
    }

    #[test]
    fn walk_detects_broken_max() {
        let t = TestChunk::new();
        let (a, b) = (t.key(1), t.key(5));
        t.insert(a, 3);
        t.insert(b, 6);
        assert_eq!(t.contents(), [(a, 3), (b, 6)]);
        // Corrupt the root's maximum: walk must report it.
        // SAFETY: the root is an index node.
        unsafe {
            let root = t.c.root();
            let m = t.c.get(root, Max);
            t.c.put(root, Max, m + 1);
        }
        // SAFETY: live chunk.
        let r = unsafe { walk(t.c, &mut |_, _| Ok(())) };
        assert_eq!(r.map_err(|e| e.1), Err("index subtree maximum is wrong"));
        assert_eq!(meta_granules(4096, false) as Gran, t.first());
    }
}
