//! Memory given back, and not given back again and again: a heap that fills and empties the same
//! memory in rounds (glibc's bench-malloc-simple pattern) returns it to the OS at most in the
//! first rounds, not in every round (which cost a page fault per page per round: 14x glibc's
//! time). Its own test binary with a single test: it counts the process's `madvise` calls.
//! Not under Miri (no madvise).

#![cfg(all(unix, feature = "mmap", not(miri)))]

use isoheap::{Heap, os_counters};
use std::alloc::Layout;

#[test]
fn repeated_batches_are_given_back_once_not_every_round() {
    let heap = Heap::builder().checked(false).build().unwrap();
    let mut per_round = Vec::new();
    for _ in 0..8 {
        let before = os_counters().decommits;
        for size in [16usize, 64, 256, 1024, 4096] {
            for n in [25usize, 100, 400, 1600] {
                let l = Layout::from_size_align(size, 8).unwrap();
                let batch: Vec<_> = (0..n).map(|_| heap.allocate(l).unwrap()).collect();
                for p in batch {
                    // SAFETY: allocated just above with `l`, freed once.
                    unsafe { heap.deallocate(p.cast(), l) };
                }
            }
        }
        heap.check().unwrap();
        per_round.push(os_counters().decommits - before);
    }
    println!("madvise calls per round: {per_round:?}");
    assert!(
        per_round[0] > 0,
        "the first round gives the 6 MiB batch back: {per_round:?}"
    );
    assert!(
        per_round[3..].iter().all(|&d| d == 0),
        "memory given back and refilled round after round: {per_round:?}"
    );
}
