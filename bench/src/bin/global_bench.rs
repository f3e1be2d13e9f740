//! Thread scaling of the thread-safe heap, against glibc malloc and mimalloc, side by side.
//!
//! `cargo run --release -p isoheap-bench --bin global_bench` runs, with 1 and 2 threads,
//! calling each allocator's `GlobalAlloc` methods directly, and prints million allocator calls
//! per second (median of 5, subjects interleaved):
//! - churn (random allocate/free, sizes 8 B..4 KiB, 10,000 live blocks per thread, a quarter
//!   of the frees done by another thread);
//! - the multi-threaded patterns of well-known allocator benchmarks, re-implemented from their
//!   published descriptions: larson (server simulation: blocks freed by other, newly created
//!   threads), xmalloc (producer/consumer) and cache-scratch (false sharing).
//!
//! `cargo run --release -p isoheap-bench --bin global_bench -- std` instead runs a std-heavy
//! workload (collections, strings, formatting, channels, a parallel sort on 4 threads, serde_json
//! documents built, serialized and parsed on 4 threads, 300 regexes compiled and matched, vectors
//! of strings freed by another thread) with the
//! program's global allocator, which is `isoheap::GlobalHeap` unless the binary is built with
//! `RUSTFLAGS="--cfg system_global"` (glibc) or `RUSTFLAGS="--cfg mimalloc_global"`
//! (mimalloc); time it with `/usr/bin/time -v` to compare time and peak memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Instant;

#[cfg(not(any(system_global, mimalloc_global)))]
#[global_allocator]
static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();

#[cfg(mimalloc_global)]
#[global_allocator]
static GLOBAL_MI: mimalloc::MiMalloc = mimalloc::MiMalloc;

static ISO: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../xorshift.rs"]
mod xorshift;
use xorshift::Rng;

trait Sizes {
    fn size(&mut self) -> usize;
}

impl Sizes for Rng {
    /// 8 B..4 KiB, log-uniform by powers of two.
    fn size(&mut self) -> usize {
        let r = self.next();
        let e = 3 + (r % 9) as u32;
        (1usize << e) + ((r >> 8) as usize % (1usize << e))
    }
}

struct Ptr(*mut u8, Layout);
// SAFETY: a block handed between threads of the benchmark, owned by exactly one at a time.
unsafe impl Send for Ptr {}

const LIVE: usize = 10_000;
const OPS: usize = 1_000_000;

fn churn(a: &'static (dyn GlobalAlloc + Sync), threads: usize) -> f64 {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<Ptr>()).unzip();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (t, rx) in rxs.into_iter().enumerate() {
            let to = txs[(t + 1) % threads].clone();
            s.spawn(move || {
                let mut rng = Rng(0x1234_5678 + t as u64);
                let mut live: Vec<Ptr> = Vec::with_capacity(LIVE);
                for i in 0..OPS {
                    if live.len() < LIVE || rng.next().is_multiple_of(2) {
                        let l = Layout::from_size_align(rng.size(), 8).unwrap();
                        // SAFETY: non-zero size.
                        let p = unsafe { a.alloc(l) };
                        assert!(!p.is_null());
                        live.push(Ptr(p, l));
                    } else {
                        let k = rng.next() as usize % live.len();
                        let b = live.swap_remove(k);
                        if threads > 1 && rng.next().is_multiple_of(4) {
                            let _ = to.send(b);
                        } else {
                            // SAFETY: allocated by `a` with this layout.
                            unsafe { a.dealloc(b.0, b.1) };
                        }
                    }
                    if i % 256 == 0 {
                        while let Ok(b) = rx.try_recv() {
                            // SAFETY: allocated by `a` (in another thread) with this layout.
                            unsafe { a.dealloc(b.0, b.1) };
                        }
                    }
                }
                drop(to);
                for b in live {
                    // SAFETY: allocated by `a` with this layout.
                    unsafe { a.dealloc(b.0, b.1) };
                }
                while let Ok(b) = rx.recv() {
                    // SAFETY: as above.
                    unsafe { a.dealloc(b.0, b.1) };
                }
            });
        }
        drop(txs);
    });
    (threads * OPS) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// After Larson and Krishnan's server simulation (mimalloc-bench's larsonN; from its published
/// description): each thread owns an array of `SLOTS` blocks (8..1000 B) and repeatedly frees a
/// random one and allocates a replacement; after each round of `ROUND` replacements every
/// thread exits and a new thread takes over another thread's array, so blocks allocated by one
/// thread are freed by another ("bleeding"), by threads that keep being created.
fn larson(a: &'static (dyn GlobalAlloc + Sync), threads: usize) -> f64 {
    const SLOTS: usize = 1000;
    const ROUND: usize = 20_000;
    const ROUNDS: usize = 25;
    let size = |r: u64| 8 + (r % 993) as usize;
    let mut arrays: Vec<Vec<Ptr>> = (0..threads)
        .map(|t| {
            let mut rng = Rng(0xA5A5 + t as u64);
            (0..SLOTS)
                .map(|_| {
                    let l = Layout::from_size_align(size(rng.next()), 8).unwrap();
                    // SAFETY: non-zero size.
                    Ptr(unsafe { a.alloc(l) }, l)
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for round in 0..ROUNDS {
        arrays.rotate_left(1);
        arrays = std::thread::scope(|s| {
            let hs: Vec<_> = arrays
                .drain(..)
                .enumerate()
                .map(|(t, mut arr)| {
                    s.spawn(move || {
                        let mut rng = Rng(0x5EED + (round * threads + t) as u64);
                        for _ in 0..ROUND {
                            let r = rng.next();
                            let slot = &mut arr[(r >> 32) as usize % SLOTS];
                            // SAFETY: allocated by `a` with this layout, freed once.
                            unsafe { a.dealloc(slot.0, slot.1) };
                            let l = Layout::from_size_align(size(r), 8).unwrap();
                            // SAFETY: non-zero size.
                            let p = unsafe { a.alloc(l) };
                            assert!(!p.is_null());
                            *slot = Ptr(p, l);
                        }
                        arr
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
    }
    let secs = start.elapsed().as_secs_f64();
    for b in arrays.into_iter().flatten() {
        // SAFETY: allocated by `a` with this layout.
        unsafe { a.dealloc(b.0, b.1) };
    }
    (threads * ROUNDS * ROUND * 2) as f64 / secs / 1e6
}

/// After mimalloc-bench's xmalloc-test (from its description): producers allocate blocks
/// (16..256 B) in batches and hand them to consumers, which free them. With one thread the
/// thread frees its own batches; with more, half the threads produce and half consume.
fn xmalloc(a: &'static (dyn GlobalAlloc + Sync), threads: usize) -> f64 {
    const BATCH: usize = 256;
    const BATCHES: usize = 2_000;
    let producers = threads.div_ceil(2);
    let (tx, rx) = mpsc::sync_channel::<Vec<Ptr>>(64);
    let rx = std::sync::Mutex::new(rx);
    let rx = &rx;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                let mut rng = Rng(0xBEEF + t as u64);
                for _ in 0..BATCHES {
                    let batch: Vec<Ptr> = (0..BATCH)
                        .map(|_| {
                            let l = Layout::from_size_align(16 + (rng.next() % 241) as usize, 8)
                                .unwrap();
                            // SAFETY: non-zero size.
                            let p = unsafe { a.alloc(l) };
                            assert!(!p.is_null());
                            Ptr(p, l)
                        })
                        .collect();
                    if threads == 1 {
                        for b in batch {
                            // SAFETY: allocated by `a` with this layout.
                            unsafe { a.dealloc(b.0, b.1) };
                        }
                    } else {
                        tx.send(batch).unwrap();
                    }
                }
            });
        }
        drop(tx);
        for _ in producers..threads {
            s.spawn(move || {
                loop {
                    let got = rx.lock().unwrap().recv();
                    let Ok(batch) = got else { break };
                    for b in batch {
                        // SAFETY: allocated by `a` (in a producer) with this layout.
                        unsafe { a.dealloc(b.0, b.1) };
                    }
                }
            });
        }
    });
    (producers * BATCHES * BATCH * 2) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// After Hoard's cache-scratch (from its description): each thread is handed one small block
/// the main thread allocated, frees it, then repeatedly allocates an 8-byte block, writes it
/// a few times and frees it: passive false sharing shows as slowdown with more threads.
fn cache_scratch(a: &'static (dyn GlobalAlloc + Sync), threads: usize) -> f64 {
    const ITERS: usize = 1_000_000;
    let l = Layout::from_size_align(8, 8).unwrap();
    let given: Vec<Ptr> = (0..threads)
        // SAFETY: non-zero size.
        .map(|_| Ptr(unsafe { a.alloc(l) }, l))
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for g in given {
            s.spawn(move || {
                let g = g; // the whole `Ptr` (which is Send), not its fields
                // SAFETY: allocated by `a` with this layout (by the main thread).
                unsafe { a.dealloc(g.0, g.1) };
                for i in 0..ITERS {
                    // SAFETY: non-zero size.
                    let p = unsafe { a.alloc(l) };
                    assert!(!p.is_null());
                    for k in 0..8u8 {
                        // SAFETY: p is a fresh 8-byte block.
                        unsafe { p.add(usize::from(k)).write_volatile(i as u8 ^ k) };
                    }
                    // SAFETY: allocated just above.
                    unsafe { a.dealloc(p, l) };
                }
            });
        }
    });
    (threads * ITERS * 2) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn std_work() {
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel::<String>();
    let ws: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut map: HashMap<String, usize> = HashMap::new();
                let mut tree = BTreeMap::new();
                for i in 0..500_000usize {
                    *map.entry(format!("t{t}-{}", i % 5000)).or_default() += 1;
                    tree.insert(i, i.to_string());
                    if i % 1000 == 0 {
                        tx.send(format!("{t}:{i}")).unwrap();
                    }
                }
                map.len() + tree.len()
            })
        })
        .collect();
    drop(tx);
    let n = rx.iter().count();
    let total: usize = ws.into_iter().map(|w| w.join().unwrap()).sum();
    let mut v: Vec<u64> = (0..4_000_000u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    std::thread::scope(|s| {
        for c in v.chunks_mut(1_000_000) {
            s.spawn(move || c.sort_unstable());
        }
    });
    assert!(
        v.chunks(1_000_000)
            .all(|c| c.windows(2).all(|w| w[0] <= w[1]))
    );
    // JSON documents built, serialized and parsed on 4 threads.
    let values: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u32)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0;
                    for i in 0..5_000u32 {
                        let doc = serde_json::json!({
                            "id": i,
                            "thread": t,
                            "name": format!("item {i}"),
                            "tags": ["alpha", "beta", "gamma"],
                            "values": (0..20).map(|k| k * i).collect::<Vec<u32>>(),
                        });
                        let text = serde_json::to_string(&doc).unwrap();
                        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
                        n += back["values"].as_array().map_or(0, Vec::len);
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(values, 4 * 5_000 * 20);
    // A few hundred regexes compiled and matched.
    let hay: String = (0..2_000)
        .map(|i| format!("user{i}@host{}.example.org ", i % 17))
        .collect();
    let mut hits = 0;
    for k in 0..300 {
        let re = regex::Regex::new(&format!(r"user{k}\d*@host(\d+)\.example\.org")).unwrap();
        hits += re.find_iter(&hay).count();
    }
    assert!(hits >= 300);
    // Cross-thread churn: vectors of strings built here, freed by another thread.
    let (btx, brx) = mpsc::sync_channel::<Vec<String>>(64);
    let consumer = std::thread::spawn(move || brx.iter().map(|v| v.len()).sum::<usize>());
    for i in 0..20_000 {
        btx.send((0..16).map(|k| format!("{i}-{k}")).collect())
            .unwrap();
    }
    drop(btx);
    assert_eq!(consumer.join().unwrap(), 20_000 * 16);
    println!(
        "std work ({}): {n} messages, {total} entries, {:.2} s",
        if cfg!(system_global) {
            "glibc malloc"
        } else if cfg!(mimalloc_global) {
            "mimalloc"
        } else {
            "isoheap::GlobalHeap"
        },
        t0.elapsed().as_secs_f64()
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("std") {
        std_work();
        return;
    }
    let subjects: [(&str, &'static (dyn GlobalAlloc + Sync)); 3] = [
        ("isoheap GlobalHeap", &ISO),
        ("glibc malloc", &System),
        ("mimalloc", &MI),
    ];
    type Bench = fn(&'static (dyn GlobalAlloc + Sync), usize) -> f64;
    let benches: [(&str, Bench); 4] = [
        ("churn", churn),
        ("larson", larson),
        ("xmalloc", xmalloc),
        ("cache-scratch", cache_scratch),
    ];
    println!(
        "| workload | threads | {} |",
        subjects.map(|s| s.0).join(" | ")
    );
    println!("|---|---|---:|---:|---:|");
    for (bench, f) in benches {
        for threads in [1, 2] {
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
            for rep in 0..5 {
                for j in 0..subjects.len() {
                    // The subjects take turns in a rotating order.
                    let i = (j + rep) % subjects.len();
                    let (name, a) = subjects[i];
                    eprint!("\r{bench}, {threads} thread(s), rep {rep}, {name}        ");
                    runs[i].push(f(a, threads));
                }
            }
            eprintln!();
            let m: Vec<String> = runs
                .into_iter()
                .map(|r| format!("{:.1} Mops/s", median(r)))
                .collect();
            println!("| {bench} | {threads} | {} |", m.join(" | "));
        }
    }
}
