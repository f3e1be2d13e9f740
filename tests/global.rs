//! The crate as the program's `#[global_allocator]`: std-heavy work on several threads
//! (threads, channels, collections, strings, formatting, a parallel sort) with the results
//! checked, then the heap's own check; and `fork` while other threads allocate.

use isoheap::GlobalHeap;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: GlobalHeap = GlobalHeap::new();

const N: usize = if cfg!(miri) { 200 } else { 200_000 };

#[test]
fn std_heavy_work_on_threads() {
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut map: HashMap<String, usize> = HashMap::new();
                let mut tree = BTreeMap::new();
                for i in 0..N / 4 {
                    let key = format!("t{t}-k{}", i % 1000);
                    *map.entry(key.clone()).or_default() += 1;
                    tree.insert(i, key);
                    if i % 97 == 0 {
                        tx.send((t, format!("{t}:{i}"))).unwrap();
                    }
                }
                assert_eq!(map.len(), 1000.min(N / 4));
                assert_eq!(tree.len(), N / 4);
                map.values().sum::<usize>()
            })
        })
        .collect();
    drop(tx);
    let msgs: Vec<(usize, String)> = rx.iter().collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 4 * (N / 4));
    assert_eq!(msgs.len(), 4 * (N / 4).div_ceil(97));
    assert!(msgs.iter().all(|(t, m)| m.starts_with(&format!("{t}:"))));

    // A parallel sort: split, sort on threads, merge, check.
    let mut data: Vec<u64> = (0..N as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11)
        .collect();
    let mut expect = data.clone();
    expect.sort_unstable();
    let chunks: Vec<Vec<u64>> = std::thread::scope(|s| {
        data.chunks_mut(N / 4 + 1)
            .map(|c| {
                s.spawn(move || {
                    let mut v = c.to_vec();
                    v.sort_unstable();
                    v
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let mut merged: Vec<u64> = chunks.into_iter().flatten().collect();
    merged.sort();
    assert_eq!(merged, expect);
    data.clear();
    data.shrink_to_fit();

    GLOBAL.heap().check().expect("global heap consistent");
    let s = GLOBAL.heap().stats();
    assert!(
        s.chunks > 0 && s.in_use > 0,
        "the program's memory comes from isoheap: {s:?}"
    );
}

#[test]
#[cfg(all(target_os = "linux", not(miri)))]
fn fork_while_other_threads_allocate() {
    GLOBAL.fork_safe();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v: Vec<String> = (0..50).map(|i| i.to_string()).collect();
                    n += v.len();
                }
                n
            })
        })
        .collect();
    for _ in 0..20 {
        // SAFETY: the child only allocates, formats and exits with _exit; no locks of other
        // threads are held across fork (fork_safe's handlers take and release the arenas').
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let v: Vec<String> = (0..1000).map(|i| format!("child {i}")).collect();
            let ok = v.len() == 1000 && GLOBAL.heap().check().is_ok();
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: {status}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        assert!(b.join().unwrap() > 0);
    }
}

/// `GLOBAL.scope()` with the crate as the global allocator: ordinary code (`format!`,
/// `String`, `Vec`, `HashMap`) allocates in the scope while it lives; a fallible reservation
/// past the scope's budget returns `Err` and is counted; a `Vec` from before the scope grows in
/// the arenas; values that escape stay valid and release the scope heap when dropped on
/// another thread.
#[test]
fn scope_redirects_ordinary_code() {
    let mut before: Vec<u64> = Vec::with_capacity(4);
    let scope = GLOBAL.scope();
    let words: Vec<String> = (0..1000).map(|i| format!("word number {i}")).collect();
    let mut map = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        map.insert(w.clone(), i);
    }
    let st = scope.stats();
    assert!(st.in_use >= 1000 * 14 * 2, "{st:?}");
    assert_eq!(map["word number 7"], 7);
    // Growing a vector from before the scope: it stays in the arenas.
    before.extend(0..100_000u64);
    assert!(
        scope.stats().in_use < st.in_use + 100_000,
        "{:?}",
        scope.stats()
    );
    assert!(
        GLOBAL.heap().owns(before.as_ptr().cast()),
        "the vector moved out of the arenas"
    );
    // A budget: fallible reservations past it fail and are counted.
    scope.set_budget(Some(scope.stats().in_use + (64 << 10)));
    let mut big: Vec<u8> = Vec::new();
    assert!(big.try_reserve_exact(1 << 20).is_err());
    assert_eq!(scope.stats().budget_refusals, 1);
    big.try_reserve_exact(1 << 10).expect("under the budget");
    scope.set_budget(None);
    drop(map);
    drop(big);
    drop(scope);
    // `words` escaped: valid, and freed on another thread, which releases the scope heap.
    let live = GLOBAL.live_scopes();
    assert!(live >= 1);
    std::thread::spawn(move || {
        assert_eq!(words[999], "word number 999");
        drop(words);
    })
    .join()
    .unwrap();
    assert_eq!(GLOBAL.live_scopes(), live - 1);
    drop(before);
}
