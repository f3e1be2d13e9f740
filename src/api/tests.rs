//! Unit tests of the heap front end: `Debug` without side effects, `owns`, `trim`.

use super::*;
use core::fmt::Write;

/// A writer that allocates from the heap it formats: `Debug` must not hold the heap's
/// state across the formatter's calls (Miri flags that as aliasing UB).
struct W<'h>(allocator_api2::vec::Vec<u8, &'h Heap>);

impl Write for W<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `Debug` has no side effects: the blocks on the quick lists stay there (`stats()` would
/// merge them), and what it prints counts them as free.
#[test]
fn debug_leaves_the_quick_lists_alone() {
    let heap = Heap::builder().checked(false).build().unwrap();
    let l = Layout::from_size_align(48, 8).unwrap();
    // More than 32 small frees: the quick lists' table exists and takes the later ones.
    let blocks: std::vec::Vec<_> = (0..64).map(|_| heap.allocate(l).unwrap()).collect();
    for b in blocks {
        // SAFETY: allocated above with `l`, freed once.
        unsafe { heap.deallocate(b.cast(), l) };
    }
    let cached = heap.with_core(|c| c.quick.bytes);
    assert!(cached > 0, "the test needs blocks on the quick lists");
    let text = std::format!("{heap:?}");
    assert_eq!(heap.with_core(|c| c.quick.bytes), cached, "{text}");
    assert!(
        text.contains(&std::format!("cached_before: {cached}")),
        "{text}"
    );
    let s = heap.stats();
    assert_eq!(s.cached_before, cached);
    assert_eq!(heap.with_core(|c| c.quick.bytes), 0, "stats() merges them");
    heap.check().unwrap();
}

/// `owns`: true for every byte of the heap's chunks (blocks live or freed), false for other
/// heaps', the stack, dangling pointers and past a chunk's end; a parent owns its child's
/// chunks, the child not the parent's; a buffer heap owns its buffer's chunk.
#[test]
fn owns_exactly_the_heaps_chunks() {
    let (a, b) = (Heap::new(), Heap::new());
    assert!(!a.owns(core::ptr::null()), "an empty heap owns nothing");
    let l = Layout::from_size_align(100, 8).unwrap();
    let pa = a.allocate(l).unwrap().cast::<u8>();
    let pb = b.allocate(l).unwrap().cast::<u8>();
    assert!(a.owns(pa.as_ptr()) && b.owns(pb.as_ptr()));
    assert!(!a.owns(pb.as_ptr()) && !b.owns(pa.as_ptr()));
    let local = 0u8;
    assert!(!a.owns(&local));
    assert!(!a.owns(core::ptr::dangling()));
    // Every byte of each chunk, and nothing just outside.
    for c in a.with_core(|c| c.chunks().collect::<std::vec::Vec<_>>()) {
        // SAFETY: a live chunk of `a`.
        let len = unsafe { c.len() };
        let base = c.base().as_ptr();
        assert!(a.owns(base) && a.owns(base.wrapping_add(len - 1)));
        assert!(!a.owns(base.wrapping_add(len)) && !a.owns(base.wrapping_sub(1)));
    }
    // SAFETY: allocated above with `l`.
    unsafe { a.deallocate(pa, l) };
    assert!(a.owns(pa.as_ptr()), "a freed block is still in the chunk");
    let child = a.child().unwrap();
    let pc = child.allocate(l).unwrap().cast::<u8>();
    assert!(child.owns(pc.as_ptr()) && a.owns(pc.as_ptr()));
    assert!(!child.owns(pb.as_ptr()) && !b.owns(pc.as_ptr()));
    let pa2 = a.allocate(l).unwrap().cast::<u8>();
    assert!(
        !child.owns(pa2.as_ptr()),
        "the parent's own blocks are not the child's"
    );
    // SAFETY: allocated above with `l`, freed once.
    unsafe {
        child.deallocate(pc, l);
        a.deallocate(pa2, l);
        b.deallocate(pb, l);
    }
    drop(child);
    let mut buf = std::vec![core::mem::MaybeUninit::<u8>::uninit(); 4096];
    let range = buf.as_ptr_range();
    let bh = Heap::from_buffer(&mut buf).unwrap();
    let pbuf = bh.allocate(l).unwrap().cast::<u8>();
    assert!(bh.owns(pbuf.as_ptr()) && !a.owns(pbuf.as_ptr()) && !bh.owns(pb.as_ptr()));
    assert!(!bh.owns(range.end.cast()), "past the buffer");
    // SAFETY: allocated above with `l`.
    unsafe { bh.deallocate(pbuf, l) };
}

/// `owns` on a chunk mapped on its own (larger than the provider carves), whose last window
/// of the page map reaches past its end: true up to its last byte, false past it, though
/// the page map names the chunk there.
#[test]
#[cfg(feature = "mmap")]
fn owns_ends_where_a_large_chunk_ends() {
    let heap = Heap::new();
    let l = Layout::from_size_align(crate::region::provider::MAX_CARVE + 4096, 8).unwrap();
    let p = heap.allocate(l).unwrap().cast::<u8>();
    let big = heap
        .with_core(|c| c.chunks().collect::<std::vec::Vec<_>>())
        .into_iter()
        // SAFETY: live chunks of `heap`.
        .find(|c| unsafe { c.len() } > crate::region::provider::MAX_CARVE)
        .expect("a chunk mapped on its own");
    // SAFETY: a live chunk of `heap`.
    let (base, len) = (big.base().as_ptr(), unsafe { big.len() });
    assert!(
        !len.is_multiple_of(crate::region::PAGED_ALIGN),
        "the last window is partial"
    );
    assert!(heap.owns(base) && heap.owns(base.wrapping_add(len - 1)));
    assert!(!heap.owns(base.wrapping_add(len)), "past the chunk's end");
    // SAFETY: allocated above with `l`.
    unsafe { heap.deallocate(p, l) };
}

/// A chunk given back and carved again for another heap belongs to that heap from then
/// on: `owns` reads the owner the provider recorded, not a header the old owner wrote.
#[test]
#[cfg(feature = "mmap")]
fn owns_follows_a_chunk_to_its_next_heap() {
    let l = Layout::from_size_align(64 << 10, 8).unwrap();
    let keep = Heap::new();
    let kept = keep.allocate(l).unwrap();
    let a = Heap::new();
    let p = a.allocate(l).unwrap().cast::<u8>();
    assert!(a.owns(p.as_ptr()) && !keep.owns(p.as_ptr()));
    drop(a);
    assert!(!keep.owns(p.as_ptr()), "a freed chunk is nobody's");
    // Heaps until one gets the chunk back (the provider hands out the lowest free block of
    // the size first, so the first one does unless another test took it meanwhile).
    let mut heaps = std::vec::Vec::new();
    for _ in 0..64 {
        let b = Heap::new();
        let q = b.allocate(l).unwrap();
        if b.owns(p.as_ptr()) {
            assert!(!keep.owns(p.as_ptr()));
            // SAFETY: allocated above with `l`.
            unsafe { b.deallocate(q.cast(), l) };
            // SAFETY: allocated above with `l`.
            unsafe { keep.deallocate(kept.cast(), l) };
            return;
        }
        heaps.push((b, q));
    }
    panic!("no new heap got the freed chunk back");
}

/// A chunk a live heap gives back (here by `reset` with nothing kept warm) goes to the
/// thread's cache of chunks: from then on the heap does not own it, though it lives on (its
/// identity does, so the cache must not keep the provider's entries naming it). A dropped
/// heap's chunks keep theirs until reused, and no live heap owns them.
#[test]
#[cfg(feature = "mmap")]
fn owns_is_false_for_a_chunk_gone_to_the_thread_cache() {
    let l = Layout::from_size_align(3000, 8).unwrap();
    let mut a = Heap::builder().warm(0).build().unwrap();
    let p = a.allocate(l).unwrap().cast::<u8>();
    assert!(a.owns(p.as_ptr()));
    a.reset();
    assert!(
        !a.owns(p.as_ptr()),
        "a chunk given back by reset is not the heap's"
    );
    let q = a.allocate(l).unwrap().cast::<u8>();
    assert!(a.owns(q.as_ptr()));
    let other = Heap::new();
    let r = other.allocate(Layout::new::<u64>()).unwrap().cast::<u8>();
    drop(a);
    assert!(
        !other.owns(q.as_ptr()),
        "a dropped heap's chunk is not another's"
    );
    // A heap that takes the chunk again owns it.
    let b = Heap::new();
    let s = b.allocate(l).unwrap().cast::<u8>();
    assert!(b.owns(s.as_ptr()) && !other.owns(s.as_ptr()));
    // SAFETY: allocated above with these layouts.
    unsafe {
        b.deallocate(s, l);
        other.deallocate(r, Layout::new::<u64>());
    }
}

/// `owns` on pointers into chunks and segments other threads make and drop at the same
/// time, as fast as they can: it reads only the page map and the provider's tables (the
/// segments it reads are not unmapped under it), so it never faults and never claims a
/// chunk of another heap.
#[test]
#[cfg(feature = "mmap")]
fn owns_while_other_threads_drop_their_heaps() {
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    let seen: Arc<[AtomicUsize; 64]> = Arc::new(core::array::from_fn(|_| AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    // Under Miri (slow to map and to switch threads): one round, a few passes of lookups.
    let (rounds, passes) = if cfg!(miri) {
        (1, 4)
    } else {
        (400, usize::MAX)
    };
    let makers: std::vec::Vec<_> = (0..2)
        .map(|t| {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for r in 0..rounds {
                    let heap = Heap::new();
                    // Chunks of up to half a segment, so segments empty and go back.
                    for i in 0..6usize {
                        let size = (crate::region::provider::MAX_CARVE >> (i % 3)) - 1024;
                        let l = Layout::from_size_align(size, 8).unwrap();
                        let p = heap.allocate(l).unwrap();
                        seen[(t * 31 + r * 7 + i) % 64].store(p.addr().get(), Relaxed);
                    }
                }
                stop.store(true, Relaxed);
            })
        })
        .collect();
    let mine = Heap::new();
    let kept = mine.allocate(Layout::new::<u64>()).unwrap();
    let mut pass = 0;
    while !stop.load(Relaxed) && pass < passes {
        pass += 1;
        for s in seen.iter() {
            let at: *const u8 = core::ptr::without_provenance(s.load(Relaxed));
            assert!(!mine.owns(at) && !mine.owns(at.wrapping_add(100)));
        }
    }
    for m in makers {
        m.join().unwrap();
    }
    assert!(mine.owns(kept.cast::<u8>().as_ptr()));
    // SAFETY: allocated above for a u64.
    unsafe { mine.deallocate(kept.cast(), Layout::new::<u64>()) };
}

/// `trim` gives the free pages back (on Linux, not under Miri) and the heap stays whole:
/// blocks in use keep their contents, freed memory is reused (reading as zero where it was
/// given back), and a checked heap sees no write after free in memory that went back.
#[test]
fn trim_gives_free_pages_back() {
    for checked in [false, true] {
        let heap = Heap::builder()
            .checked(checked)
            .give_back(usize::MAX)
            .build()
            .unwrap();
        let small = Layout::from_size_align(64, 8).unwrap();
        let keep = heap.allocate(small).unwrap().cast::<u8>();
        // SAFETY: a live block of 64 bytes.
        unsafe { keep.write_bytes(0xA5, 64) };
        // Smaller under Miri, which gives nothing back (no madvise) and reads every byte.
        let big_len = if cfg!(miri) { 8 << 10 } else { 256 << 10 };
        let big = Layout::from_size_align(big_len, 16).unwrap();
        let blocks: std::vec::Vec<_> = (0..8)
            .map(|_| {
                let b = heap.allocate(big).unwrap().cast::<u8>();
                // SAFETY: a live block of `big.size()` bytes.
                unsafe { b.write_bytes(1, big.size()) };
                b
            })
            .collect();
        // Free every other block first (free spans between used ones), then the rest
        // except the last (the frontier retreats over the tail).
        for (i, b) in blocks.iter().enumerate() {
            if i % 2 == 0 {
                // SAFETY: allocated above with `big`, freed once.
                unsafe { heap.deallocate(*b, big) };
            }
        }
        let smalls: std::vec::Vec<_> = (0..40).map(|_| heap.allocate(small).unwrap()).collect();
        for p in smalls {
            // SAFETY: allocated above with `small`, freed once (onto the quick lists).
            unsafe { heap.deallocate(p.cast(), small) };
        }
        let before = heap.stats();
        let released = heap.trim();
        heap.check().unwrap();
        if cfg!(all(target_os = "linux", not(miri))) {
            assert!(released >= 4 * big_len - 4 * 8192, "{checked}: {released}");
        } else {
            assert_eq!(released, 0);
        }
        assert_eq!(heap.stats().mapped, before.mapped, "chunks stay mapped");
        // Free blocks are given back again (the heap does not record which free pages went
        // back), the tail above the frontier only once.
        assert!(heap.trim() <= released);
        // SAFETY: the live block of 64 bytes written above.
        let kept = unsafe { core::slice::from_raw_parts(keep.as_ptr(), 64) };
        assert!(kept.iter().all(|&x| x == 0xA5));
        // Reuse all of it: zeroed allocations read as zero, small ones pass checked mode.
        let again: std::vec::Vec<_> = (0..4).map(|_| heap.allocate_zeroed(big).unwrap()).collect();
        for b in &again {
            // SAFETY: a live block of at least `big.size()` bytes.
            assert!(unsafe { &b.as_ref()[..big.size()] }.iter().all(|&x| x == 0));
        }
        let smalls: std::vec::Vec<_> = (0..40).map(|_| heap.allocate(small).unwrap()).collect();
        heap.check().unwrap();
        // SAFETY: each block was allocated above with its layout and is freed once.
        unsafe {
            for p in smalls {
                heap.deallocate(p.cast(), small);
            }
            for b in again {
                heap.deallocate(b.cast(), big);
            }
            for (i, b) in blocks.into_iter().enumerate() {
                if i % 2 == 1 {
                    heap.deallocate(b, big);
                }
            }
            heap.deallocate(keep, small);
        }
        heap.check().unwrap();
    }
}

/// A heap over a buffer and a child heap have nothing to give back to the OS.
#[test]
fn trim_of_buffer_and_child_heaps_is_zero() {
    let mut buf = std::vec![core::mem::MaybeUninit::<u8>::uninit(); 64 << 10];
    let bh = Heap::from_buffer(&mut buf).unwrap();
    let l = Layout::from_size_align(20 << 10, 16).unwrap();
    let p = bh.allocate(l).unwrap();
    // SAFETY: allocated above with `l`.
    unsafe { bh.deallocate(p.cast(), l) };
    assert_eq!(bh.trim(), 0);
    bh.check().unwrap();
    let parent = Heap::new();
    let child = parent.child().unwrap();
    let p = child.allocate(l).unwrap();
    // SAFETY: allocated above with `l`.
    unsafe { child.deallocate(p.cast(), l) };
    assert_eq!(child.trim(), 0);
    child.check().unwrap();
    parent.check().unwrap();
}

#[test]
fn debug_into_a_writer_on_the_same_heap() {
    let heap = Heap::new();
    let mut w = W(allocator_api2::vec::Vec::new_in(&heap));
    write!(w, "{heap:?}").unwrap();
    let text = core::str::from_utf8(&w.0).unwrap();
    assert!(text.starts_with("Heap { stats: Stats {"), "{text}");
    heap.check().unwrap();
}
