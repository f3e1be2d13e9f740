//! One heap per request, with a budget: the pattern of the server example
//! (`bench/examples/server/`) in a few lines. Run with `cargo run --release --example per_request`.
//!
//! A [`HeapPool`] lends each request a heap built with a budget on bytes in use. The request
//! builds its collections in that heap with fallible calls only (`try_reserve` before each
//! `push` and `insert`), so a request that needs more than its budget gets an `Err` and is
//! refused; an infallible `push` would call the allocation failure handler and abort the
//! process instead. Inside the request, parsing and the response each get a child heap of the
//! request's heap (`Heap::child`, a memory context): the parse context is dropped once parsed,
//! and the request's budget bounds both. Dropping the guard resets the heap (freeing whatever
//! the request left) and gives it back to the pool, so the next request reuses it without
//! mapping anything.

use allocator_api2::vec::Vec;
use hashbrown::{DefaultHashBuilder, HashMap};
use isoheap::{Heap, HeapPool};

/// Bytes in use each request's heap may hold.
const BUDGET: usize = 64 << 10;

/// The request needed more than its budget.
#[derive(Debug)]
struct OverBudget;

/// Splits `body` into words and counts each distinct word, then builds a response; returns
/// (words, distinct words, response bytes). Parsing happens in a child heap of the request's
/// heap, dropped (its chunks back to the request heap) before the response is built in a child
/// of its own: the request's budget bounds both, and the parse's memory is reused by the
/// response.
fn handle(heap: &Heap, body: &str) -> Result<(usize, usize, usize), OverBudget> {
    let (words, distinct) = {
        let parse = heap.child().map_err(|_| OverBudget)?;
        let mut words: Vec<&str, &Heap> = Vec::new_in(&parse);
        let mut counts: HashMap<&str, usize, DefaultHashBuilder, &Heap> = HashMap::new_in(&parse);
        for word in body.split_whitespace() {
            words.try_reserve(1).map_err(|_| OverBudget)?;
            words.push(word);
            counts.try_reserve(1).map_err(|_| OverBudget)?;
            *counts.entry(word).or_insert(0) += 1;
        }
        (words.len(), counts.len())
    }; // the parse context is dropped here
    let response = heap.child().map_err(|_| OverBudget)?;
    let mut out: Vec<u8, &Heap> = Vec::new_in(&response);
    let status = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n";
    out.try_reserve(status.len() + 40).map_err(|_| OverBudget)?;
    out.extend_from_slice(status);
    for n in [words, distinct] {
        out.extend_from_slice(n.to_string().as_bytes());
        out.push(b' ');
    }
    Ok((words, distinct, out.len()))
}

fn main() {
    // At most 4 idle heaps kept warm; each heap refuses allocations past BUDGET bytes in use.
    let pool = HeapPool::new(Heap::builder().budget(BUDGET), 4);
    let small = "the quick brown fox jumps over the lazy dog and the cat";
    let large: String = (0..20_000).map(|i| format!("w{i} ")).collect();
    let requests = [
        ("small", small),
        ("large", large.as_str()),
        ("small", small),
    ];

    let (mut served, mut refused) = (0, 0);
    for (i, (name, body)) in requests.into_iter().enumerate() {
        let heap = pool.get().expect("a heap from the pool");
        let answer = handle(&heap, body);
        let stats = heap.stats();
        match answer {
            Ok((words, distinct, bytes)) => {
                served += 1;
                println!(
                    "request {i} ({name}): 200, {words} words, {distinct} distinct, {bytes} B response"
                );
                assert_eq!(stats.budget_refusals, 0);
            }
            Err(OverBudget) => {
                refused += 1;
                println!("request {i} ({name}): 413, over the budget of {BUDGET} B");
                assert!(stats.budget_refusals > 0);
            }
        }
        println!(
            "  heap {}: peak in use {} B, {} budget refusal(s), {} B in use after the request",
            heap.id(),
            stats.peak_in_use,
            stats.budget_refusals,
            stats.in_use
        );
        assert!(stats.peak_in_use <= BUDGET);
        assert_eq!(stats.lent_to_children, 0, "every child context was dropped");
        // `heap` is dropped here: reset, then back in the pool for the next request.
    }

    assert_eq!((served, refused), (2, 1));
    println!(
        "pool: {} heap(s) created, {} idle: every request reused the same heap",
        pool.created(),
        pool.idle()
    );
    assert_eq!(pool.created(), 1);
}
