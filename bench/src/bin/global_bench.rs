//! Thread scaling of the thread-safe heap, against glibc malloc and mimalloc, side by side.
//!
//! `cargo run --release -p isoheap-bench --bin global_bench` runs churn (random allocate/free,
//! sizes log-uniform 8 B..4 KiB, 10,000 live blocks per thread, a quarter of the frees done by
//! another thread) with 1 and 2 threads, calling each allocator's `GlobalAlloc` methods
//! directly, and prints million operations per second (median of 5).
//!
//! `cargo run --release -p isoheap-bench --bin global_bench -- std` instead runs a std-heavy
//! workload (collections, strings, formatting, channels, a parallel sort on 4 threads) with the
//! program's global allocator, which is `isoheap::GlobalHeap` unless the binary is built with
//! `RUSTFLAGS="--cfg system_global"`; time it with `/usr/bin/time -v` to compare time and peak
//! memory against glibc.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Instant;

#[cfg(not(system_global))]
#[global_allocator]
static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();

static ISO: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
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
    println!(
        "std work ({}): {n} messages, {total} entries, {:.2} s",
        if cfg!(system_global) {
            "glibc malloc"
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
    println!("| threads | {} |", subjects.map(|s| s.0).join(" | "));
    println!("|---|---:|---:|---:|");
    for threads in [1, 2] {
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
        for rep in 0..5 {
            for (i, (name, a)) in subjects.iter().enumerate() {
                eprint!("\r{threads} thread(s), rep {rep}, {name}        ");
                runs[i].push(churn(*a, threads));
            }
        }
        eprintln!();
        let m: Vec<String> = runs
            .into_iter()
            .map(|r| format!("{:.1} Mops/s", median(r)))
            .collect();
        println!("| {threads} | {} |", m.join(" | "));
    }
}
