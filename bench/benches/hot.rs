//! Criterion benches for the hot paths: allocate+deallocate with many free blocks in the heap,
//! grow in place, shrink. `cargo bench -p isoheap-bench --bench hot`.
//!
//! `alloc_free/free_blocks/N` builds a heap (strict mode: no quick lists) with N free blocks
//! scattered between live ones (so the index holds N entries), then measures one allocate +
//! deallocate of a size that fits only in the block at the top of the heap: a scan would cost
//! O(N), the index O(log N).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use isoheap::Heap;
use std::alloc::Layout;
use std::hint::black_box;
use std::ptr::NonNull;

/// A heap with `n` free blocks: holes of 32 bytes between live 16-byte blocks, and at the top
/// a hole of 256 bytes, so a 256-byte request must find the last hole.
fn fragmented(n: usize) -> (Heap, Vec<NonNull<[u8]>>) {
    // Strict mode (no quick lists), so every free goes into the address-ordered index and every
    // allocation searches it: this measures the index, not the O(1) front.
    let heap = Heap::builder()
        .initial(n * 64 + (1 << 20))
        .quick_reuse(false)
        .build()
        .unwrap();
    let small = Layout::from_size_align(32, 8).unwrap();
    let sep = Layout::from_size_align(16, 8).unwrap();
    let big = Layout::from_size_align(256, 8).unwrap();
    let mut holes = Vec::with_capacity(n);
    let mut keep = Vec::with_capacity(n + 1);
    for _ in 0..n {
        holes.push(heap.allocate(small).unwrap());
        keep.push(heap.allocate(sep).unwrap());
    }
    let top = heap.allocate(big).unwrap();
    keep.push(heap.allocate(sep).unwrap());
    for h in holes {
        // SAFETY: allocated above with `small` and not freed.
        unsafe { heap.deallocate(h.cast(), small) };
    }
    // SAFETY: allocated above with `big`.
    unsafe { heap.deallocate(top.cast(), big) };
    (heap, keep)
}

fn alloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free");
    let big = Layout::from_size_align(256, 8).unwrap();
    for n in [100usize, 10_000, 100_000] {
        let (heap, _keep) = fragmented(n);
        assert!(heap.stats().free_blocks >= n);
        g.bench_with_input(BenchmarkId::new("free_blocks", n), &n, |b, _| {
            b.iter(|| {
                let p = heap.allocate(black_box(big)).unwrap();
                // SAFETY: just allocated with `big`.
                unsafe { heap.deallocate(p.cast(), big) };
            })
        });
    }
    g.finish();
}

fn fresh_bump(c: &mut Criterion) {
    c.bench_function("alloc_fresh_heap_1000x64B", |b| {
        let l = Layout::from_size_align(64, 8).unwrap();
        b.iter(|| {
            let heap = Heap::with_capacity(128 << 10).unwrap();
            for _ in 0..1000 {
                black_box(heap.allocate(l).unwrap());
            }
        })
    });
}

fn grow_shrink(c: &mut Criterion) {
    c.bench_function("grow_in_place_64B_to_128B", |b| {
        let heap = Heap::with_capacity(1 << 20).unwrap();
        let small = Layout::from_size_align(64, 8).unwrap();
        let large = Layout::from_size_align(128, 8).unwrap();
        b.iter(|| {
            let p = heap.allocate(small).unwrap();
            // SAFETY: p was allocated with `small`; grown and then freed with its new layout.
            unsafe {
                let q = heap.grow(p.cast(), small, large).unwrap();
                assert_eq!(q.cast::<u8>(), p.cast::<u8>());
                heap.deallocate(q.cast(), large);
            }
        })
    });
    c.bench_function("shrink_4KiB_to_1KiB", |b| {
        let heap = Heap::with_capacity(1 << 20).unwrap();
        let guard = Layout::from_size_align(16, 8).unwrap();
        let large = Layout::from_size_align(4096, 8).unwrap();
        let small = Layout::from_size_align(1024, 8).unwrap();
        b.iter(|| {
            let p = heap.allocate(large).unwrap();
            let g = heap.allocate(guard).unwrap();
            // SAFETY: p allocated with `large`, shrunk then freed with `small`; g with `guard`.
            unsafe {
                let q = heap.shrink(p.cast(), large, small).unwrap();
                heap.deallocate(q.cast(), small);
                heap.deallocate(g.cast(), guard);
            }
        })
    });
}

criterion_group!(benches, alloc_free, fresh_bump, grow_shrink);
criterion_main!(benches);
