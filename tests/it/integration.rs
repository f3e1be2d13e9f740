//! Integration tests through the public API: collections on a heap (allocator-api2 and, with
//! the `nightly` feature, std's), and regression tests for classic allocator bugs: limits and
//! tiny heaps, sizes near `isize::MAX`, copies on resize, alignment, zero-size layouts,
//! zeroed reuse, OS mapping balance, growth in place and detected misuse.
//!
//! Tests run in parallel threads of one process, and [`os_counters`] is process-wide: every
//! test here that maps memory holds [`shared`] and the tests that compare the counters hold
//! [`exclusive`], and since the other modules of this binary map memory too, those run in a
//! child process of their own (`isoheap_testkit::alone`).

use isoheap::{GRANULE, Heap, HeapError, MAX_ALIGN, os_counters};
use isoheap_testkit::Rng;
use isoheap_testkit::bytes::{assert_filled, byte, fill, layout};

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static OS: RwLock<()> = RwLock::new(());

/// Held by every test that maps or unmaps memory.
fn shared() -> RwLockReadGuard<'static, ()> {
    OS.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held by the test that compares process-wide mapping counters.
fn exclusive() -> RwLockWriteGuard<'static, ()> {
    OS.write().unwrap_or_else(PoisonError::into_inner)
}

fn check(heap: &Heap) {
    if let Err(e) = heap.check() {
        panic!("{e}");
    }
    let s = heap.stats();
    assert_eq!(s.in_use + s.free + s.metadata, s.mapped, "{s:?}");
}

/// Bytes each block carries after the caller's: the tag in checked mode.
fn tag(heap: &Heap) -> usize {
    if heap.is_checked() { 2 } else { 0 }
}

fn alloc(heap: &Heap, size: usize, align: usize) -> NonNull<u8> {
    let b = heap.allocate(layout(size, align)).expect("allocation");
    assert!(b.len() >= size);
    assert_eq!(b.cast::<u8>().addr().get() % align, 0);
    b.cast()
}

/// # Safety
/// `p..p+len` is readable.
unsafe fn all_zero(p: NonNull<u8>, len: usize) -> bool {
    // SAFETY: forwarded contract.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
        .iter()
        .all(|&b| b == 0)
}

/// Runs `f`, which must panic, and returns the panic message.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    if let Some(s) = err.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = err.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        panic!("panic payload is not a string")
    }
}

// ---- collections on a heap (stable front end) ----

#[test]
fn allocator_api2_vec_heavy_mutation() {
    let _os = shared();
    let heap = Heap::new();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut vecs: Vec<(allocator_api2::vec::Vec<u64, &Heap>, Vec<u64>)> = Vec::new();
    for _ in 0..8 {
        vecs.push((allocator_api2::vec::Vec::new_in(&heap), Vec::new()));
    }
    for step in 0..20_000 {
        let (v, m) = &mut vecs[rng.below(8)];
        let x = rng.next();
        match rng.below(10) {
            0..=3 => {
                v.push(x);
                m.push(x);
            }
            4 => {
                assert_eq!(v.pop(), m.pop());
            }
            5 if !m.is_empty() => {
                let i = rng.below(m.len() + 1);
                v.insert(i, x);
                m.insert(i, x);
            }
            6 if !m.is_empty() => {
                let i = rng.below(m.len());
                assert_eq!(v.remove(i), m.remove(i));
            }
            7 => {
                let n = rng.below(300);
                v.extend((0..n as u64).map(|k| k ^ x));
                m.extend((0..n as u64).map(|k| k ^ x));
            }
            8 => {
                let n = rng.below(m.len() + 1);
                v.truncate(n);
                m.truncate(n);
                if rng.below(2) == 0 {
                    v.shrink_to_fit();
                }
            }
            _ => {
                let extra = rng.below(5000);
                v.reserve_exact(extra);
                assert!(v.capacity() >= v.len() + extra);
            }
        }
        if step % 1000 == 0 {
            check(&heap);
            for (v, m) in &vecs {
                assert_eq!(&v[..], &m[..]);
            }
        }
    }
    for (v, m) in &vecs {
        assert_eq!(&v[..], &m[..]);
    }
    check(&heap);
    drop(vecs);
    check(&heap);
    let s = heap.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.free_blocks, s.chunks, "not merged back: {s:?}");
}

#[test]
fn hashbrown_heavy_mutation() {
    let _os = shared();
    let heap = Heap::new();
    let mut rng = Rng(0xDEAD_BEEF_F00D_0001);
    type Val<'h> = allocator_api2::vec::Vec<u8, &'h Heap>;
    let mut map: hashbrown::HashMap<u64, Val<'_>, hashbrown::DefaultHashBuilder, &Heap> =
        hashbrown::HashMap::new_in(&heap);
    let mut model: std::collections::HashMap<u64, Vec<u8>> = std::collections::HashMap::new();
    for step in 0..30_000 {
        let k = rng.below(4000) as u64;
        match rng.below(4) {
            0 | 1 => {
                let max = if rng.below(10) == 0 { 2000 } else { 40 };
                let len = rng.below(max);
                let tag = rng.next() as u8;
                let mut v = allocator_api2::vec::Vec::with_capacity_in(len, &heap);
                v.extend((0..len).map(|i| byte(i, tag)));
                model.insert(k, v.to_vec());
                map.insert(k, v);
            }
            2 => {
                assert_eq!(map.remove(&k).map(|v| v.to_vec()), model.remove(&k));
            }
            _ => {
                if let Some(v) = map.get_mut(&k) {
                    let b = rng.next() as u8;
                    v.push(b);
                    model.get_mut(&k).unwrap().push(b);
                }
            }
        }
        if step % 5000 == 0 {
            check(&heap);
            map.shrink_to_fit();
        }
    }
    assert_eq!(map.len(), model.len());
    for (k, v) in &model {
        assert_eq!(&map[k][..], &v[..], "value of key {k}");
    }
    check(&heap);
    drop(map);
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
}

// ---- std collections (nightly front end) ----

#[cfg(feature = "nightly")]
#[test]
fn std_collections_and_hashbrown_share_one_heap() {
    use std::collections::{BTreeMap, VecDeque};
    let _os = shared();
    let heap = Heap::new();
    let mut rng = Rng(0x0BAD_CAFE_1234_5678);
    let mut vec: Vec<u32, &Heap> = Vec::new_in(&heap);
    let mut deque: VecDeque<u64, &Heap> = VecDeque::new_in(&heap);
    let mut btree: BTreeMap<u32, Box<[u8; 24], &Heap>, &Heap> = BTreeMap::new_in(&heap);
    let mut hash = hashbrown::HashMap::new_in(&heap);
    let mut boxes: Vec<Box<u128, &Heap>> = Vec::new();
    let (mut m_vec, mut m_deque) = (Vec::new(), std::collections::VecDeque::new());
    let mut m_btree = std::collections::BTreeMap::new();
    let mut m_hash = std::collections::HashMap::new();
    let mut m_boxes = Vec::new();
    for step in 0..40_000u32 {
        let x = rng.next();
        match rng.below(9) {
            0 => {
                vec.push(x as u32);
                m_vec.push(x as u32);
            }
            1 => {
                let n = rng.below(vec.len() + 1);
                vec.truncate(n);
                m_vec.truncate(n);
            }
            2 => {
                if x.is_multiple_of(2) {
                    deque.push_back(x);
                    m_deque.push_back(x);
                } else {
                    deque.push_front(x);
                    m_deque.push_front(x);
                }
            }
            3 => {
                assert_eq!(deque.pop_front(), m_deque.pop_front());
            }
            4 => {
                let k = (x % 3000) as u32;
                let v = [x as u8; 24];
                btree.insert(k, Box::new_in(v, &heap));
                m_btree.insert(k, v);
            }
            5 => {
                let k = (x % 3000) as u32;
                assert_eq!(btree.remove(&k).map(|b| *b), m_btree.remove(&k));
            }
            6 => {
                let k = x % 5000;
                hash.insert(k, step);
                m_hash.insert(k, step);
            }
            7 => {
                let k = x % 5000;
                assert_eq!(hash.remove(&k), m_hash.remove(&k));
            }
            _ => {
                if boxes.len() < 500 && !x.is_multiple_of(3) {
                    boxes.push(Box::new_in(x as u128 * 3, &heap));
                    m_boxes.push(x as u128 * 3);
                } else if !boxes.is_empty() {
                    let i = rng.below(boxes.len());
                    assert_eq!(*boxes.swap_remove(i), m_boxes.swap_remove(i));
                }
            }
        }
        if step % 4000 == 0 {
            check(&heap);
        }
    }
    assert_eq!(&vec[..], &m_vec[..]);
    assert!(deque.iter().eq(m_deque.iter()));
    assert!(
        btree
            .iter()
            .map(|(k, v)| (*k, **v))
            .eq(m_btree.iter().map(|(k, v)| (*k, *v)))
    );
    assert_eq!(hash.len(), m_hash.len());
    assert!(m_hash.iter().all(|(k, v)| hash.get(k) == Some(v)));
    assert!(boxes.iter().map(|b| **b).eq(m_boxes.iter().copied()));
    check(&heap);
    assert!(heap.stats().in_use > 0);
    drop((vec, deque, btree, hash, boxes));
    check(&heap);
    let s = heap.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.free_blocks, s.chunks);
}

#[cfg(feature = "nightly")]
#[test]
fn std_vec_grows_in_place_and_box_slices() {
    let _os = shared();
    let heap = Heap::with_capacity(1 << 20).unwrap();
    let mut v: Vec<u8, &Heap> = Vec::with_capacity_in(16, &heap);
    let p = v.as_ptr();
    for i in 0..100_000u32 {
        v.push(i as u8);
    }
    assert_eq!(v.as_ptr(), p, "a Vec at the frontier grows without moving");
    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
    let b: Box<[u8], &Heap> = v.into_boxed_slice();
    assert_eq!(b.len(), 100_000);
    assert_eq!(
        heap.stats().in_use,
        (100_000 + tag(&heap)).next_multiple_of(GRANULE)
    );
    check(&heap);
    drop(b);
    assert_eq!(heap.stats().in_use, 0);
}

// ---- heaps too small or badly sized ----

#[test]
fn heap_smaller_than_one_block_is_refused() {
    let _os = shared();
    let minimum = match Heap::builder().limit(1).build() {
        Err(HeapError::TooSmall {
            requested: 1,
            minimum,
        }) => minimum,
        other => panic!("limit(1): {other:?}"),
    };
    assert!(minimum > GRANULE);
    assert!(matches!(
        Heap::builder().limit(minimum - 1).build(),
        Err(HeapError::TooSmall { .. })
    ));
    assert!(matches!(Heap::with_capacity(0), Err(HeapError::ZeroSize)));
    assert!(matches!(
        Heap::builder().limit(0).build(),
        Err(HeapError::ZeroSize)
    ));
    assert!(matches!(
        Heap::builder().growth(0).build(),
        Err(HeapError::ZeroSize)
    ));
    assert!(matches!(
        Heap::with_capacity(usize::MAX),
        Err(HeapError::TooLarge { .. })
    ));
    assert!(matches!(
        Heap::with_capacity(isize::MAX as usize),
        Err(HeapError::TooLarge { .. })
    ));
    assert!(matches!(
        Heap::builder().initial(2 << 20).limit(1 << 20).build(),
        Err(HeapError::LimitBelowInitial { .. })
    ));
    // The smallest heap there is holds one block.
    let heap = Heap::builder().limit(minimum).build().unwrap();
    let p = alloc(&heap, GRANULE, 1);
    assert!(heap.stats().mapped <= minimum);
    check(&heap);
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(p, layout(GRANULE, 1)) };
    check(&heap);
    assert!(!HeapError::ZeroSize.to_string().is_empty());
}

#[test]
fn with_capacity_holds_its_size_in_one_chunk() {
    let _os = shared();
    // Sizes just under a page boundary once metadata is added, from 1 MB up, where a chunk sized
    // without counting the bitmap's own growth came up short.
    for size in [
        GRANULE,
        4000,
        65_536,
        1 << 20,
        1_024_096,
        1_028_160,
        1_040_352,
        3_000_000,
        16 << 20,
    ] {
        let heap = Heap::with_capacity(size).unwrap();
        assert_eq!(heap.stats().chunks, 1);
        assert!(
            heap.stats().free >= size,
            "with_capacity({size}): {:?}",
            heap.stats()
        );
        let p = heap.allocate(layout(size, 1));
        assert!(
            p.is_ok(),
            "with_capacity({size}) cannot allocate {size} bytes"
        );
        assert_eq!(
            heap.stats().chunks,
            1,
            "allocating {size} bytes mapped again"
        );
        check(&heap);
    }
    // A fresh growable heap must serve the same sizes from the chunk it maps for them.
    for size in [1_024_096, 1_028_160, 1_040_352] {
        let heap = Heap::new();
        assert!(heap.allocate(layout(size, 16)).is_ok(), "{size} bytes");
        assert_eq!(heap.stats().chunks, 1);
        check(&heap);
    }
}

#[test]
fn initial_equal_to_limit_maps_once() {
    let _os = shared();
    let heap = Heap::builder()
        .initial(1 << 20)
        .limit(1 << 20)
        .build()
        .unwrap();
    let s = heap.stats();
    assert!(s.mapped <= 1 << 20);
    assert_eq!(s.chunks, 1);
    let mut blocks = Vec::new();
    while let Ok(b) = heap.allocate(layout(4096 - tag(&heap), 16)) {
        blocks.push(b.cast::<u8>());
    }
    assert_eq!(
        heap.stats().chunks,
        1,
        "a heap whose limit is its initial size never maps"
    );
    // 256 per MiB less the metadata (2 bits per granule more in checked mode).
    assert!(blocks.len() >= 245, "{}", blocks.len());
    check(&heap);
    for p in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(p, layout(4096 - tag(&heap), 16)) };
    }
    check(&heap);
}

// ---- sizes near the limits of the address space ----

#[test]
fn huge_sizes_fail_without_panicking() {
    let _os = shared();
    let heap = Heap::new();
    let keep = alloc(&heap, 100, 8);
    // SAFETY: a live 100-byte block.
    unsafe { fill(keep, 100, 7) };
    let before = heap.stats();
    let huge = [
        (isize::MAX as usize - 7, 8),
        (isize::MAX as usize - 15, 16),
        (isize::MAX as usize - 4095, 4096),
        (isize::MAX as usize - (MAX_ALIGN - 1), MAX_ALIGN),
        (isize::MAX as usize / 2, 1),
        (1 << 40, 1),
        ((u32::MAX as usize + 1) << 4, 16),
        (u32::MAX as usize * GRANULE, 16),
        ((u32::MAX as usize - 10) * GRANULE, 4096),
        (u32::MAX as usize * GRANULE - 1, 1 << 20),
    ];
    for (size, align) in huge {
        let l = layout(size, align);
        assert!(heap.allocate(l).is_err(), "allocate({size}, {align})");
        assert!(
            heap.allocate_zeroed(l).is_err(),
            "allocate_zeroed({size}, {align})"
        );
        // SAFETY: keep is a live 100-byte block with alignment 8.
        unsafe {
            assert!(
                heap.grow(keep, layout(100, 8), l).is_err(),
                "grow to {size}"
            );
            assert!(heap.grow_zeroed(keep, layout(100, 8), l).is_err());
        }
        check(&heap);
        assert_eq!(heap.stats(), before, "a failed request changed the heap");
    }
    // SAFETY: still live and intact.
    unsafe { assert_filled(keep, 100, 7, "block") };
    // The heap is still fully usable.
    let p = alloc(&heap, 5000, 64);
    check(&heap);
    // SAFETY: live blocks with these layouts.
    unsafe {
        heap.deallocate(p, layout(5000, 64));
        heap.deallocate(keep, layout(100, 8));
    }
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn huge_request_on_a_limited_heap_fails_cleanly() {
    let _os = shared();
    let heap = Heap::builder().limit(1 << 20).build().unwrap();
    assert!(heap.allocate(layout(16 << 30, 16)).is_err());
    assert!(heap.allocate(layout(2 << 20, 16)).is_err());
    assert_eq!(
        heap.stats().mapped,
        0,
        "nothing mapped for requests over the limit"
    );
    let p = alloc(&heap, 512 << 10, 16);
    check(&heap);
    // SAFETY: live block with this layout.
    unsafe { heap.deallocate(p, layout(512 << 10, 16)) };
    check(&heap);
}

// ---- copies on resize ----

#[test]
fn grow_that_moves_copies_exactly_the_old_bytes() {
    let _os = shared();
    // One chunk holds every block, so the guard is always right behind `a` (with chunks of
    // their own, e.g. a larger mapping from the process cache, `a` could grow in place).
    let heap = Heap::with_capacity(1 << 20).unwrap();
    for old in (1..=64).chain([100, 255, 1000, 4095, 4096, 65_537]) {
        let tag = old as u8;
        let a = alloc(&heap, old, 1);
        let guard = alloc(&heap, 16, 1);
        // SAFETY: live blocks of these sizes.
        unsafe {
            fill(a, old, tag);
            fill(guard, 16, 0x55);
            let new = old * 3 + 100;
            let b = heap.grow(a, layout(old, 1), layout(new, 1)).unwrap();
            assert_ne!(b.cast::<u8>(), a, "the guard block forces a move");
            assert!(b.len() >= new);
            assert_filled(b.cast(), old, tag, "block");
            assert_filled(guard, 16, 0x55, "block");
            check(&heap);
            heap.deallocate(b.cast(), layout(new, 1));
            heap.deallocate(guard, layout(16, 1));
        }
        check(&heap);
        assert_eq!(heap.stats().in_use, 0);
    }
}

#[test]
fn grow_into_a_lower_hole_and_grow_zeroed_when_moving() {
    let _os = shared();
    let heap = Heap::with_capacity(1 << 20).unwrap();
    let hole = alloc(&heap, 20_000, 16);
    let lead = alloc(&heap, 16, 16);
    let a = alloc(&heap, 3000, 16);
    let guard = alloc(&heap, 16, 16);
    // SAFETY: live blocks; `hole` is dirtied before it is freed.
    unsafe {
        fill(hole, 20_000, 1);
        heap.deallocate(hole, layout(20_000, 16));
        fill(a, 3000, 2);
        let b = heap
            .grow_zeroed(a, layout(3000, 16), layout(15_000, 16))
            .unwrap();
        assert_eq!(b.cast::<u8>(), hole, "first fit: the lower hole");
        assert_filled(b.cast(), 3000, 2, "block");
        assert!(all_zero(b.cast::<u8>().add(3000), b.len() - 3000));
        check(&heap);
        for (p, size) in [(b.cast(), 15_000), (lead, 16), (guard, 16)] {
            heap.deallocate(p, layout(size, 16));
        }
    }
    check(&heap);
}

#[test]
fn shrink_then_grow_keeps_the_prefix() {
    let _os = shared();
    let heap = Heap::new();
    let a = alloc(&heap, 1000, 8);
    let guard = alloc(&heap, 16, 8);
    // SAFETY: live blocks with the layouts used.
    unsafe {
        fill(a, 1000, 3);
        let s = heap.shrink(a, layout(1000, 8), layout(100, 8)).unwrap();
        assert_eq!(s.cast::<u8>(), a, "shrink stays in place");
        assert_filled(a, 100, 3, "block");
        check(&heap);
        let g = heap.grow(a, layout(100, 8), layout(1000, 8)).unwrap();
        assert_eq!(g.cast::<u8>(), a, "the freed tail is taken back in place");
        assert_filled(a, 100, 3, "block");
        check(&heap);
        heap.deallocate(a, layout(1000, 8));
        heap.deallocate(guard, layout(16, 8));
    }
    check(&heap);
}

/// A free block just before a block that must move: an allocator that freed first and copied
/// after would copy between overlapping ranges.
#[test]
fn move_next_to_a_free_predecessor_keeps_data() {
    let _os = shared();
    let heap = Heap::new();
    let p = alloc(&heap, 256, 16);
    let a = alloc(&heap, 256, 16);
    let guard = alloc(&heap, 16, 16);
    // SAFETY: live blocks with the layouts used.
    unsafe {
        fill(a, 256, 4);
        heap.deallocate(p, layout(256, 16));
        let b = heap.grow(a, layout(256, 16), layout(400, 16)).unwrap();
        assert_filled(b.cast(), 256, 4, "block");
        check(&heap);
        // Shrinking to an alignment the block lacks moves it too.
        let b = b.cast::<u8>();
        fill(b, 400, 5);
        let align = if b.addr().get().is_multiple_of(4096) {
            8192
        } else {
            4096
        };
        let c = heap.shrink(b, layout(400, 16), layout(50, align)).unwrap();
        assert_eq!(c.cast::<u8>().addr().get() % align, 0);
        assert_filled(c.cast(), 50, 5, "block");
        check(&heap);
        heap.deallocate(c.cast(), layout(50, align));
        heap.deallocate(guard, layout(16, 16));
    }
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
}

// ---- alignment ----

#[test]
fn alignment_larger_than_the_block() {
    let _os = shared();
    let heap = Heap::new();
    let mut live = Vec::new();
    for align in [32, 256, 4096, 64 << 10, 1 << 20, MAX_ALIGN] {
        for size in [1, 8, 16, 17] {
            let p = alloc(&heap, size, align);
            // SAFETY: a live block of `size` bytes.
            unsafe { fill(p, size, align.trailing_zeros() as u8) };
            live.push((p, size, align));
            check(&heap);
        }
    }
    for &(p, size, align) in &live {
        // SAFETY: still live.
        unsafe { assert_filled(p, size, align.trailing_zeros() as u8, "block") };
    }
    let before = heap.stats();
    assert!(heap.allocate(layout(8, MAX_ALIGN * 2)).is_err());
    assert!(heap.allocate_zeroed(layout(8, MAX_ALIGN * 2)).is_err());
    assert_eq!(heap.stats(), before);
    // Zero-size requests need no memory, so any alignment is fine.
    let z = heap.allocate(layout(0, MAX_ALIGN * 2)).unwrap();
    assert_eq!(z.cast::<u8>().addr().get() % (MAX_ALIGN * 2), 0);
    for (p, size, align) in live {
        // SAFETY: allocated with this layout.
        unsafe { heap.deallocate(p, layout(size, align)) };
        check(&heap);
    }
    let s = heap.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.free_blocks, s.chunks);
}

// ---- zero-size layouts ----

#[test]
fn zero_size_layouts_use_no_memory() {
    let _os = shared();
    let heap = Heap::new();
    let keep = alloc(&heap, 48, 16);
    let before = heap.stats();
    for align in [1, 2, 8, 16, 64, 4096, 1 << 20] {
        for b in [
            heap.allocate(layout(0, align)).unwrap(),
            heap.allocate_zeroed(layout(0, align)).unwrap(),
        ] {
            assert_eq!(b.len(), 0);
            assert_eq!(
                b.cast::<u8>().addr().get() % align,
                0,
                "dangling but aligned"
            );
            // SAFETY: a zero-size block of this heap.
            unsafe { heap.deallocate(b.cast(), layout(0, align)) };
        }
        assert_eq!(heap.stats(), before, "zero-size traffic changed the heap");
    }
    // SAFETY: zero-size blocks grow into real ones; real ones shrink to zero-size ones.
    unsafe {
        let z = heap.allocate(layout(0, 32)).unwrap().cast::<u8>();
        let g = heap.grow_zeroed(z, layout(0, 32), layout(100, 32)).unwrap();
        assert_eq!(g.cast::<u8>().addr().get() % 32, 0);
        assert!(all_zero(g.cast(), 100));
        let s = heap
            .shrink(g.cast(), layout(100, 32), layout(0, 32))
            .unwrap();
        assert_eq!(s.len(), 0);
        assert_eq!(
            heap.stats().in_use,
            before.in_use,
            "shrinking to zero frees the block"
        );
        heap.deallocate(s.cast(), layout(0, 32));
        heap.deallocate(keep, layout(48, 16));
    }
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
    let empty = Heap::new();
    let _ = empty.allocate(layout(0, 8)).unwrap();
    assert_eq!(empty.stats().mapped, 0, "zero-size allocations map nothing");
}

// ---- zeroed memory ----

/// In strict mode (exact first fit) and in the default mode with its quick lists on (a heap
/// maps their table after its first 32 small frees, so the test frees 40 first): both reuse the
/// dirty block exactly. (Without the lists, the default mode's size-class lists would take the
/// frontier for a block of the freed block's exact size.)
#[test]
fn allocate_zeroed_on_reused_dirty_memory() {
    let _os = shared();
    for strict in [true, false] {
        let heap = Heap::builder().quick_reuse(!strict).build().unwrap();
        if !strict {
            for _ in 0..40 {
                let p = alloc(&heap, 16, 16);
                // SAFETY: a live block with its layout.
                unsafe { heap.deallocate(p, layout(16, 16)) };
            }
        }
        allocate_zeroed_on_reused_dirty_memory_in(&heap);
    }
}

fn allocate_zeroed_on_reused_dirty_memory_in(heap: &Heap) {
    // SAFETY: every block is used within its layout.
    unsafe {
        // Reuse of a free block below the frontier.
        let a = alloc(heap, 1000, 16);
        let guard = alloc(heap, 16, 16);
        a.as_ptr().write_bytes(0xEE, 1000);
        heap.deallocate(a, layout(1000, 16));
        let z = heap.allocate_zeroed(layout(1000, 16)).unwrap();
        assert_eq!(z.cast::<u8>(), a, "first fit reuses the dirty block");
        assert!(all_zero(z.cast(), z.len()));
        // Reuse of memory that went back to the frontier.
        let top = alloc(heap, 5000, 16);
        top.as_ptr().write_bytes(0xDD, 5000);
        heap.deallocate(top, layout(5000, 16));
        let z2 = heap.allocate_zeroed(layout(7000, 16)).unwrap();
        assert_eq!(z2.cast::<u8>(), top);
        assert!(all_zero(z2.cast(), z2.len()));
        // grow_zeroed in place over dirty memory.
        let small = heap
            .shrink(z2.cast(), layout(7000, 16), layout(10, 16))
            .unwrap();
        small.cast::<u8>().write_bytes(0xCC, 10);
        let grown = heap
            .grow_zeroed(small.cast(), layout(10, 16), layout(6000, 16))
            .unwrap();
        assert_eq!(grown.cast::<u8>(), top, "grew in place");
        assert_filled_with(grown.cast(), 10, 0xCC);
        assert!(all_zero(grown.cast::<u8>().add(10), grown.len() - 10));
        check(heap);
        heap.deallocate(grown.cast(), layout(6000, 16));
        heap.deallocate(z.cast(), layout(1000, 16));
        heap.deallocate(guard, layout(16, 16));
    }
    check(heap);
}

/// # Safety
/// `p..p+len` is readable.
unsafe fn assert_filled_with(p: NonNull<u8>, len: usize, v: u8) {
    // SAFETY: forwarded contract.
    let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
    assert!(s.iter().all(|&b| b == v));
}

// ---- limits ----

#[test]
fn limit_reached_then_usable_after_freeing() {
    let _os = shared();
    let limit = 512 << 10;
    let heap = Heap::builder().limit(limit).build().unwrap();
    let l = layout(10_000, 16);
    let mut blocks = Vec::new();
    loop {
        match heap.allocate(l) {
            Ok(b) => blocks.push(b.cast::<u8>()),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
        assert!(blocks.len() < 1000, "the limit never stopped allocation");
    }
    let full = heap.stats();
    assert!(full.mapped <= limit, "{full:?}");
    assert!(blocks.len() >= 40, "only {} blocks fit", blocks.len());
    check(&heap);
    // Failing again changes nothing.
    assert!(heap.allocate(l).is_err());
    assert_eq!(heap.stats(), full);
    // Free every other block, then all: the space comes back.
    for p in blocks.iter().step_by(2) {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(*p, l) };
    }
    check(&heap);
    let again = alloc(&heap, 10_000, 16);
    // SAFETY: freeing everything still live.
    unsafe {
        heap.deallocate(again, l);
        for p in blocks.iter().skip(1).step_by(2) {
            heap.deallocate(*p, l);
        }
    }
    check(&heap);
    let s = heap.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.free_blocks, s.chunks);
    assert_eq!(
        s.mapped, full.mapped,
        "nothing is unmapped before the heap is dropped"
    );
    let n = (0..).map_while(|_| heap.allocate(l).ok()).count();
    assert_eq!(n, blocks.len(), "as many blocks fit again");
    check(&heap);
}

// ---- mapping balance ----

#[test]
fn os_maps_and_unmaps_balance() {
    // Alone in a process: the other tests of this binary map and unmap meanwhile.
    if !isoheap_testkit::alone(module_path!(), "os_maps_and_unmaps_balance") {
        return;
    }
    let _os = exclusive();
    // A fresh process maps a table of the process-wide page map the first time a chunk lands
    // in its address range, and keeps it: map one chunk first, as the tests that ran before
    // this one in a shared process did.
    drop(Heap::with_capacity(300 << 10).unwrap());
    // The same for a chunk from the provider's segments.
    let warm = Heap::new();
    let _ = alloc(&warm, 100, 16);
    drop(warm);
    // Dropped heaps leave up to a few mappings in a process cache, and the chunk provider
    // keeps a spare segment; start and end empty.
    isoheap::release_cached();
    let before = os_counters();
    assert!(before.maps >= before.unmaps);
    {
        let lazy = Heap::new();
        assert_eq!(os_counters(), before, "Heap::new maps nothing");
        let eager = Heap::with_capacity(300 << 10).unwrap();
        assert_eq!(os_counters().maps, before.maps + 1);
        assert_eq!(
            os_counters().mapped_bytes,
            before.mapped_bytes + eager.stats().mapped
        );
        // Several chunks, some blocks left allocated when the heap is dropped.
        for i in 0..200 {
            let p = alloc(&lazy, 10_000 + i, 16);
            if i % 3 == 0 {
                // SAFETY: just allocated with this layout.
                unsafe { lazy.deallocate(p, layout(10_000 + i, 16)) };
            }
        }
        let _ = alloc(&eager, 100_000, 16);
        let chunks = lazy.stats().chunks + eager.stats().chunks;
        assert!(lazy.stats().chunks >= 3);
        let mid = os_counters();
        // Chunks up to half a segment are carved from the provider's segments (one mapping
        // each, and those chunks have none of their own); larger ones are mappings.
        assert!(mid.maps - before.maps <= chunks, "{mid:?} {before:?}");
        assert_eq!(mid.unmaps, before.unmaps);
        assert!(
            mid.mapped_bytes - before.mapped_bytes >= eager.stats().mapped,
            "{mid:?} {before:?}"
        );
        assert!(Heap::builder().limit(1).build().is_err());
        assert!(
            Heap::builder()
                .initial(2 << 20)
                .limit(1 << 20)
                .build()
                .is_err()
        );
        assert_eq!(os_counters(), mid, "failed builds map nothing");
    }
    isoheap::release_cached();
    let after = os_counters();
    assert_eq!(after.maps - after.unmaps, before.maps - before.unmaps);
    assert_eq!(after.mapped_bytes, before.mapped_bytes);
    assert!(after.unmaps > before.unmaps);
}

// ---- growth in place ----

#[test]
fn vec_at_the_top_grows_in_place() {
    let _os = shared();
    let heap = Heap::with_capacity(1 << 20).unwrap();
    let _below = alloc(&heap, 100, 16);
    let mut v: allocator_api2::vec::Vec<u64, &Heap> =
        allocator_api2::vec::Vec::with_capacity_in(4, &heap);
    let p = v.as_ptr();
    let mut grows = 0;
    while v.capacity() * 2 * 8 < (1 << 20) - 4096 {
        let cap = v.capacity();
        v.extend(0..cap as u64 - v.len() as u64 + 1);
        assert!(v.capacity() > cap);
        grows += 1;
        assert_eq!(v.as_ptr(), p, "moved at capacity {}", v.capacity());
    }
    assert!(grows >= 10);
    assert_eq!(heap.stats().chunks, 1);
    // A block after it stops growth in place; the Vec moves and keeps its contents.
    let _after = alloc(&heap, 16, 16);
    let before: Vec<u64> = v.to_vec();
    v.reserve_exact(v.capacity() + 1);
    assert_ne!(v.as_ptr(), p);
    assert_eq!(&v[..], &before[..]);
    check(&heap);
}

#[test]
fn grow_in_place_into_a_freed_neighbour() {
    let _os = shared();
    // Strict mode: a freed block merges at once (with the quick lists on, a freed 4 KiB block
    // would wait on its list for exact-size reuse and the grow below would move).
    // One chunk from the start (a first chunk sized to the first request would not hold b).
    let heap = Heap::builder()
        .quick_reuse(false)
        .initial(64 << 10)
        .build()
        .unwrap();
    // Sizes that fill 4 and 256 granules exactly, with or without the checked-mode tag.
    let t = tag(&heap);
    let a = alloc(&heap, 64 - t, 16);
    let b = alloc(&heap, 4096 - t, 16);
    let guard = alloc(&heap, 16, 16);
    // SAFETY: live blocks with the layouts used.
    unsafe {
        fill(a, 64 - t, 9);
        heap.deallocate(b, layout(4096 - t, 16));
        let g = heap.grow(a, layout(64 - t, 16), layout(2000, 16)).unwrap();
        assert_eq!(g.cast::<u8>(), a);
        assert_filled(a, 64 - t, 9, "block");
        check(&heap);
        // The rest of the freed neighbour is still one free block right behind.
        let both = 64 + 4096 - t;
        let g = heap.grow(a, layout(2000, 16), layout(both, 16)).unwrap();
        assert_eq!(g.cast::<u8>(), a, "exactly the two blocks together");
        assert_filled(a, 64 - t, 9, "block");
        check(&heap);
        // One byte more needs a granule the guard holds: the block moves.
        let m = heap
            .grow(a, layout(both, 16), layout(both + 1, 16))
            .unwrap();
        assert_ne!(m.cast::<u8>(), a);
        assert_filled(m.cast(), 64 - t, 9, "block");
        heap.deallocate(m.cast(), layout(both + 1, 16));
        heap.deallocate(guard, layout(16, 16));
    }
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
}

// ---- misuse the heap detects ----

#[test]
fn foreign_pointer_panics_naming_the_address() {
    let _os = shared();
    let heap = Heap::new();
    let other = Heap::new();
    let mine = alloc(&heap, 64, 16);
    let theirs = alloc(&other, 64, 16);
    let msg = panic_message(|| {
        // SAFETY: not sound to call; the heap detects it and panics before touching anything.
        unsafe { heap.deallocate(theirs, layout(64, 16)) }
    });
    assert!(
        msg.contains(&format!("{:#x}", theirs.addr().get())),
        "{msg}"
    );
    assert!(msg.contains("does not belong to this heap"), "{msg}");
    let mut local = [0u64; 4];
    let stack = NonNull::from(&mut local).cast::<u8>();
    let msg = panic_message(|| {
        // SAFETY: as above.
        unsafe { heap.deallocate(stack, layout(32, 8)) }
    });
    assert!(msg.contains(&format!("{:#x}", stack.addr().get())), "{msg}");
    // Both heaps are untouched and usable.
    check(&heap);
    check(&other);
    // SAFETY: each block goes back to its own heap.
    unsafe {
        heap.deallocate(mine, layout(64, 16));
        other.deallocate(theirs, layout(64, 16));
    }
    check(&heap);
    check(&other);
}

#[test]
#[should_panic(expected = "does not belong to this heap")]
fn dealloc_on_an_empty_heap_panics() {
    let _os = shared();
    let heap = Heap::new();
    let other = Heap::new();
    let p = alloc(&other, 16, 16);
    // SAFETY: not sound; detected.
    unsafe { heap.deallocate(p, layout(16, 16)) };
}

#[test]
fn pointer_off_a_block_start_panics() {
    let _os = shared();
    let heap = Heap::new();
    let a = alloc(&heap, 64, 16);
    // SAFETY: an address inside a live block; computing it is fine.
    let inside = unsafe { a.add(8) };
    let msg = panic_message(|| {
        // SAFETY: not sound; detected (not on a granule boundary).
        unsafe { heap.deallocate(inside, layout(8, 8)) }
    });
    assert!(
        msg.contains(&format!("{:#x}", inside.addr().get())),
        "{msg}"
    );
    assert!(msg.contains("not the start of a live block"), "{msg}");
    check(&heap);
    // SAFETY: the real block.
    unsafe { heap.deallocate(a, layout(64, 16)) };
    check(&heap);
}

#[cfg(debug_assertions)]
#[test]
fn double_free_panics_in_debug_builds() {
    let _os = shared();
    let heap = Heap::new();
    let a = alloc(&heap, 64, 16);
    let b = alloc(&heap, 64, 16);
    let guard = alloc(&heap, 16, 16);
    // SAFETY: freed once, legitimately.
    unsafe {
        heap.deallocate(a, layout(64, 16));
        heap.deallocate(b, layout(64, 16));
    }
    for p in [a, b] {
        let msg = panic_message(|| {
            // SAFETY: not sound; detected in debug builds.
            unsafe { heap.deallocate(p, layout(64, 16)) }
        });
        assert!(msg.contains(&format!("{:#x}", p.addr().get())), "{msg}");
        assert!(msg.contains("double free"), "{msg}");
    }
    check(&heap);
    // SAFETY: the guard is live.
    unsafe { heap.deallocate(guard, layout(16, 16)) };
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
}

// ---- odds and ends ----

#[test]
fn deallocate_accepts_the_returned_length() {
    let _os = shared();
    let heap = Heap::new();
    for size in [1, 15, 16, 17, 100, 4095] {
        let b = heap.allocate(layout(size, 4)).unwrap();
        // Checked mode returns exactly the size asked (the only one deallocate may pass).
        let len = if heap.is_checked() {
            size
        } else {
            size.next_multiple_of(GRANULE)
        };
        assert_eq!(b.len(), len);
        // SAFETY: any size between the requested one and the returned length is accepted.
        unsafe { heap.deallocate(b.cast(), layout(b.len(), 4)) };
        assert_eq!(heap.stats().in_use, 0);
        check(&heap);
    }
}

#[test]
fn heap_is_send_and_counts_peak() {
    let _os = shared();
    fn assert_send<T: Send>() {}
    assert_send::<Heap>();
    let heap = Heap::new();
    let p = alloc(&heap, 5000, 16);
    let heap = std::thread::spawn(move || {
        let q = alloc(&heap, 3000, 16);
        // SAFETY: live block.
        unsafe { heap.deallocate(q, layout(3000, 16)) };
        heap
    })
    .join()
    .unwrap();
    let s = heap.stats();
    assert_eq!(s.in_use, 5008);
    assert_eq!(s.peak_in_use, 5008 + 3008);
    // SAFETY: the block moved with the heap, untouched.
    unsafe { heap.deallocate(p, layout(5000, 16)) };
    check(&heap);
    assert!(format!("{heap:?}").contains("Heap"));
}

/// `reset` frees everything at once: afterwards `check()` passes, nothing is in use, mapped
/// bytes fall to the warm amount, and the first chunk's whole block area is one allocatable
/// span again.
#[test]
fn reset_frees_everything_and_keeps_warm_memory() {
    // Alone in a process: the process cache of mappings may hand this heap a larger mapping
    // that another test's heap left (up to 4x the size asked for), and then its first chunk
    // alone is over the warm amount.
    if !isoheap_testkit::alone(
        module_path!(),
        "reset_frees_everything_and_keeps_warm_memory",
    ) {
        return;
    }
    let mut heap = Heap::builder()
        .initial(256 << 10)
        .warm(400 << 10)
        .build()
        .unwrap();
    let first_chunk = heap.stats().mapped;
    for round in 0..3 {
        {
            let h = &heap;
            let mut vs: Vec<allocator_api2::vec::Vec<u64, &Heap>> = Vec::new();
            for i in 0..3000u64 {
                let mut v = allocator_api2::vec::Vec::new_in(h);
                v.extend(0..(i % 97) + round);
                vs.push(v);
            }
            vs.retain(|v| v.len() % 3 == 0);
            assert!(h.stats().chunks > 1, "the heap grew past its first chunk");
            // Leak what is left: reset must free it anyway.
            core::mem::forget(vs);
        }
        heap.reset();
        heap.check().unwrap();
        let s = heap.stats();
        assert_eq!(s.in_use, 0);
        assert_eq!(s.peak_in_use, 0, "peak restarts at reset");
        assert_eq!(s.chunks, 1);
        // The chunks kept are the lowest-addressed ones up to the warm amount: the first
        // chunk or (when the OS placed it lower) a later one.
        assert!(
            s.mapped <= 400 << 10 && s.mapped >= first_chunk,
            "mapped bytes fall to the warm amount: {s:?}"
        );
        assert_eq!(s.free_blocks, 1);
        let whole = layout(s.largest_free - tag(&heap), 16);
        let p = heap
            .allocate(whole)
            .expect("the whole block area is one span");
        // SAFETY: just allocated with `whole`.
        unsafe { heap.deallocate(p.cast(), whole) };
        heap.check().unwrap();
    }
}

/// Budget: an allocation past it fails and changes nothing, the heap keeps working, the
/// refusal is counted apart from other failures, `try_reserve` returns `Err`, and a grow that
/// has to move counts both blocks.
#[test]
fn budget_refuses_cleanly() {
    let _os = shared();
    let heap = Heap::builder().budget(64 << 10).build().unwrap();
    let a = alloc(&heap, 40 << 10, 16);
    let before = heap.stats();
    assert!(
        heap.allocate(layout(32 << 10, 16)).is_err(),
        "40 + 32 KiB > 64 KiB"
    );
    let after = heap.stats();
    assert_eq!(
        (after.in_use, after.free, after.mapped),
        (before.in_use, before.free, before.mapped)
    );
    assert_eq!(after.budget_refusals, before.budget_refusals + 1);
    assert_eq!(after.budget, Some(64 << 10));
    check(&heap);
    // Still usable below the budget.
    let b = alloc(&heap, 16 << 10, 16);
    // A grow that must move (b is in the way) would hold 40 + 48 KiB at once: refused.
    // SAFETY: a is live with this layout; on failure it stays valid.
    assert!(unsafe { heap.grow(a, layout(40 << 10, 16), layout(48 << 10, 16)) }.is_err());
    assert_eq!(heap.stats().budget_refusals, 2);
    // Fallible collection APIs see the refusal.
    let mut v: allocator_api2::vec::Vec<u8, &Heap> = allocator_api2::vec::Vec::new_in(&heap);
    assert!(v.try_reserve(1 << 20).is_err());
    v.try_reserve(1000).unwrap();
    let mut m: hashbrown::HashMap<u64, u64, hashbrown::DefaultHashBuilder, &Heap> =
        hashbrown::HashMap::new_in(&heap);
    assert!(m.try_reserve(1 << 20).is_err());
    m.try_reserve(10).unwrap();
    drop((v, m));
    // Raising the budget lets the same request through.
    heap.set_budget(None);
    let c = alloc(&heap, 32 << 10, 16);
    // SAFETY: live blocks with these layouts.
    unsafe {
        heap.deallocate(a, layout(40 << 10, 16));
        heap.deallocate(b, layout(16 << 10, 16));
        heap.deallocate(c, layout(32 << 10, 16));
    }
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
}

/// The pool: many threads take and return heaps; no heap is held by two threads at once, the
/// contents of a heap on loan are never disturbed, and the number of OS maps stays bounded.
#[test]
fn pool_shares_heaps_between_threads() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    // Alone in a process: the other tests of this binary map and unmap meanwhile.
    if !isoheap_testkit::alone(module_path!(), "pool_shares_heaps_between_threads") {
        return;
    }
    let _os = exclusive();
    isoheap::release_cached();
    let maps_before = os_counters().maps;
    let pool = isoheap::HeapPool::new(Heap::builder().budget(256 << 10), 4);
    let held: Mutex<HashSet<usize>> = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for t in 0..6u8 {
            let (pool, held) = (&pool, &held);
            s.spawn(move || {
                for i in 0..200usize {
                    let heap = pool.get().unwrap();
                    assert!(
                        held.lock().unwrap().insert(heap.id()),
                        "heap {} lent twice",
                        heap.id()
                    );
                    let mut v: allocator_api2::vec::Vec<u8, &Heap> =
                        allocator_api2::vec::Vec::new_in(&heap);
                    v.extend(std::iter::repeat_n(t, 1000 + i * 37 % 5000));
                    std::thread::yield_now();
                    assert!(
                        v.iter().all(|&b| b == t),
                        "another thread wrote into a lent heap"
                    );
                    assert!(
                        v.try_reserve(1 << 20).is_err(),
                        "budget applies to pooled heaps"
                    );
                    drop(v);
                    assert!(held.lock().unwrap().remove(&heap.id()));
                }
            });
        }
    });
    assert!(pool.idle() <= 4);
    assert!(
        pool.created() <= 6,
        "never more heaps than threads: {}",
        pool.created()
    );
    let maps = os_counters().maps - maps_before;
    assert!(
        // Per heap: its chunk, perhaps a second, and the quick lists' table.
        maps <= 3 * pool.created(),
        "{maps} OS maps for {} heaps and 1200 requests",
        pool.created()
    );
    drop(pool);
    isoheap::release_cached();
}

// ---- heaps over a caller's buffer (no mmap) ----

/// A buffer of `len` bytes starting `offset` bytes after a 16-byte boundary, inside `mem`
/// (which the buffer borrows). Its bytes are all `0xFF`, so a zeroed allocation must clear them.
fn buffer_in(mem: &mut Vec<u128>, len: usize, offset: usize) -> &mut [std::mem::MaybeUninit<u8>] {
    let words = (offset + len).div_ceil(16) + 1;
    mem.clear();
    mem.resize(words, u128::MAX);
    let base = mem.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>();
    // Round up to 16 bytes by hand: u128 is only 8-aligned on some targets.
    let pad = base.addr().wrapping_neg() & 15;
    assert!(pad + offset + len <= words * 16);
    // SAFETY: the range lies inside the Vec's initialised u128s (plain bytes), which stay
    // borrowed through `mem` for the returned slice's lifetime.
    unsafe { std::slice::from_raw_parts_mut(base.add(pad + offset), len) }
}

#[test]
fn buffer_heap_serves_allocator_api2_vec_and_hashbrown() {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 4 << 20].into_boxed_slice();
    let heap = Heap::from_buffer(&mut buf).expect("a 4 MiB buffer");
    let s = heap.stats();
    assert_eq!((s.chunks, s.in_use), (1, 0));
    assert!(
        s.mapped <= 4 << 20 && s.mapped > (4 << 20) - GRANULE,
        "{s:?}"
    );
    let a: &Heap = &heap;
    let mut rng = Rng(0xB0FF_E2B0_FFE2_0001);
    type Val<'h> = allocator_api2::vec::Vec<u8, &'h Heap>;
    let mut map: hashbrown::HashMap<u64, Val<'_>, hashbrown::DefaultHashBuilder, &Heap> =
        hashbrown::HashMap::new_in(a);
    let mut vec: allocator_api2::vec::Vec<u64, &Heap> = allocator_api2::vec::Vec::new_in(a);
    let mut m_map: std::collections::HashMap<u64, Vec<u8>> = std::collections::HashMap::new();
    let mut m_vec = Vec::new();
    for step in 0..20_000 {
        let k = rng.below(1500) as u64;
        let x = rng.next();
        match rng.below(6) {
            0 | 1 => {
                let max = if rng.below(10) == 0 { 3000 } else { 60 };
                let len = rng.below(max);
                let tag = x as u8;
                let mut v = allocator_api2::vec::Vec::with_capacity_in(len, a);
                v.extend((0..len).map(|i| byte(i, tag)));
                m_map.insert(k, v.to_vec());
                map.insert(k, v);
            }
            2 => assert_eq!(map.remove(&k).map(|v| v.to_vec()), m_map.remove(&k)),
            3 => {
                vec.push(x);
                m_vec.push(x);
            }
            4 => {
                let n = rng.below(vec.len() + 1);
                vec.truncate(n);
                m_vec.truncate(n);
                vec.shrink_to_fit();
            }
            _ => {
                if let Some(v) = map.get_mut(&k) {
                    v.push(x as u8);
                    m_map.get_mut(&k).unwrap().push(x as u8);
                }
            }
        }
        if step % 2500 == 0 {
            check(&heap);
        }
    }
    assert_eq!(&vec[..], &m_vec[..]);
    assert_eq!(map.len(), m_map.len());
    for (k, v) in &m_map {
        assert_eq!(&map[k][..], &v[..], "value of key {k}");
    }
    let peak = heap.stats().in_use;
    assert!(peak > 100 << 10, "the test used only {peak} bytes");
    check(&heap);
    drop((map, vec));
    check(&heap);
    let s = heap.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.free_blocks, 1, "not merged back: {s:?}");
    assert_eq!(s.largest_free, s.free);
}

#[test]
fn buffer_heap_refuses_empty_and_tiny_buffers_with_typed_errors() {
    use isoheap::BufferHeap;
    let mut mem = Vec::new();
    // Zero length, at any address.
    assert_eq!(Heap::from_buffer(&mut []).unwrap_err(), HeapError::ZeroSize);
    let e = Heap::from_buffer(buffer_in(&mut mem, 0, 3)).unwrap_err();
    assert_eq!(e, HeapError::ZeroSize);
    assert_eq!(e.to_string(), "heap size must be greater than zero bytes");
    // Too small for the metadata and one block: `minimum` is the smallest that works.
    let min = BufferHeap::MIN_LEN;
    assert!(min > GRANULE && min.is_multiple_of(GRANULE));
    for len in [1, GRANULE, min - GRANULE, min - 1] {
        let e = Heap::from_buffer(buffer_in(&mut mem, len, 0)).unwrap_err();
        assert_eq!(
            e,
            HeapError::TooSmall {
                requested: len,
                minimum: min
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "heap of {len} bytes is too small: it needs at least {min} bytes for its \
                 metadata and one block"
            )
        );
    }
    let heap = Heap::from_buffer(buffer_in(&mut mem, min, 0)).expect("the minimum works");
    // The minimum leaves one granule in checked mode (its metadata is the largest), a little
    // more without it.
    let room = heap.stats().free;
    assert!(room == GRANULE || (!heap.is_checked() && room > GRANULE && room <= 4 * GRANULE));
    // One granule: 16 bytes, or 14 and the tag in checked mode.
    let one = GRANULE - tag(&heap);
    let ps: Vec<_> = (0..room / GRANULE).map(|_| alloc(&heap, one, 16)).collect();
    assert!(heap.allocate(layout(1, 1)).is_err(), "the blocks fill it");
    for p in ps {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(p, layout(one, 16)) };
    }
    check(&heap);
    drop(heap);
    // Misaligned and too small once aligned: the minimum counts the bytes skipped.
    for offset in [1, 7, 15] {
        let pad = 16 - offset;
        let e = Heap::from_buffer(buffer_in(&mut mem, min + pad - 1, offset)).unwrap_err();
        assert_eq!(
            e,
            HeapError::TooSmall {
                requested: min + pad - 1,
                minimum: min + pad
            },
            "offset {offset}"
        );
        let heap = Heap::from_buffer(buffer_in(&mut mem, min + pad, offset))
            .expect("the minimum at this address works");
        assert_eq!(heap.stats().free, room);
        check(&heap);
    }
}

/// A misaligned buffer is not an error: its start is rounded up to 16 bytes and its length down
/// to whole granules; every block is aligned and lies inside the buffer.
#[test]
fn misaligned_buffer_is_aligned_up_and_every_block_stays_inside() {
    let mut mem = Vec::new();
    for offset in [1, 3, 8, 15] {
        let len = (64 << 10) + 5;
        let buf = buffer_in(&mut mem, len, offset);
        let (lo, hi) = (buf.as_ptr().addr(), buf.as_ptr().addr() + len);
        let heap = Heap::from_buffer(buf).unwrap();
        let s = heap.stats();
        assert_eq!(s.chunks, 1);
        assert_eq!(
            s.mapped,
            (len - (16 - offset)) & !(GRANULE - 1),
            "offset {offset}"
        );
        let mut blocks = Vec::new();
        let mut rng = Rng(0x5EED ^ offset as u64);
        for i in 0.. {
            let (size, align) = (1 + rng.below(2000), 1 << rng.below(9));
            let Ok(b) = heap.allocate_zeroed(layout(size, align)) else {
                break;
            };
            let p = b.cast::<u8>();
            assert!(p.addr().get() >= lo && p.addr().get() + b.len() <= hi);
            assert_eq!(p.addr().get() % align.max(GRANULE), 0);
            // SAFETY: a live block of b.len() bytes.
            unsafe {
                assert!(
                    all_zero(p, b.len()),
                    "zeroed block over uninitialised memory"
                );
                fill(p, size, i as u8);
            }
            blocks.push((p, size, align, i as u8));
        }
        assert!(blocks.len() > 40, "only {} blocks fit", blocks.len());
        check(&heap);
        for (p, size, align, tag) in blocks {
            // SAFETY: live blocks allocated above with these layouts.
            unsafe {
                assert_filled(p, size, tag, "block");
                heap.deallocate(p, layout(size, align));
            }
        }
        check(&heap);
        assert_eq!(heap.stats().in_use, 0);
    }
}

#[test]
fn full_buffer_fails_cleanly_and_stays_usable() {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64 << 10];
    let heap = Heap::from_buffer(&mut buf).unwrap();
    let l = layout(1000, 16);
    let mut blocks = Vec::new();
    loop {
        match heap.allocate(l) {
            Ok(b) => blocks.push(b.cast::<u8>()),
            Err(e) => {
                assert_eq!(e.to_string(), "isoheap: memory allocation failed");
                break;
            }
        }
        assert!(blocks.len() < 100, "the buffer never filled");
    }
    assert!(blocks.len() >= 60, "only {} blocks fit", blocks.len());
    for (i, p) in blocks.iter().enumerate() {
        // SAFETY: live blocks of 1000 bytes.
        unsafe { fill(*p, 1000, i as u8) };
    }
    let full = heap.stats();
    check(&heap);
    // Failing again, in every way, changes nothing and touches no block.
    assert!(heap.allocate(l).is_err());
    assert!(
        heap.allocate_zeroed(layout(full.largest_free + 1, 1))
            .is_err()
    );
    let mut v: allocator_api2::vec::Vec<u8, &Heap> = allocator_api2::vec::Vec::new_in(&heap);
    assert!(v.try_reserve(1 << 20).is_err());
    // SAFETY: the last block is live with layout l; growing it past the buffer fails.
    assert!(unsafe { heap.grow(*blocks.last().unwrap(), l, layout(70_000, 16)) }.is_err());
    drop(v);
    assert_eq!(heap.stats(), full);
    // Free every other block: the space comes back and is reused.
    for p in blocks.iter().step_by(2) {
        // SAFETY: allocated above with this layout.
        unsafe { heap.deallocate(*p, l) };
    }
    check(&heap);
    let again = alloc(&heap, 1000, 16);
    for (i, p) in blocks.iter().enumerate().skip(1).step_by(2) {
        // SAFETY: live blocks, filled above.
        unsafe { assert_filled(*p, 1000, i as u8, "block") };
    }
    // SAFETY: freeing everything still live.
    unsafe {
        heap.deallocate(again, l);
        for p in blocks.iter().skip(1).step_by(2) {
            heap.deallocate(*p, l);
        }
    }
    check(&heap);
    let s = heap.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.free_blocks, 1, "not merged back: {s:?}");
    assert_eq!(s.mapped, full.mapped);
    let n = (0..).map_while(|_| heap.allocate(l).ok()).count();
    assert_eq!(n, blocks.len(), "as many blocks fit again");
    check(&heap);
}

#[test]
fn buffer_heap_reset_and_reuse_of_the_buffer() {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 256 << 10].into_boxed_slice();
    let mut heap = Heap::from_buffer(&mut buf).unwrap();
    let mapped = heap.stats().mapped;
    for round in 0..4usize {
        let mut v = allocator_api2::vec::Vec::new_in(&*heap);
        v.extend(0..5_000 * (round as u32 + 1));
        std::mem::forget(v); // reset frees it anyway
        assert!(heap.stats().in_use > 0);
        heap.reset();
        let s = heap.stats();
        assert_eq!((s.in_use, s.mapped, s.peak_in_use), (0, mapped, 0));
        check(&heap);
    }
    assert!(format!("{heap:?}").starts_with("BufferHeap(Heap { stats: Stats {"));
    drop(heap);
    // The buffer is the caller's again.
    buf.fill(std::mem::MaybeUninit::new(0xAB));
    // SAFETY: every byte was just written.
    assert!(buf.iter().all(|b| unsafe { b.assume_init() } == 0xAB));
}

/// A heap over a buffer never asks the OS for anything: no map, unmap, cache use or madvise.
#[test]
fn buffer_heap_makes_no_system_call() {
    // Alone in a process: the other tests of this binary map and unmap meanwhile.
    if !isoheap_testkit::alone(module_path!(), "buffer_heap_makes_no_system_call") {
        return;
    }
    let _os = exclusive();
    let before = os_counters();
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 1 << 20].into_boxed_slice();
    {
        let mut heap = Heap::from_buffer(&mut buf).unwrap();
        let l = layout(200_000, 16);
        let blocks: Vec<_> = (0..).map_while(|_| heap.allocate(l).ok()).collect();
        assert_eq!(blocks.len(), 5);
        for b in blocks {
            // SAFETY: allocated above with this layout; freeing big blocks is where a mapped
            // heap gives memory back.
            unsafe { heap.deallocate(b.cast(), l) };
        }
        heap.reset();
        check(&heap);
    }
    assert_eq!(os_counters(), before);
}

#[cfg(feature = "nightly")]
#[test]
fn std_collections_over_a_buffer() {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 1 << 20].into_boxed_slice();
    let heap = Heap::from_buffer(&mut buf).unwrap();
    let mut v: Vec<u64, &Heap> = Vec::new_in(&heap);
    v.extend(0..10_000);
    let b: Box<[u64], &Heap> = v.into_boxed_slice();
    assert_eq!(b.iter().sum::<u64>(), 49_995_000);
    let mut d = std::collections::VecDeque::new_in(&*heap);
    d.extend(0..1000u32);
    d.rotate_left(300);
    assert_eq!(d.front(), Some(&300));
    drop((b, d));
    check(&heap);
    assert_eq!(heap.stats().in_use, 0);
}

// ---- misuse panics point at the caller ----

std::thread_local! {
    /// Where the last panic on this thread was raised, if the hook below recorded it.
    static PANIC_AT: std::cell::RefCell<Option<(String, u32, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, which must panic, and returns the panic's location (file, line) and message. The
/// hook records panics of the calling thread only and hands every other panic to the hook that
/// was installed before.
fn panic_location(f: impl FnOnce()) -> (String, u32, String) {
    use std::sync::{Arc, Mutex};
    static HOOK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::thread::current().id();
    let previous = Arc::new(std::panic::take_hook());
    let prev = Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == me {
            let loc = info.location().expect("a location");
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            PANIC_AT.with(|p| *p.borrow_mut() = Some((loc.file().to_owned(), loc.line(), msg)));
        } else {
            prev(info);
        }
    }));
    let r = catch_unwind(AssertUnwindSafe(f));
    drop(std::panic::take_hook());
    let previous = Arc::try_unwrap(previous).unwrap_or_else(|_| unreachable!("hook dropped"));
    std::panic::set_hook(previous);
    assert!(r.is_err(), "expected a panic");
    PANIC_AT
        .with(|p| p.borrow_mut().take())
        .expect("the hook saw the panic")
}

/// A misuse reported by `deallocate`, `grow`, `grow_zeroed` or `shrink` panics at the caller's
/// line (`#[track_caller]` down to where the panic is raised), not inside the crate.
#[test]
fn misuse_panics_point_at_the_callers_line() {
    let heap = Heap::builder().checked(true).build().unwrap();
    let other = Heap::new();
    let l = layout(24, 8);
    let big = layout(48, 8);
    let foreign = alloc(&other, 24, 8);
    let p = alloc(&heap, 24, 8);
    // SAFETY: allocated above with `l`.
    unsafe { heap.deallocate(p, l) };
    // The line of the call, with the call as a closure (`line!()` in a macro is the line of
    // the macro's invocation).
    macro_rules! case {
        ($call:expr) => {
            (
                line!(),
                Box::new(|| {
                    let _ = $call;
                }) as Box<dyn FnOnce() + '_>,
            )
        };
    }
    // SAFETY: deliberate misuse in every case, caught by checked mode before anything changes.
    let cases = unsafe {
        [
            case!(heap.deallocate(p, l)),
            case!(heap.grow(foreign, l, big)),
            case!(heap.grow_zeroed(foreign, l, big)),
            case!(heap.shrink(foreign, big, l)),
            case!(heap.deallocate(foreign, l)),
        ]
    };
    for (line, case) in cases {
        let (file, at, msg) = panic_location(case);
        assert!(msg.starts_with("isoheap: pointer 0x"), "{msg}");
        assert!(
            file.ends_with("integration.rs") && at == line,
            "panic at {file}:{at}, expected this file's line {line}: {msg}"
        );
    }
    heap.check().unwrap();
    // SAFETY: allocated above with `l`, freed once.
    unsafe { other.deallocate(foreign, l) };
}
