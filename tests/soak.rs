//! Soak: memory stays bounded under any mix of valid calls. Threads run a randomized mix of
//! allocation patterns known to grow allocators' mappings while little is in use (big
//! temporaries then small keepers, sawtooth growth, producer/consumer across threads,
//! short-lived threads, realloc ladders, alignments up to 1 MiB) against three heaps in turn:
//! the process allocator (`GlobalHeap`, so std's own allocations take part too), a `SyncHeap`
//! shared by the threads, and a plain `Heap` on one thread. A checker asserts at every
//! checkpoint that
//!
//! ```text
//! mapped <= 2 * peak_in_use + F_MAPPED     (the heap's own stats)
//! RSS    <= RSS at start + 2 * peak_in_use + F_RSS
//! ```
//!
//! and `check()` holds. `F_MAPPED` is the arenas' fixed footprint: one 4 MiB unit per arena,
//! plus one big block's chunk per thread in flight. A binary of its own (it installs the global
//! allocator and reads the process's RSS). `ISOHEAP_SOAK_SECS` sets the time per heap (default
//! 10 s; CI runs the default, the long run 600).

#![cfg(all(target_os = "linux", not(miri)))]

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use isoheap::{ARENAS, GlobalHeap, Heap, Stats, SyncHeap};
use isoheap_testkit::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: GlobalHeap = GlobalHeap::new();

const THREADS: usize = 4;
/// The largest big temporary (8 MiB) plus the largest aligned request (2 MiB at 1 MiB).
const BIG: usize = 10 << 20;
const F_MAPPED: usize = ARENAS * (4 << 20) + THREADS * BIG;
const F_RSS: usize = 32 << 20;

fn secs() -> u64 {
    std::env::var("ISOHEAP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Resident bytes of this process (`/proc/self/statm`, second field).
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    s.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 4096
}

/// What a soak measured.
#[derive(Debug, Default)]
struct Figures {
    ops: u64,
    peak_in_use: usize,
    peak_mapped: usize,
    peak_rss: usize,
    checkpoints: u64,
}

/// A byte-vector in heap `A`, with a pattern that is checked before it is dropped.
type Bytes<A> = AVec<u8, A>;

fn filled<A: Allocator>(len: usize, tag: u8, a: A) -> Bytes<A> {
    let mut v = AVec::with_capacity_in(len, a);
    v.resize(len, tag);
    v
}

fn verify<A: Allocator>(v: &Bytes<A>, tag: u8) {
    assert!(v.iter().all(|&b| b == tag), "a block lost its contents");
}

/// One step of a randomly chosen single-thread pattern on heap `a`; returns the calls made
/// (about).
fn step<A: Allocator + Clone>(
    rng: &mut Rng,
    a: &A,
    keepers: &mut std::collections::VecDeque<Bytes<A>>,
) -> u64 {
    match rng.below(4) {
        // A big temporary buffer, then a small long-lived object.
        0 => {
            let big = filled(rng.range(1 << 20, 8 << 20), 7, a.clone());
            verify(&big, 7);
            drop(big);
            keepers.push_back(filled(rng.range(8, 64), 9, a.clone()));
            2
        }
        // Sawtooth: a vector grows by pushes to a random length, then goes.
        1 => {
            let n = rng.range(1, 200_000);
            let mut v: AVec<u32, A> = AVec::new_in(a.clone());
            for i in 0..n {
                v.push(i as u32);
            }
            assert_eq!(v.len(), n);
            1 + (n as u64).ilog2() as u64
        }
        // A realloc ladder: a string-like buffer grown by appends, shrunk to fit, dropped.
        2 => {
            let target = rng.range(1, 1 << 20);
            let mut s: Bytes<A> = AVec::new_in(a.clone());
            while s.len() < target {
                s.extend_from_slice(b"0123456789abcdef0123456789");
            }
            s.shrink_to_fit();
            (target as u64 / 26 + 1).ilog2() as u64 + 2
        }
        // Alignments up to 1 MiB.
        _ => {
            let align = 1usize << rng.range(4, 21);
            let size = rng.range(1, 2 << 20);
            let l = std::alloc::Layout::from_size_align(size, align).unwrap();
            let p = a.allocate(l).expect("an aligned block");
            assert!(p.cast::<u8>().as_ptr().addr().is_multiple_of(align));
            // SAFETY: allocated just above with `l`.
            unsafe { a.deallocate(p.cast(), l) };
            keepers.push_back(filled(rng.range(8, 256), 9, a.clone()));
            1
        }
    }
}

/// A channel shared by the threads: blocks sent there are freed by whichever thread takes them.
type Cross<A> = (
    mpsc::SyncSender<Bytes<A>>,
    Arc<Mutex<mpsc::Receiver<Bytes<A>>>>,
);

/// One step of a cross-thread pattern: producer/consumer, or a short-lived thread that
/// allocates, hands some of it to the others and frees the rest.
fn cross_step<A: Allocator + Clone + Send + 'static>(
    rng: &mut Rng,
    a: &A,
    cross: &Cross<A>,
) -> u64 {
    let (tx, rx) = cross;
    if rng.below(2) == 0 {
        let _ = tx.try_send(filled(rng.range(16, 64 << 10), 3, a.clone()));
        if let Ok(v) = rx.lock().unwrap().try_recv() {
            verify(&v, 3);
        }
        return 2;
    }
    let (tx, a2) = (tx.clone(), a.clone());
    std::thread::spawn(move || {
        let mut local: std::vec::Vec<Bytes<A>> = (0..64)
            .map(|i| filled(16 + i * 24, 3, a2.clone()))
            .collect();
        for v in local.drain(..).step_by(4) {
            let _ = tx.try_send(v);
        }
    })
    .join()
    .unwrap();
    64
}

/// Runs the mix on `threads` threads against `a` for `secs()`, while the checker compares
/// `stats()` with the bound. Returns the figures.
fn soak<A: Allocator + Clone + Send + Sync + 'static>(
    name: &str,
    a: A,
    threads: usize,
    scoped: bool,
    stats: impl Fn() -> Stats + Sync,
    check: impl Fn() -> Result<(), isoheap::CheckError> + Sync,
) -> Figures {
    let rss0 = rss();
    let until = Instant::now() + Duration::from_secs(secs());
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let (tx, rx) = mpsc::sync_channel::<Bytes<A>>(256);
    let cross: Cross<A> = (tx, Arc::new(Mutex::new(rx)));
    let mut fig = Figures::default();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (a, cross, stop, ops) = (a.clone(), cross.clone(), &stop, &ops);
            s.spawn(move || {
                let mut rng = Rng(0x50A4 + t as u64);
                let mut keepers = std::collections::VecDeque::new();
                while !stop.load(Relaxed) {
                    // With `scoped`, half the steps run in a scope of their own; what they
                    // keep (and send to other threads) outlives it.
                    let scope = (scoped && rng.below(2) == 0).then(|| GLOBAL.scope());
                    let n = if rng.below(3) == 0 {
                        cross_step(&mut rng, &a, &cross)
                    } else {
                        step(&mut rng, &a, &mut keepers)
                    };
                    drop(scope);
                    while keepers.len() > 2000 {
                        verify(&keepers.pop_front().unwrap(), 9);
                    }
                    ops.fetch_add(n, Relaxed);
                }
            });
        }
        // The checker. If one of its checks fails, the workers must stop too, or the scope
        // would wait for them for ever instead of reporting the failure.
        struct StopOnExit<'a>(&'a AtomicBool);
        impl Drop for StopOnExit<'_> {
            fn drop(&mut self) {
                self.0.store(true, Relaxed);
            }
        }
        let _stop_on_exit = StopOnExit(&stop);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            let st = stats();
            let r = rss();
            fig.checkpoints += 1;
            fig.peak_in_use = fig.peak_in_use.max(st.peak_in_use);
            fig.peak_mapped = fig.peak_mapped.max(st.mapped);
            fig.peak_rss = fig.peak_rss.max(r);
            let bound = 2 * st.peak_in_use;
            assert!(
                st.mapped <= bound + F_MAPPED,
                "{name}: mapped {} > 2 x peak in use {} + {F_MAPPED}",
                st.mapped,
                st.peak_in_use
            );
            assert!(
                r <= rss0 + bound + F_RSS,
                "{name}: RSS {r} > start {rss0} + 2 x peak in use {} + {F_RSS}",
                st.peak_in_use
            );
            if fig.checkpoints.is_multiple_of(10) {
                check().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        stop.store(true, Relaxed);
    });
    // Drain what is still in flight; everything must still check.
    while cross.1.lock().unwrap().try_recv().is_ok() {}
    check().unwrap_or_else(|e| panic!("{name}: {e}"));
    fig.ops = ops.load(Relaxed);
    println!(
        "soak {name}: {} s, {} operations, peak in use {} B, peak mapped {} B, peak RSS {} B \
         (start {rss0} B), {} checkpoints",
        secs(),
        fig.ops,
        fig.peak_in_use,
        fig.peak_mapped,
        fig.peak_rss,
        fig.checkpoints
    );
    fig
}

/// The heaps one after another, in one test: the RSS bound needs the process to itself.
#[test]
fn memory_stays_bounded_under_any_pattern() {
    // The process allocator: the threads' std allocations and the blocks of the mix.
    let g = soak(
        "GlobalHeap",
        Global,
        THREADS,
        false,
        || GLOBAL.heap().stats(),
        || GLOBAL.heap().check(),
    );
    assert!(g.ops > 0);
    // The same with half the steps in scopes (`GlobalHeap::scope`): the arenas' and the
    // scope heaps' counters together.
    let sc = soak(
        "GlobalHeap with scopes",
        Global,
        THREADS,
        true,
        || {
            let (mut a, b) = (GLOBAL.heap().stats(), GLOBAL.scope_stats());
            a.in_use += b.in_use;
            a.mapped += b.mapped;
            a.peak_in_use += b.peak_in_use;
            a
        },
        || GLOBAL.heap().check(),
    );
    assert!(sc.ops > 0);
    // A SyncHeap shared by the threads.
    let heap: &'static SyncHeap = Box::leak(Box::new(SyncHeap::new()));
    let s = soak(
        "SyncHeap",
        heap,
        THREADS,
        false,
        || heap.stats(),
        || heap.check(),
    );
    assert!(s.ops > 0);
    // A plain Heap on one thread (`Heap` is not `Sync`: the cross-thread patterns are off).
    let h = Heap::new();
    let f = soak_one("Heap", &h);
    assert!(f > 0);
}

/// The mix on one thread against a `Heap`, checked every 100 ms.
fn soak_one(name: &str, heap: &Heap) -> u64 {
    let rss0 = rss();
    let until = Instant::now() + Duration::from_secs(secs());
    let mut rng = Rng(0x50A5);
    let mut keepers = std::collections::VecDeque::new();
    let mut ops = 0u64;
    let mut last = Instant::now();
    let (mut peak_mapped, mut peak_rss) = (0, 0);
    while Instant::now() < until {
        ops += step(&mut rng, &heap, &mut keepers);
        while keepers.len() > 2000 {
            verify(&keepers.pop_front().unwrap(), 9);
        }
        if last.elapsed() >= Duration::from_millis(100) {
            last = Instant::now();
            let st = heap.stats();
            let r = rss();
            (peak_mapped, peak_rss) = (peak_mapped.max(st.mapped), peak_rss.max(r));
            assert!(
                st.mapped <= 2 * st.peak_in_use + 2 * BIG,
                "{name}: mapped {} for peak in use {}",
                st.mapped,
                st.peak_in_use
            );
            assert!(
                r <= rss0 + 2 * st.peak_in_use + F_RSS,
                "{name}: RSS {r} > start {rss0} + 2 x peak in use {} + {F_RSS}",
                st.peak_in_use
            );
            heap.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    drop(keepers);
    heap.check().unwrap();
    println!(
        "soak {name}: {} s, {ops} operations, peak in use {} B, peak mapped {peak_mapped} B, \
         peak RSS {peak_rss} B (start {rss0} B)",
        secs(),
        heap.stats().peak_in_use
    );
    ops
}
