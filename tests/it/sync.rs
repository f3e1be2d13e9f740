//! The thread-safe heap: `SyncHeap` and `SharedHeap` from many threads, blocks freed by other
//! threads than the ones that allocated them, and a stress test in the style of mimalloc's
//! test-stress (contents checked on every free, all memory accounted for at the end). These run
//! under Miri too, with small counts.

#[path = "scope.rs"]
mod scope;

use allocator_api2::vec::Vec as AVec;
use isoheap::{SharedHeap, SyncHeap};
use isoheap_testkit::Rng;
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::mpsc;

const THREADS: usize = if cfg!(miri) { 3 } else { 8 };
const OPS: usize = if cfg!(miri) { 60 } else { 20_000 };

/// A block with a known fill, so corruption is seen when it is freed.
struct Tagged {
    ptr: NonNull<u8>,
    layout: Layout,
    tag: u8,
}
// SAFETY: the block is owned by this value; the heap is Sync.
unsafe impl Send for Tagged {}

fn make(heap: &SyncHeap, rng: &mut Rng) -> Tagged {
    let size = 1 + (rng.next() % if cfg!(miri) { 300 } else { 3000 }) as usize;
    let align = 1 << (rng.next() % 7);
    let layout = Layout::from_size_align(size, align).unwrap();
    let ptr = heap.allocate(layout).expect("allocation").cast::<u8>();
    assert_eq!(ptr.addr().get() % align, 0);
    let tag = rng.next() as u8;
    // SAFETY: a fresh block of `size` bytes.
    unsafe { ptr.as_ptr().write_bytes(tag, size) };
    Tagged { ptr, layout, tag }
}

fn free(heap: &SyncHeap, t: Tagged) -> usize {
    // SAFETY: a live block of layout.size() bytes, written with `tag` at creation.
    let bytes = unsafe { std::slice::from_raw_parts(t.ptr.as_ptr(), t.layout.size()) };
    let bad = bytes.iter().filter(|&&b| b != t.tag).count();
    // SAFETY: allocated from this heap with this layout.
    unsafe { heap.deallocate(t.ptr, t.layout) };
    bad
}

#[test]
fn stress_blocks_cross_threads() {
    let heap = SyncHeap::new();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Tagged>()).unzip();
    let corrupt = std::thread::scope(|s| {
        let handles: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(t, rx)| {
                let heap = &heap;
                let txs = txs.clone();
                s.spawn(move || {
                    let mut rng = Rng(0x9E37_79B9 + t as u64 * 7919);
                    let mut mine: Vec<Tagged> = Vec::new();
                    let mut bad = 0;
                    for i in 0..OPS {
                        match rng.next() % 4 {
                            0 | 1 => mine.push(make(heap, &mut rng)),
                            2 if !mine.is_empty() => {
                                let k = rng.next() as usize % mine.len();
                                bad += free(heap, mine.swap_remove(k));
                            }
                            _ if !mine.is_empty() => {
                                // Hand a block to another thread, which frees it.
                                let k = rng.next() as usize % mine.len();
                                let to = rng.next() as usize % THREADS;
                                let _ = txs[to].send(mine.swap_remove(k));
                            }
                            _ => {}
                        }
                        if i % 64 == 0 {
                            while let Ok(b) = rx.try_recv() {
                                bad += free(heap, b);
                            }
                        }
                    }
                    for b in mine {
                        bad += free(heap, b);
                    }
                    (bad, rx)
                })
            })
            .collect();
        drop(txs);
        let mut bad = 0;
        let mut rxs = Vec::new();
        for h in handles {
            let (b, rx) = h.join().unwrap();
            bad += b;
            rxs.push(rx);
        }
        // Blocks still in flight are freed here, by yet another thread.
        for rx in rxs {
            while let Ok(b) = rx.try_recv() {
                bad += free(&heap, b);
            }
        }
        bad
    });
    assert_eq!(corrupt, 0, "corrupted bytes seen on free");
    heap.check().unwrap();
    let s = heap.stats();
    assert_eq!(s.in_use, 0, "all memory accounted for: {s:?}");
    assert_eq!(s.in_use + s.free + s.metadata, s.mapped);
}

#[test]
fn collections_on_a_shared_heap_from_many_threads() {
    let heap = SharedHeap::new();
    // A 'static, Send vector in the shared heap, moved into threads and back.
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let heap = heap.clone();
            std::thread::spawn(move || {
                let mut v: AVec<u64, SharedHeap> = AVec::new_in(heap.clone());
                let n = if cfg!(miri) { 200 } else { 50_000 };
                v.extend((0..n).map(|i| i * t));
                let mut m = hashbrown::HashMap::new_in(heap);
                for (i, x) in v.iter().enumerate().take(1000) {
                    m.insert(i, *x);
                }
                assert_eq!(m[&7], 7 * t);
                v
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let v = h.join().unwrap();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * t as u64));
    }
    heap.check().unwrap();
    assert_eq!(heap.stats().in_use, 0);
}

/// `SyncHeap::reset` with blocks live in every arena and frees other threads deferred onto the
/// arenas' remote lists (the allocating threads are busy in their arenas while the frees come):
/// afterwards the heap checks, counts nothing in use, and serves new blocks whose contents hold;
/// rounds of this through a pool of `SyncHeap`s reuse the same heap.
#[test]
fn sync_heap_reset_with_deferred_frees_pending() {
    let pool = isoheap::HeapPool::of_sync_heaps(1);
    for round in 0..(if cfg!(miri) { 2 } else { 20 }) {
        let mut heap = pool.get().unwrap();
        let (tx, rx) = mpsc::channel::<Tagged>();
        std::thread::scope(|s| {
            let h = &*heap;
            for t in 0..3u64 {
                let tx = tx.clone();
                s.spawn(move || {
                    let mut rng = Rng(0x5EED + round * 7 + t);
                    let mut keep = Vec::new();
                    for i in 0..(OPS / 40).max(4) {
                        let b = make(h, &mut rng);
                        if i % 2 == 0 {
                            tx.send(b).unwrap();
                        } else {
                            keep.push(b);
                        }
                    }
                    // `Tagged` frees nothing when dropped: these blocks stay allocated, and
                    // the reset frees them.
                    drop(keep);
                });
            }
            drop(tx);
            s.spawn(move || {
                for b in rx {
                    assert_eq!(free(h, b), 0, "a block changed while it lived");
                }
            });
        });
        assert!(heap.stats().in_use > 0);
        heap.reset();
        heap.check().unwrap();
        let st = heap.stats();
        assert_eq!((st.in_use, st.peak_in_use), (0, 0));
        let mut rng = Rng(0xF00D + round);
        let fresh: Vec<Tagged> = (0..50).map(|_| make(&heap, &mut rng)).collect();
        heap.check().unwrap();
        for b in fresh {
            assert_eq!(free(&heap, b), 0, "a block changed after the reset");
        }
        assert_eq!(heap.id(), 0, "the pool lends the same heap");
    }
}

/// A `SyncHeap`'s first small allocation takes a 64 KiB chunk from the process-wide provider,
/// not a 4 MiB mapping of its own (it was 4 MiB before arenas took their chunks from the
/// provider), and its blocks are found in O(1) like any arena's.
#[test]
fn sync_heap_first_small_allocation_maps_64_kib() {
    let heap = SyncHeap::new();
    let l = Layout::new::<u64>();
    let p = heap.allocate(l).unwrap();
    assert_eq!(heap.stats().mapped, 64 << 10);
    assert!(heap.owns(p.cast::<u8>().as_ptr()));
    // SAFETY: allocated above with `l`.
    unsafe { heap.deallocate(p.cast(), l) };
    heap.check().unwrap();
}

/// An arena that grows past the chunks the provider carves gets mappings of its own (4 MiB and
/// more) that serve small blocks like any chunk: the mapped size stays close to what is in use.
/// (Such chunks were once marked as holding one large block, so small blocks never went there
/// and every growth mapped another chunk: `mapped` ran to many times `in_use`, and the global
/// allocator's churn benchmark fell from 13 to 0.8 Mops/s.)
#[test]
#[cfg_attr(
    miri,
    ignore = "a check of the growth policy, not of memory safety: 300,000 allocations take minutes under Miri"
)]
fn arena_chunks_past_the_carve_limit_serve_small_blocks() {
    let heap = SyncHeap::with_checked(false);
    let l = Layout::from_size_align(64, 8).unwrap();
    let n = 300_000;
    let mut blocks: Vec<NonNull<u8>> = Vec::with_capacity(n);
    for i in 0..n {
        blocks.push(heap.allocate(l).unwrap().cast());
        if i % 4096 == 0 || i == n - 1 {
            let st = heap.stats();
            assert!(
                st.mapped <= 2 * st.in_use + (8 << 20),
                "{} bytes mapped for {} in use after {} blocks",
                st.mapped,
                st.in_use,
                i + 1
            );
        }
    }
    for p in blocks {
        // SAFETY: allocated above with `l`.
        unsafe { heap.deallocate(p, l) };
    }
    heap.check().unwrap();
}

#[test]
fn sync_heap_grows_and_shrinks_in_its_arena() {
    let heap = SyncHeap::new();
    let mut v: AVec<u8, &SyncHeap> = AVec::new_in(&heap);
    for i in 0..(if cfg!(miri) { 3000 } else { 300_000 }) {
        v.push(i as u8);
    }
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(&v[..], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    heap.check().unwrap();
    drop(v);
    assert_eq!(heap.stats().in_use, 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a panic with an unwinding message is slow under Miri; the path is covered natively"
)]
fn foreign_pointer_to_sync_heap_panics() {
    let a = SyncHeap::new();
    let b = SyncHeap::new();
    let l = Layout::from_size_align(64, 8).unwrap();
    let p = b.allocate(l).unwrap().cast::<u8>();
    let _warm = a.allocate(l).unwrap();
    // SAFETY: deliberately wrong: p belongs to b; the heap must detect it before touching it.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        a.deallocate(p, l)
    }));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains(&format!("{:#x}", p.addr().get())), "{msg}");
    // SAFETY: p is still b's live block.
    unsafe { b.deallocate(p, l) };
}

/// `SyncHeap::with_checked` chooses checked mode whatever the build: a double free on a
/// checked heap is reported (naming the address) in release builds too, and an unchecked heap
/// says it is unchecked in debug builds too.
#[test]
#[cfg_attr(
    miri,
    ignore = "a panic with an unwinding message is slow under Miri; the path is covered natively"
)]
fn sync_heap_checked_mode_is_chosen_by_the_constructor() {
    let fast = SyncHeap::with_checked(false);
    assert!(!fast.is_checked());
    let l = Layout::from_size_align(48, 8).unwrap();
    let p = fast.allocate(l).unwrap().cast::<u8>();
    // SAFETY: a live block of `fast` with layout `l`.
    unsafe { fast.deallocate(p, l) };
    let safe = SyncHeap::with_checked(true);
    assert!(safe.is_checked());
    let keep = safe.allocate(l).unwrap().cast::<u8>();
    let p = safe.allocate(l).unwrap().cast::<u8>();
    // SAFETY: a live block of `safe` with layout `l`.
    unsafe { safe.deallocate(p, l) };
    // SAFETY: deliberately wrong (a double free): checked mode must detect it before touching
    // the heap.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        safe.deallocate(p, l)
    }));
    let msg = r.expect_err("a double free on a checked SyncHeap went unnoticed");
    let msg = isoheap_testkit::bytes::panic_text(msg);
    assert!(msg.contains(&format!("{:#x}", p.addr().get())), "{msg}");
    safe.check().unwrap();
    // SAFETY: still live.
    unsafe { safe.deallocate(keep, l) };
}

/// The per-thread caches of an unchecked `GlobalHeap` (checked mode bypasses them, so this
/// heap chooses unchecked to test them in debug builds and under Miri too): blocks of every
/// cached size class allocated and freed on several threads, some freed by another thread
/// than the one that allocated them, contents checked on every free; a thread's cache goes
/// back to its arena when the thread exits, so all is accounted for at the end.
#[test]
fn thread_caches_of_an_unchecked_global_heap() {
    use std::alloc::GlobalAlloc;
    static G: isoheap::GlobalHeap = isoheap::GlobalHeap::with_checked(false);
    struct Blk(*mut u8, Layout, u8);
    // SAFETY: the block is owned by this value; the heap is Sync.
    unsafe impl Send for Blk {}
    let rounds = if cfg!(miri) { 40 } else { 5_000 };
    let (tx, rx) = mpsc::channel::<Blk>();
    let check_free = |b: Blk| {
        // SAFETY: a live block of b.1 bytes filled with b.2.
        let s = unsafe { std::slice::from_raw_parts(b.0, b.1.size()) };
        assert!(s.iter().all(|&x| x == b.2), "a cached block changed");
        // SAFETY: allocated from G with this layout.
        unsafe { G.dealloc(b.0, b.1) };
    };
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let tx = tx.clone();
            s.spawn(move || {
                let mut rng = Rng(0xCAC4E + t);
                let mut live: Vec<Blk> = Vec::new();
                for r in 0..rounds {
                    let size = 1 + rng.below(1100);
                    let layout = Layout::from_size_align(size, 1 << rng.below(5)).unwrap();
                    let zero = rng.below(4) == 0;
                    // SAFETY: non-zero sizes.
                    let p = unsafe {
                        if zero {
                            G.alloc_zeroed(layout)
                        } else {
                            G.alloc(layout)
                        }
                    };
                    assert!(!p.is_null());
                    if zero {
                        // SAFETY: a fresh block of `size` bytes.
                        let fresh = unsafe { std::slice::from_raw_parts(p, size) };
                        assert!(fresh.iter().all(|&x| x == 0));
                    }
                    let tag = r as u8;
                    // SAFETY: a fresh block of `size` bytes.
                    unsafe { p.write_bytes(tag, size) };
                    let b = Blk(p, layout, tag);
                    if rng.below(5) == 0 {
                        tx.send(b).unwrap();
                    } else {
                        live.push(b);
                    }
                    if live.len() > 50 {
                        let i = rng.below(live.len());
                        let b = live.swap_remove(i);
                        // SAFETY: as in `check_free`.
                        let s = unsafe { std::slice::from_raw_parts(b.0, b.1.size()) };
                        assert!(s.iter().all(|&x| x == b.2), "a cached block changed");
                        // SAFETY: allocated from G with this layout.
                        unsafe { G.dealloc(b.0, b.1) };
                    }
                }
                for b in live {
                    // SAFETY: as above.
                    unsafe { G.dealloc(b.0, b.1) };
                }
            });
        }
        drop(tx);
        // This thread frees the blocks the others sent (into their arenas, not its cache).
        for b in rx {
            check_free(b);
        }
    });
    // The workers' caches go back when their threads exit (a thread-exit destructor, which
    // may run just after `scope` saw the closures return); this thread's goes back in `stats`.
    let start = std::time::Instant::now();
    while G.heap().stats().in_use != 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "exited threads' caches were not given back: {:?}",
            G.heap().stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    G.heap().check().unwrap();
}
