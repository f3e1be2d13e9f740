//! Criterion benches of what a heap costs (the per-collection and per-request uses), side by
//! side with the process allocator and bumpalo in one run:
//! `cargo bench -p isoheap-bench --bench cost`.
//!
//! - `heap_per_collection/{isoheap,isoheap_child,system}/N`: make a heap (a child of a
//!   long-lived parent for `isoheap_child`; nothing for `system`, glibc malloc here), push `N`
//!   `u64`s into a `Vec` in it, drop both.
//! - `request/{isoheap_reset,isoheap_free_each,bumpalo_reset}`: one request of 2,000 objects
//!   (16..256 B, a fixed mix), then the heap reset (or every object freed, for `free_each`).
//!
//! The heap_cost binary and the comparison's `request` rows measure the same costs with
//! interleaved repetitions; these benches give Criterion's confidence intervals.

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use isoheap::Heap;
use std::alloc::Layout;
use std::hint::black_box;
use std::ptr::NonNull;

fn push_n<A: Allocator>(a: A, n: u64) {
    let mut v = AVec::new_in(a);
    for i in 0..n {
        v.push(i);
    }
    black_box(&v);
}

fn heap_per_collection(c: &mut Criterion) {
    let mut g = c.benchmark_group("heap_per_collection");
    let parent = Heap::new();
    for n in [8u64, 64, 512] {
        g.bench_with_input(BenchmarkId::new("isoheap", n), &n, |b, &n| {
            b.iter(|| {
                let heap = Heap::new();
                push_n(&heap, n);
            })
        });
        g.bench_with_input(BenchmarkId::new("isoheap_child", n), &n, |b, &n| {
            b.iter(|| {
                let child = parent.child().expect("child");
                push_n(&*child, n);
            })
        });
        g.bench_with_input(BenchmarkId::new("system", n), &n, |b, &n| {
            b.iter(|| push_n(Global, n))
        });
    }
    g.finish();
}

/// The sizes of one request's objects: 16..256 B, a fixed mix.
fn sizes() -> std::vec::Vec<usize> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            16 + (x % 241) as usize
        })
        .collect()
}

fn request(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    let sizes = sizes();
    let mut live: std::vec::Vec<(NonNull<u8>, Layout)> = std::vec::Vec::with_capacity(2000);
    let mut heap = Heap::new();
    g.bench_function("isoheap_reset", |b| {
        b.iter(|| {
            for &s in &sizes {
                let l = Layout::from_size_align(s, 8).unwrap();
                black_box(heap.allocate(l).expect("memory"));
            }
            heap.reset();
        })
    });
    g.bench_function("isoheap_free_each", |b| {
        b.iter(|| {
            for &s in &sizes {
                let l = Layout::from_size_align(s, 8).unwrap();
                live.push((heap.allocate(l).expect("memory").cast(), l));
            }
            for (p, l) in live.drain(..) {
                // SAFETY: allocated just above from `heap` with `l`, freed once.
                unsafe { heap.deallocate(p, l) };
            }
        })
    });
    let mut bump = bumpalo::Bump::new();
    g.bench_function("bumpalo_reset", |b| {
        b.iter(|| {
            for &s in &sizes {
                let l = Layout::from_size_align(s, 8).unwrap();
                black_box(bump.alloc_layout(l));
            }
            bump.reset();
        })
    });
    g.finish();
}

criterion_group!(benches, heap_per_collection, request);
criterion_main!(benches);
