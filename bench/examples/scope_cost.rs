//! What a scope per small request costs: 3,000 requests, each parsing a small JSON document
//! (about 40 values) with serde_json and formatting an answer, with and without a
//! `GLOBAL.scope()` around each, interleaved, median of 7 rounds; and the resident size after.
//!
//! ```sh
//! cargo run --release -p isoheap-bench --example scope_cost
//! ```

use isoheap::GlobalHeap;
use std::time::Instant;

#[global_allocator]
static GLOBAL: GlobalHeap = GlobalHeap::new();

const REQUESTS: usize = 3000;

fn doc(i: usize) -> String {
    let items: Vec<String> = (0..8)
        .map(|k| format!("{{\"id\":{},\"name\":\"item {k}\",\"ok\":true}}", i + k))
        .collect();
    format!("{{\"request\":{i},\"items\":[{}]}}", items.join(","))
}

fn work(body: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let answer = format!("{{\"items\":{}}}", v["items"].as_array().unwrap().len());
    answer.len()
}

fn round(docs: &[String], scoped: bool) -> f64 {
    let t = Instant::now();
    let mut n = 0;
    for d in docs {
        if scoped {
            let s = GLOBAL.scope();
            n += work(d);
            drop(s);
        } else {
            n += work(d);
        }
    }
    assert!(n > 0);
    t.elapsed().as_secs_f64()
}

fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |p| p * 4096)
}

fn main() {
    let docs: Vec<String> = (0..REQUESTS).map(doc).collect();
    let (mut plain, mut scoped) = (Vec::new(), Vec::new());
    for r in 0..7 {
        if r % 2 == 0 {
            plain.push(round(&docs, false));
            scoped.push(round(&docs, true));
        } else {
            scoped.push(round(&docs, true));
            plain.push(round(&docs, false));
        }
    }
    plain.sort_by(f64::total_cmp);
    scoped.sort_by(f64::total_cmp);
    let (p, s) = (plain[3], scoped[3]);
    println!(
        "{REQUESTS} small JSON requests: no scope {:.2} ms, a scope each {:.2} ms: {:.2}x \
         (spread {:.2}-{:.2} ms vs {:.2}-{:.2} ms); live scopes after: {}; RSS {} KiB",
        p * 1e3,
        s * 1e3,
        s / p,
        plain[0] * 1e3,
        plain[6] * 1e3,
        scoped[0] * 1e3,
        scoped[6] * 1e3,
        GLOBAL.live_scopes(),
        rss() >> 10
    );
}
