//! Regression tests for the confirmed reliability bugs, each named after its bug and written to
//! fail on the code before its fix. (The fork bugs need a process of their own each:
//! `tests/fork.rs`.)

use isoheap::{ARENAS, Heap, SyncHeap};
use std::alloc::Layout;

/// Bug: a `SyncHeap` mapped a new chunk per round of "a big temporary buffer, then a small
/// long-lived object". The big block's chunk of its own, once empty, took the small object
/// into its free frontier and then never served a big block again, so each round mapped
/// another one (16 GiB after 2,000 rounds of 8 MiB with `GlobalHeap`). Now an arena's
/// single-block chunk goes back as soon as it is empty.
#[test]
fn unbounded_mapping_in_sync_heap() {
    let heap = SyncHeap::new();
    let big = Layout::from_size_align(8 << 20, 16).unwrap();
    let small = Layout::new::<u64>();
    let mut keep = Vec::new();
    let mut most = 0;
    for round in 0..64 {
        let b = heap.allocate(big).unwrap();
        // SAFETY: just allocated with `big`, not used after.
        unsafe { heap.deallocate(b.cast(), big) };
        keep.push(heap.allocate(small).unwrap());
        let mapped = heap.stats().mapped;
        most = most.max(mapped);
        // One big chunk at most at any time, plus one 4 MiB unit per arena for the keepers.
        assert!(
            mapped <= (8 << 20) + (ARENAS + 1) * (4 << 20),
            "round {round}: {mapped} bytes mapped for {} bytes in use",
            heap.stats().in_use
        );
    }
    for p in keep {
        // SAFETY: allocated above with `small`.
        unsafe { heap.deallocate(p.cast(), small) };
    }
    heap.check().unwrap();
    assert!(most < 64 << 20, "{most} bytes mapped at the most");
}

/// Bug: `SyncHeap::stats().peak_in_use` was the sum of the arenas' peaks: threads that each
/// used 1 MiB one after the other (each in its own home arena) reported that many MiB. Now it
/// is the most the heap had in use at once.
#[test]
fn sync_heap_peak_is_the_true_peak() {
    let heap = SyncHeap::new();
    let l = Layout::from_size_align(1 << 20, 16).unwrap();
    // One thread after another: homes are handed out round-robin, so they use several arenas.
    for _ in 0..ARENAS + 1 {
        std::thread::scope(|s| {
            s.spawn(|| {
                let p = heap.allocate(l).unwrap();
                // SAFETY: just allocated with `l`, not used after.
                unsafe { heap.deallocate(p.cast(), l) };
            });
        });
    }
    let s = heap.stats();
    assert_eq!(s.in_use, 0);
    // 1 MiB, plus the checked-mode tag rounded to a granule.
    assert!(
        s.peak_in_use >= 1 << 20 && s.peak_in_use <= (1 << 20) + 16,
        "peak_in_use {} for one 1 MiB block at a time",
        s.peak_in_use
    );
    heap.check().unwrap();
}

/// Bug: `reset()` wiped a `zero_on_free` heap's live blocks but dropping it did not: a block
/// still allocated at drop (a leaked `Vec` holding a key) went, through the process cache of
/// mappings, to the next heap with its bytes intact (4,096 of 4,096 seen there).
/// A chunk the provider takes back from a dropped heap and hands to the next one carries its
/// dirty extent: `allocate_zeroed` in the next heap zeroes what the first one wrote, for a
/// small first chunk and a large one, checked or not.
#[test]
fn zeroed_allocation_in_a_recycled_chunk() {
    // Alone in a process, so that the next heap gets this heap's chunk from the provider.
    if !isoheap_testkit::alone(module_path!(), "zeroed_allocation_in_a_recycled_chunk") {
        return;
    }
    for checked in [false, true] {
        for size in [600, 3000, 200 << 10] {
            let l = Layout::from_size_align(size, 16).unwrap();
            let first = Heap::builder().checked(checked).build().unwrap();
            let p = first.allocate(l).unwrap().cast::<u8>();
            // SAFETY: the block is `size` bytes long.
            unsafe { p.as_ptr().write_bytes(0xFF, size) };
            // SAFETY: allocated above with `l`.
            unsafe { first.deallocate(p, l) };
            drop(first);
            let next = Heap::builder().checked(checked).build().unwrap();
            let q = next.allocate_zeroed(l).unwrap();
            assert_eq!(
                q.cast::<u8>(),
                p,
                "the next heap reuses the chunk (else this tests nothing): {size} B, checked {checked}"
            );
            // SAFETY: q is `q.len()` bytes of this heap's memory.
            let bytes = unsafe { std::slice::from_raw_parts(q.cast::<u8>().as_ptr(), q.len()) };
            let dirty = bytes.iter().filter(|&&b| b != 0).count();
            assert_eq!(
                dirty, 0,
                "{dirty} of {size} bytes not zeroed, checked {checked}"
            );
            // SAFETY: allocated above with `l`.
            unsafe { next.deallocate(q.cast(), l) };
        }
    }
}

#[test]
fn zero_on_free_heap_is_wiped_on_drop() {
    // Alone in a process, so that the next heap gets this heap's mapping from the cache.
    if !isoheap_testkit::alone(module_path!(), "zero_on_free_heap_is_wiped_on_drop") {
        return;
    }
    const SECRET: u8 = 0xA7;
    isoheap::release_cached();
    let l = Layout::from_size_align(4096, 16).unwrap();
    let heap = Heap::builder().zero_on_free(true).build().unwrap();
    let p = heap.allocate(l).unwrap().cast::<u8>();
    // SAFETY: the block is 4096 bytes long; it is never freed (leaked, as by `mem::forget`).
    unsafe { p.as_ptr().write_bytes(SECRET, 4096) };
    drop(heap);
    let next = Heap::new();
    let q = next.allocate(l).unwrap().cast::<u8>();
    assert_eq!(
        q, p,
        "the next heap reuses the dropped heap's mapping (else this tests nothing)"
    );
    // SAFETY: the block is 4096 bytes of this heap's memory; volatile reads of its old contents
    // (a fresh block's bytes are unspecified, not uninitialised in the OS mapping).
    let seen = (0..4096)
        .filter(|&i| unsafe { q.as_ptr().add(i).read_volatile() } == SECRET)
        .count();
    assert_eq!(
        seen, 0,
        "{seen} of 4096 bytes of the dropped heap's block are still there"
    );
    // SAFETY: allocated above with `l`.
    unsafe { next.deallocate(q, l) };
}
