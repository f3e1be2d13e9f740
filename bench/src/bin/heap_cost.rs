//! What a heap costs: a heap per collection against the same collection in the process
//! allocator (glibc malloc here), side by side in one run.
//!
//! `cargo run --release -p isoheap-bench --bin heap_cost` prints, median of 5 interleaved
//! repetitions:
//! - **one at a time**: make a heap, push 1..512 `u64`s (log-uniform) into a `Vec` in it, drop
//!   both; against the same `Vec` in glibc malloc (ns per collection);
//! - **1,000 alive**: 1,000 such collections live, each round one chosen at random is dropped
//!   and made again with a new length (ns per round);
//! - **child heap**: the same as one at a time, with the collection in a child of a long-lived
//!   parent heap (`Heap::child`);
//! - **resident memory per live heap** holding one 128-byte `Vec` (10,000 of them; from
//!   `/proc/self/statm`), against 10,000 such `Vec`s in glibc;
//! - `size_of::<Heap>()`.

use allocator_api2::vec::Vec as AVec;
use isoheap::Heap;
use std::hint::black_box;
use std::time::Instant;

#[path = "../xorshift.rs"]
mod xorshift;
use xorshift::Rng;

trait Lens {
    fn len(&mut self) -> usize;
}

impl Lens for Rng {
    /// Log-uniform 1..=512.
    fn len(&mut self) -> usize {
        let r = self.next();
        let e = (r % 10) as u32; // 2^0 .. 2^9
        ((1usize << e) + (r >> 16) as usize % (1usize << e)).min(512)
    }
}

const ONE_AT_A_TIME: usize = 200_000;
const ALIVE: usize = 1_000;
const ROUNDS: usize = 200_000;

/// One collection at a time, each in a heap `with_heap` lends for it.
fn one_at_a_time_in(mut with_heap: impl FnMut(&mut dyn FnMut(&Heap))) -> f64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    for _ in 0..ONE_AT_A_TIME {
        let len = rng.len() as u64;
        with_heap(&mut |heap| {
            let mut v = AVec::new_in(heap);
            for i in 0..len {
                v.push(i);
            }
            black_box(&v);
        });
    }
    t.elapsed().as_nanos() as f64 / ONE_AT_A_TIME as f64
}

fn one_at_a_time_iso() -> f64 {
    one_at_a_time_in(|f| f(&Heap::new()))
}

fn one_at_a_time_child() -> f64 {
    let parent = Heap::new();
    one_at_a_time_in(|f| f(&parent.child().expect("a child")))
}

fn one_at_a_time_glibc() -> f64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    for _ in 0..ONE_AT_A_TIME {
        let mut v = Vec::new();
        for i in 0..rng.len() as u64 {
            v.push(i);
        }
        black_box(&v);
    }
    t.elapsed().as_nanos() as f64 / ONE_AT_A_TIME as f64
}

/// A collection in a heap of its own; the `Vec` is dropped before the heap.
struct Owned {
    v: std::mem::ManuallyDrop<AVec<u64, &'static Heap>>,
    heap: *mut Heap,
}

impl Owned {
    fn new(len: usize) -> Owned {
        let heap = Box::into_raw(Box::new(Heap::new()));
        // SAFETY: the heap lives until `drop` below, which drops the Vec first: the
        // `'static` borrow never outlives it.
        let h: &'static Heap = unsafe { &*heap };
        let mut v = AVec::new_in(h);
        for i in 0..len as u64 {
            v.push(i);
        }
        Owned {
            v: std::mem::ManuallyDrop::new(v),
            heap,
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before its heap; the heap came from Box::into_raw.
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.v);
            drop(Box::from_raw(self.heap));
        }
    }
}

fn alive_iso() -> f64 {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut live: Vec<Owned> = (0..ALIVE).map(|_| Owned::new(rng.len())).collect();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        let i = rng.next() as usize % ALIVE;
        live[i] = Owned::new(rng.len());
    }
    let ns = t.elapsed().as_nanos() as f64 / ROUNDS as f64;
    black_box(&live);
    ns
}

fn alive_glibc() -> f64 {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let make = |len: usize| -> Vec<u64> {
        let mut v = Vec::new();
        for i in 0..len as u64 {
            v.push(i);
        }
        v
    };
    let mut live: Vec<Vec<u64>> = (0..ALIVE).map(|_| make(rng.len())).collect();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        let i = rng.next() as usize % ALIVE;
        live[i] = make(rng.len());
    }
    let ns = t.elapsed().as_nanos() as f64 / ROUNDS as f64;
    black_box(&live);
    ns
}

/// Resident bytes of this process.
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const RSS_HEAPS: usize = 10_000;

/// Resident bytes per live heap holding one 128-byte Vec (heap struct included, boxed).
fn rss_iso() -> f64 {
    let before = rss();
    let live: Vec<Owned> = (0..RSS_HEAPS).map(|_| Owned::new(16)).collect();
    let after = rss();
    black_box(&live);
    (after.saturating_sub(before)) as f64 / RSS_HEAPS as f64
}

fn rss_glibc() -> f64 {
    let before = rss();
    let live: Vec<Vec<u64>> = (0..RSS_HEAPS)
        .map(|_| {
            let mut v = Vec::with_capacity(16);
            v.extend(0..16u64);
            v
        })
        .collect();
    let after = rss();
    black_box(&live);
    (after.saturating_sub(before)) as f64 / RSS_HEAPS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Resident memory first, in a fresh process (glibc first, so that neither reuses memory
    // the other freed): measured once each.
    let g = rss_glibc();
    let i = rss_iso();
    let reps = 5;
    type Row = (&'static str, fn() -> f64, fn() -> f64);
    let rows: [Row; 3] = [
        (
            "one at a time (ns per collection)",
            one_at_a_time_iso,
            one_at_a_time_glibc,
        ),
        (
            "one at a time in a child heap (ns per collection)",
            one_at_a_time_child,
            one_at_a_time_glibc,
        ),
        ("1,000 alive (ns per round)", alive_iso, alive_glibc),
    ];
    println!("| what | isoheap | glibc | isoheap / glibc |");
    println!("|---|---:|---:|---:|");
    for (name, iso, glibc) in rows {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            a.push(iso());
            b.push(glibc());
        }
        let (a, b) = (median(a), median(b));
        println!("| {name} | {a:.1} | {b:.1} | {:.2}x |", a / b);
    }
    println!(
        "| resident bytes per live collection (one 128-byte Vec) | {i:.0} | {g:.0} | {:.2}x |",
        i / g
    );
    println!(
        "| `size_of::<Heap>()` | {} | - | - |",
        std::mem::size_of::<Heap>()
    );
}
