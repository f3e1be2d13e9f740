//! A loopback HTTP/1.1 server that gives every request a heap of its own, with a budget.
//!
//! The server is plain `std`: a `TcpListener` on `127.0.0.1:0`, one thread accepting connections
//! and handing them over an `mpsc` channel to a few worker threads. For each request a worker
//! takes a [`Heap`] from a [`HeapPool`] built with `Heap::builder().budget(256 KiB)`, reads the
//! request into a buffer **in that heap**, parses the body (a JSON document: an array of objects
//! with string keys) into `allocator_api2::vec::Vec`s and `hashbrown::HashMap`s **in that heap**,
//! computes a summary (objects, keys, sum of the integers, largest float, `true`s, a word-frequency
//! map of the string values and its most frequent word) and answers with a small JSON body. Then
//! the heap goes back to the pool, reset in one step whatever the request allocated.
//!
//! The files: `json.rs` (fallible building blocks, the document parser, the answer), `http.rs`
//! (the server: heads, one request, connections, acceptor, workers), `client.rs` (documents and
//! the load client that checks every answer), `metrics.rs` (counters, resident size, units);
//! this one holds the options and the run. The pattern alone, without the load, is the
//! library's `examples/per_request.rs`.
//!
//! The budget counts bytes *in use* in the heap, not the size of the body. A request whose body
//! does not fit (refused while reading it) or whose document expands past the budget once parsed
//! (refused while building the collections) gets `413 Payload Too Large`, and the server carries
//! on serving, on the same connection. For that the request path uses **only fallible
//! allocation**: `try_reserve` before every `push`, `insert` and `extend_from_slice`, and a
//! `fmt::Write` adapter that reserves before it writes. An infallible `push` refused by the
//! budget would call the allocation failure handler and abort the whole process.
//!
//! The example drives itself: client threads send `--requests` requests (2% of them over the
//! budget, half of those with a body larger than the budget, half with a small body whose
//! document is too large), check every answer against their own computation (200 with the
//! right summary, or 413 refused at the right stage), then shut the server down and print
//! requests per second, latency percentiles, the peak heap use per request, how many heaps the
//! pool built (and the `mmap`/`munmap`/`madvise` calls the run made) and the process's resident
//! size (RSS) before, at the peak (sampled every millisecond, and by the workers at each
//! refusal) and after: with the pool's idle heaps kept warm, then with the pool dropped and
//! [`isoheap::release_cached`] called (what remains above the first figure is the threads'
//! stacks, which glibc keeps for reuse, and the client's own allocations). A wrong answer makes
//! it panic, so CI can run it.
//!
//! ```sh
//! cargo run --release -p isoheap-bench --example server
//! cargo run --release -p isoheap-bench --example server -- --requests 20000 --clients 2 --workers 4 --close
//! ```
//!
//! Options: `--requests N` (default 2000), `--clients N` (2), `--workers N` (4), `--close` (a
//! new connection per request; by default each client keeps one connection alive, which ties
//! up one worker, so keep-alive needs `--clients` <= `--workers`).
//!
//! The RSS figures come from `/proc/self/statm` (Linux); elsewhere they print as `n/a`.

mod client;
mod http;
mod json;
mod metrics;

use crate::client::ClientReport;
use crate::client::Config;
use crate::client::Kind;
use crate::client::client;
use crate::client::kind_of;
use crate::http::accept_loop;
use crate::http::worker;
use crate::metrics::Metrics;
use crate::metrics::kib;
use crate::metrics::mib;
use crate::metrics::ms;
use crate::metrics::page_size;
use crate::metrics::rss_bytes;
use isoheap::Heap;
use isoheap::HeapPool;
use std::net::TcpListener;
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use std::time::Instant;

/// Bytes in use each request's heap may hold.
pub(crate) const BUDGET: usize = 256 << 10;
/// Largest request head (request line and headers) the server reads.
pub(crate) const MAX_HEAD: usize = 8 << 10;
/// The largest refused body the server reads (and drops) to keep the connection open; past
/// it, it answers and closes.
pub(crate) const MAX_DRAIN: usize = 16 << 20;
/// Deepest nesting of arrays and objects the parser follows (it recurses).
pub(crate) const MAX_DEPTH: usize = 32;
/// One request in this many is over the budget (2%).
pub(crate) const OVER_EVERY: usize = 50;
/// Objects in a normal document: 4 to 24 (a few KiB of body, a few tens of KiB once parsed).
pub(crate) const NORMAL_OBJECTS: (u64, u64) = (4, 24);
/// Objects in an over-budget document with a small body: the body stays well under the budget,
/// the collections built from it do not.
pub(crate) const WIDE_OBJECTS: usize = 500;
/// Objects in an over-budget document whose body alone is larger than the budget.
pub(crate) const HUGE_OBJECTS: usize = 2_000;
/// How long either side waits for the other before giving up (a broken run fails, never hangs).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

const USAGE: &str = "usage: server [--requests N] [--clients N] [--workers N] [--close]  (defaults: 2000, 2, 4, keep-alive)";

fn parse_args() -> Config {
    let mut cfg = Config {
        requests: 2_000,
        clients: 2,
        workers: 4,
        close: false,
    };
    let mut args = std::env::args().skip(1);
    let fail = |msg: String| -> ! {
        eprintln!("{msg}\n{USAGE}");
        std::process::exit(2)
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            match args.next().map(|v| v.parse::<usize>()) {
                Some(Ok(n)) if n > 0 => n,
                _ => fail(format!("{name} needs a positive number")),
            }
        };
        match arg.as_str() {
            "--requests" => cfg.requests = number("--requests"),
            "--clients" => cfg.clients = number("--clients"),
            "--workers" => cfg.workers = number("--workers"),
            "--close" => cfg.close = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => fail(format!("unknown argument {other}")),
        }
    }
    if !cfg.close && cfg.clients > cfg.workers {
        fail(
            "with keep-alive each client holds a worker: use --clients <= --workers, or --close"
                .into(),
        );
    }
    cfg
}

fn main() {
    let cfg = parse_args();
    let over = (0..cfg.requests)
        .filter(|&i| kind_of(i) != Kind::Normal)
        .count();
    println!(
        "isoheap server example: {} requests ({over} over the budget), {} client(s), {} worker(s), {}, budget {} per request",
        cfg.requests,
        cfg.clients,
        cfg.workers,
        if cfg.close {
            "a connection per request"
        } else {
            "keep-alive"
        },
        kib(BUDGET)
    );

    let page = page_size();
    let rss_before = rss_bytes(page);
    let os_before = isoheap::os_counters();
    let pool = HeapPool::new(Heap::builder().budget(BUDGET), cfg.workers);
    let metrics = Metrics::default();
    let stop = AtomicBool::new(false);
    let sampling = AtomicBool::new(true);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    println!("listening on http://{addr}/analyze");
    let (to_workers, from_acceptor) = mpsc::channel();
    let from_acceptor = Mutex::new(from_acceptor);

    let (reports, elapsed) = thread::scope(|s| {
        let stop = &stop;
        s.spawn(move || accept_loop(listener, to_workers, stop));
        for _ in 0..cfg.workers {
            s.spawn(|| worker(&from_acceptor, &pool, &metrics, page));
        }
        s.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(page) {
                    metrics.rss_peak.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(1));
            }
        });

        let started = Instant::now();
        let clients: std::vec::Vec<_> = (0..cfg.clients)
            .map(|id| {
                let cfg = &cfg;
                s.spawn(move || client(addr, id, cfg))
            })
            .collect();
        let reports: std::vec::Vec<Result<ClientReport, String>> = clients
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect();
        let elapsed = started.elapsed();

        // Shut down, whatever the clients saw: raise the flag, wake the acceptor up with one
        // last connection; it drops the channel's sender, and the workers finish their
        // connections (the clients have closed theirs) and return. The scope joins them all.
        stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(addr);
        sampling.store(false, Ordering::Relaxed);
        (reports, elapsed)
    });
    let os = isoheap::os_counters();
    let rss_after = rss_bytes(page);
    let (created, idle) = (pool.created(), pool.idle());
    // Dropped heaps leave their mappings in a small process-wide cache for the next heap;
    // `release_cached` gives those back to the OS.
    drop(pool);
    let released = isoheap::release_cached();
    let rss_dropped = rss_bytes(page);

    let mut failures = std::vec::Vec::new();
    let mut latencies = std::vec::Vec::with_capacity(cfg.requests);
    let (mut ok, mut too_large) = (0, 0);
    let mut sizes = [(usize::MAX, 0usize); 3];
    for report in reports {
        match report {
            Ok(r) => {
                latencies.extend(r.latencies);
                ok += r.ok;
                too_large += r.too_large;
                for (all, mine) in sizes.iter_mut().zip(r.body_sizes) {
                    *all = (all.0.min(mine.0), all.1.max(mine.1));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    let served = load(&metrics.served);
    let (over_body, over_doc) = (load(&metrics.over_body), load(&metrics.over_document));
    let rss_peak = Some(load(&metrics.rss_peak)).filter(|&b| b > 0);
    let size = |k: Kind| {
        let (lo, hi) = sizes[k as usize];
        if lo > hi {
            "none".to_owned()
        } else {
            format!("{}–{}", kib(lo), kib(hi))
        }
    };

    println!(
        "requests   {} in {:.3} s: {:.0} requests/s",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency    p50 {} | p99 {} | max {}",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
    println!(
        "answers    200: {ok} (all checked) | 413: {too_large} ({over_body} refused reserving the body, {over_doc} building the document) | other: {}",
        load(&metrics.rejected) + load(&metrics.no_memory)
    );
    println!(
        "bodies     normal {} | over budget once parsed {} | over budget as bytes {}",
        size(Kind::Normal),
        size(Kind::Wide),
        size(Kind::Huge)
    );
    println!(
        "heap/req   peak in use: served max {} (mean {}) | refused max {} (budget {}) | {} budget refusals",
        kib(load(&metrics.peak_served)),
        kib(load(&metrics.peak_served_sum) / served.max(1)),
        kib(load(&metrics.peak_refused)),
        kib(BUDGET),
        load(&metrics.budget_refusals)
    );
    println!(
        "pool       {created} heap(s) created, {idle} idle at the end, {} mapped | OS calls for {} requests: {} mmap, {} munmap, {} madvise",
        kib(os.mapped_bytes),
        cfg.requests,
        os.maps - os_before.maps,
        os.unmaps - os_before.unmaps,
        os.decommits - os_before.decommits
    );
    println!(
        "RSS        before {} | peak {} | after {} (idle heaps kept warm) | pool dropped, {} released {}",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
        kib(released),
        mib(rss_dropped)
    );

    // The checks that make this example a test.
    let normal = cfg.requests - over;
    if ok != normal || served != normal {
        failures.push(format!(
            "{ok} answers checked and {served} served with 200, expected {normal}"
        ));
    }
    if too_large != over || over_body + over_doc != over {
        failures.push(format!(
            "{too_large} answers 413 and {} refused by the server, expected {over}",
            over_body + over_doc
        ));
    }
    if load(&metrics.rejected) + load(&metrics.no_memory) != 0 {
        failures.push("the server rejected requests it should have served".into());
    }
    if load(&metrics.peak_refused) > BUDGET {
        failures.push("a heap passed its budget".into());
    }
    if !failures.is_empty() {
        panic!("the run failed:\n  {}", failures.join("\n  "));
    }
    println!("ok");
}
