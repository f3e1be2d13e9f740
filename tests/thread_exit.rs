//! A thread's cache of free chunks goes back to the chunk provider when the thread exits: heaps
//! made and dropped on a thread that then ends leave nothing carved, so the provider can give
//! every segment back. Its own test binary with a single test: it counts the process's
//! segments, which any other test's heaps would change.

#![cfg(all(unix, feature = "mmap", feature = "std"))]

use isoheap::{Heap, os_counters, release_cached};
use std::alloc::Layout;

#[test]
fn an_exiting_threads_cached_chunks_go_back_to_the_provider() {
    std::thread::spawn(|| {
        for i in 0..40usize {
            let heap = Heap::new();
            // Chunks from 512 B to 64 KiB: every size the thread cache keeps.
            let l = Layout::from_size_align(200 << (i % 8), 8).unwrap();
            let p = heap.allocate(l).unwrap();
            // SAFETY: allocated just above with `l`, freed once.
            unsafe { heap.deallocate(p.cast(), l) };
        }
        // The chunks of the dropped heaps stay with this thread for its next heaps.
        release_cached();
        let heap = Heap::new();
        heap.allocate(Layout::new::<[u8; 100]>()).unwrap();
        drop(heap);
        assert!(
            os_counters().segments > 0,
            "the thread's cache keeps the chunk of its last heap, so its segment stays"
        );
    })
    .join()
    .unwrap();
    release_cached();
    assert_eq!(
        os_counters().segments,
        0,
        "a segment stayed after every heap's thread exited: a cached chunk was not given back"
    );
}
