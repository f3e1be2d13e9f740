//! The conveniences of issue 15 through the public API, on every front end (`&Heap`,
//! `&SyncHeap`, `SharedHeap`, `&PooledHeap`, `&BufferHeap`, `&ChildHeap`): each allocator trait
//! (allocator-api2 0.2 always, 0.4 with `allocator-api2-04`, core's with `nightly`) with
//! un-annotated `new_in(&x)`, `format_in!` and `String`, the bump-style helpers through `Deref`,
//! `leak`, and `collections::HashMap` (feature `hashbrown`).

use isoheap::collections::String;
use isoheap::{BufferHeap, ChildHeap, Heap, HeapPool, PooledHeap, SharedHeap, SyncHeap, format_in};
use std::mem::MaybeUninit;

/// Runs `$body` once per front end, with `$alloc` a closure returning the front end as an
/// allocator (`&x` typed as the front end, or a clone of the `SharedHeap`) and `$in_use` one
/// reading the bytes in use of the heap behind it.
macro_rules! each_front_end {
    (|$alloc:ident, $in_use:ident| $body:block) => {{
        {
            let heap = Heap::new();
            let $alloc = || -> &Heap { &heap };
            let $in_use = || heap.stats().in_use;
            $body
            heap.check().unwrap();
        }
        {
            let heap = SyncHeap::new();
            let $alloc = || -> &SyncHeap { &heap };
            let $in_use = || heap.stats().in_use;
            $body
            heap.check().unwrap();
        }
        {
            let heap = SharedHeap::new();
            let $alloc = || heap.clone();
            let $in_use = || heap.stats().in_use;
            $body
            heap.check().unwrap();
        }
        {
            let pool = HeapPool::new(Heap::builder(), 1);
            let pooled = pool.get().unwrap();
            let $alloc = || -> &PooledHeap<'_> { &pooled };
            let $in_use = || pooled.stats().in_use;
            $body
            pooled.check().unwrap();
        }
        {
            let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
            let heap = Heap::from_buffer(&mut buf).unwrap();
            let $alloc = || -> &BufferHeap<'_> { &heap };
            let $in_use = || heap.stats().in_use;
            $body
            heap.check().unwrap();
        }
        {
            let parent = Heap::new();
            let child = parent.child().unwrap();
            let $alloc = || -> &ChildHeap<'_> { &child };
            let $in_use = || child.stats().in_use;
            $body
            child.check().unwrap();
            drop(child);
            assert_eq!(parent.stats().in_use, 0);
        }
    }};
}

/// A `Vec` made with `new_in(alloc)` and no annotation on the allocator grows, shrinks and
/// frees in the front end's heap.
macro_rules! vec_round_trip {
    ($vec:ident, $alloc:expr, $in_use:expr) => {{
        let before = $in_use();
        let mut v = $vec::new_in($alloc);
        v.extend((0..1000u32).map(|i| i * 3));
        assert!($in_use() >= before + 4000, "the Vec lives in this heap");
        assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 1_498_500);
        v.truncate(10);
        v.shrink_to_fit();
        assert!($in_use() < before + 4000, "shrunk in this heap");
        assert_eq!(v[9], 27);
        drop(v);
        assert_eq!($in_use(), before, "freed into this heap");
    }};
}

#[test]
fn allocator_api2_02_on_every_front_end() {
    // The re-export: no allocator-api2 dependency of one's own needed.
    use isoheap::allocator_api2::vec::Vec;
    each_front_end!(|alloc, in_use| {
        vec_round_trip!(Vec, alloc(), in_use);
        let b = isoheap::allocator_api2::boxed::Box::new_in([7u64; 8], alloc());
        assert!(in_use() >= 64);
        assert_eq!(b.iter().sum::<u64>(), 56);
    });
}

#[cfg(feature = "allocator-api2-04")]
#[test]
fn allocator_api2_04_on_every_front_end() {
    use isoheap::allocator_api2_04::vec::Vec;
    each_front_end!(|alloc, in_use| {
        vec_round_trip!(Vec, alloc(), in_use);
        let b = isoheap::allocator_api2_04::boxed::Box::new_in([7u64; 8], alloc());
        assert!(in_use() >= 64);
        assert_eq!(b.iter().sum::<u64>(), 56);
    });
}

#[cfg(feature = "nightly")]
#[test]
fn core_allocator_on_every_front_end() {
    use std::vec::Vec;
    each_front_end!(|alloc, in_use| {
        vec_round_trip!(Vec, alloc(), in_use);
        let mut m = std::collections::BTreeMap::new_in(alloc());
        m.extend((0..100u32).map(|i| (i, i)));
        assert!(in_use() > 0);
        assert_eq!(m[&42], 42);
    });
}

/// The three traits on one heap at once (they are distinct traits, no impl clash).
#[cfg(all(feature = "allocator-api2-04", feature = "nightly"))]
#[test]
fn all_three_traits_share_one_heap() {
    let heap = Heap::new();
    let mut a = isoheap::allocator_api2::vec::Vec::new_in(&heap);
    let mut b = isoheap::allocator_api2_04::vec::Vec::new_in(&heap);
    let mut c = std::vec::Vec::new_in(&heap);
    a.push(1u64);
    b.push(2u64);
    c.push(3u64);
    assert_eq!(a[0] + b[0] + c[0], 6);
    assert!(heap.stats().in_use >= 3 * 8);
    drop((a, b, c));
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
fn format_in_and_string_on_every_front_end() {
    use std::fmt::Write;
    each_front_end!(|alloc, in_use| {
        let before = in_use();
        let mut s = format_in!(alloc(), "{}-{:>3}-{:?}", "id", 42, 'x');
        assert_eq!(s, "id- 42-'x'");
        assert!(in_use() > before, "the text is in this heap");
        write!(s, "/{}", 1.5).unwrap();
        s.push('é');
        assert_eq!(s.as_str(), "id- 42-'x'/1.5é");
        let t = String::from_str_in(&s, alloc());
        assert_eq!(s, t);
        assert_eq!(std::format!("{t}"), "id- 42-'x'/1.5é");
        let long = format_in!(alloc(), "{}", "ab".repeat(500));
        assert_eq!(long.len(), 1000);
        drop((s, t, long));
        assert_eq!(in_use(), before);
    });
}

#[test]
fn helpers_through_deref_on_the_wrappers() {
    fn exercise(heap: &Heap) {
        let before = heap.stats().in_use;
        let n = heap.alloc(5u64);
        let s = heap.alloc_str("wrapped");
        let xs = heap.alloc_slice_fill_with(3, |i| i as u16 + 1);
        *n += 1;
        s.make_ascii_uppercase();
        assert_eq!((*n, &*s, &*xs), (6, "WRAPPED", &[1u16, 2, 3][..]));
        assert!(heap.stats().in_use >= before + 8 + 7 + 6);
    }
    let pool = HeapPool::new(Heap::builder(), 1);
    {
        let pooled = pool.get().unwrap();
        let v = pooled.alloc_slice_copy(&[1u8, 2, 3]);
        assert_eq!(v, &[1, 2, 3]);
        exercise(&pooled);
    }
    // Dropping the guard reset the heap: the pool's next loan starts empty.
    assert_eq!(pool.get().unwrap().stats().in_use, 0);
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 16 << 10];
    let mut bh = Heap::from_buffer(&mut buf).unwrap();
    exercise(&bh);
    bh.reset();
    assert_eq!(bh.stats().in_use, 0);
    let parent = Heap::new();
    let mut child = parent.child().unwrap();
    exercise(&child);
    child.reset();
    assert_eq!(child.stats().in_use, 0);
}

#[test]
fn leak_on_the_crates_own_heaps() {
    fn leaked_len(s: &mut str) -> usize {
        s.make_ascii_uppercase();
        s.len()
    }
    let heap = Heap::new();
    let a = format_in!(&heap, "heap").leak();
    let sync = SyncHeap::new();
    let b = format_in!(&sync, "sync").leak();
    let pool = HeapPool::new(Heap::builder(), 1);
    let pooled = pool.get().unwrap();
    let c = format_in!(&pooled, "pooled").leak();
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 16 << 10];
    let bh = Heap::from_buffer(&mut buf).unwrap();
    let d = format_in!(&bh, "buffer").leak();
    let child = heap.child().unwrap();
    let e = format_in!(&child, "child").leak();
    for s in [&mut *a, &mut *b, &mut *c, &mut *d, &mut *e] {
        let n = leaked_len(s);
        assert!(n >= 4);
    }
    assert_eq!(
        [&*a, &*b, &*c, &*d, &*e],
        ["HEAP", "SYNC", "POOLED", "BUFFER", "CHILD"]
    );
    assert!(sync.stats().in_use >= 4 && bh.stats().in_use >= 6);
}

#[cfg(feature = "hashbrown")]
#[test]
fn hashmap_alias_in_a_heap() {
    let heap = Heap::new();
    let mut m: isoheap::collections::HashMap<'_, String<&Heap>, usize> =
        isoheap::collections::HashMap::new_in(&heap);
    for w in ["a", "bb", "a", "ccc"] {
        *m.entry(String::from_str_in(w, &heap)).or_default() += 1;
    }
    assert_eq!(m.len(), 3);
    // `String<A>: Borrow<str>` hashes as its text, so a `&str` finds it.
    assert_eq!((m["a"], m["bb"], m.get("d")), (2, 1, None));
    assert!(heap.stats().in_use > 0);
    drop(m);
    assert_eq!(heap.stats().in_use, 0);
}
