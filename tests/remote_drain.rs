//! An arena whose thread has exited still gives memory back. Blocks that other threads free
//! into it go onto its remote-free list; once that list holds enough, the freeing thread merges
//! it itself (the arena being idle), so the memory is reused and given back to the OS without
//! any thread using the arena again. In checked mode (debug builds) a free waits for its
//! arena's lock instead of deferring, so this test shows the remote path only in release
//! builds: `.ci/run` runs it with `--release`. Its own test binary with a single test (it measures the
//! process's resident size). Not under Miri (no madvise, no /proc).

#![cfg(all(target_os = "linux", not(miri)))]

use isoheap::SyncHeap;
use std::alloc::Layout;
use std::ptr::NonNull;

/// Resident bytes of this process, from `/proc/self/statm` (second field, in pages).
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const MIB: usize = 1 << 20;

#[test]
fn exited_threads_arena_gives_back_when_its_remote_list_fills() {
    let heap = SyncHeap::new();
    // This thread's home arena is taken first, so the thread below gets another one.
    let small = Layout::from_size_align(64, 8).unwrap();
    let mine = heap.allocate(small).unwrap();
    let before = rss();
    // A short-lived thread fills its arena with 64 MiB of blocks (4-8 KiB, every byte
    // written), hands them over and exits.
    let blocks: Vec<(usize, Layout)> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut out = Vec::new();
            let (mut total, mut x) = (0, 0x9E37_79B9u64);
            while total < 64 * MIB {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let size = 4096 + (x % 4096) as usize;
                let l = Layout::from_size_align(size, 8).unwrap();
                let p = heap.allocate(l).unwrap().cast::<u8>();
                // SAFETY: a fresh block of at least `size` bytes.
                unsafe { p.as_ptr().write_bytes(0xAB, size) };
                out.push((p.as_ptr() as usize, l));
                total += size;
            }
            out
        })
        .join()
        .unwrap()
    });
    let peak = rss();
    assert!(
        peak > before + 48 * MIB,
        "the blocks are resident: {before} -> {peak}"
    );
    // This thread frees them all. They belong to the exited thread's arena, which nobody
    // uses again: they go onto its remote list, and must not stay there.
    // In random order, so most memory comes back through merges (see tests/rss.rs).
    let mut blocks = blocks;
    let (n, mut x) = (blocks.len(), 0x2545_F491u64);
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        blocks.swap(i, i + x as usize % (n - i));
    }
    for &(addr, l) in &blocks {
        let p = NonNull::new(addr as *mut u8).unwrap();
        // SAFETY: allocated above with `l` (by the other thread), freed once.
        unsafe { heap.deallocate(p, l) };
    }
    let after = rss();
    println!(
        "resident: {} MiB before, {} MiB with the blocks, {} MiB after freeing them into the \
         exited thread's arena",
        before / MIB,
        peak / MIB,
        after / MIB
    );
    assert!(
        after < before + 16 * MIB,
        "the exited thread's arena kept {} MiB resident after every block was freed",
        (after.saturating_sub(before)) / MIB
    );
    // SAFETY: allocated above with `small`.
    unsafe { heap.deallocate(mine.cast(), small) };
    heap.check().unwrap();
    assert_eq!(heap.stats().in_use, 0);
}
