//! `fork` with fork-safe `GlobalHeap`s (a binary of its own: it installs the global allocator
//! and registers `pthread_atfork` handlers, which are process-wide and cannot be undone). Each
//! test runs its scenario in a child process of its own (this binary again, `--exact` on the
//! test, `ISOHEAP_FORK_CASE` naming the scenario) and fails if that child hangs or fails: the
//! bugs these tests are named after were hangs.
#![cfg(all(target_os = "linux", not(miri)))]

use isoheap::GlobalHeap;
use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: GlobalHeap = GlobalHeap::new();
/// A second fork-safe heap, not the global allocator.
static SECOND: GlobalHeap = GlobalHeap::new();

const CASE: &str = "ISOHEAP_FORK_CASE";

/// In the test binary's own process: runs `test` alone in a child with `CASE=case`, waits up
/// to 30 s, and asserts that it passed; returns false. In that child: returns true.
fn scenario(test: &str, case: &str) -> bool {
    if std::env::var(CASE).is_ok_and(|v| v == case) {
        return true;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "{test}: the child process failed: {status}"
            );
            return false;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test}: the child process hung for 30 s (a fork deadlock)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Forks; the child allocates from every heap, checks them and exits; the parent waits for it.
fn fork_and_check() {
    // SAFETY: the child only allocates, checks and leaves with _exit; the fork-safe heaps'
    // handlers hold their locks across the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let v: Vec<String> = (0..1000).map(|i| format!("child {i}")).collect();
        let l = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: a valid layout; the block is freed right after.
        let p = unsafe { SECOND.alloc(l) };
        let ok = v.len() == 1000
            && !p.is_null()
            && GLOBAL.heap().check().is_ok()
            && SECOND.heap().check().is_ok();
        // SAFETY: allocated above with `l`; then leaving without the parent's destructors.
        unsafe {
            SECOND.dealloc(p, l);
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child failed: {status}"
    );
}

/// Bug: with two fork-safe `GlobalHeap`s the handlers were registered twice and both acted on
/// the last heap registered: the second `prepare` spun forever on the locks the first had taken
/// (and the first heap had no protection).
#[test]
fn fork_with_two_fork_safe_heaps() {
    if !scenario("fork_with_two_fork_safe_heaps", "two-heaps") {
        return;
    }
    GLOBAL.fork_safe();
    SECOND.fork_safe();
    SECOND.fork_safe(); // a second call for one heap does nothing
    let l = Layout::from_size_align(256, 16).unwrap();
    // SAFETY: a valid layout.
    let p = unsafe { SECOND.alloc(l) };
    assert!(!p.is_null());
    let busy: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    for _ in 0..3 {
        fork_and_check();
    }
    assert_eq!(busy.len(), 100);
    // SAFETY: allocated above with `l`.
    unsafe { SECOND.dealloc(p, l) };
}

/// Bug: an atfork prepare handler registered before `fork_safe()` runs after the heap's (they
/// run in reverse order of registration), while the forking thread holds every arena lock; its
/// allocation waited for its home arena's lock forever. Now the forking thread, which holds the
/// locks, is served from its home arena.
#[test]
fn fork_when_an_earlier_atfork_handler_allocates() {
    if !scenario("fork_when_an_earlier_atfork_handler_allocates", "handler") {
        return;
    }
    extern "C" fn allocating_prepare() {
        let v: Vec<u64> = (0..100).collect();
        std::hint::black_box(&v);
    }
    // SAFETY: registers a plain function; it only allocates and frees.
    let rc = unsafe { libc::pthread_atfork(Some(allocating_prepare), None, None) };
    assert_eq!(rc, 0);
    GLOBAL.fork_safe();
    for _ in 0..3 {
        fork_and_check();
    }
}

/// `fork` while scopes are active: threads allocate and free in scopes of their own (so they
/// hold scope heaps' locks at any moment) and free blocks of the main thread's scope, while the
/// main thread, inside a scope, forks. The prepare handler takes every scope heap's lock, so
/// the child inherits none held by a thread it does not have: it allocates in its inherited
/// scope, frees scope blocks and starts a new scope.
#[test]
fn fork_while_scopes_are_active() {
    if !scenario("fork_while_scopes_are_active", "scopes") {
        return;
    }
    GLOBAL.fork_safe();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scope = GLOBAL.scope();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
    let mut rx = Some(rx);
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            let rx = rx.take();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = GLOBAL.scope();
                    let v: Vec<String> = (0..50).map(|i| format!("{t}:{i}")).collect();
                    assert!(s.stats().in_use > 0);
                    drop(v);
                    // Blocks of the main thread's scope, freed here.
                    if let Some(rx) = &rx {
                        while let Ok(b) = rx.try_recv() {
                            drop(b);
                        }
                    }
                }
            })
        })
        .collect();
    for round in 0..20 {
        let _ = tx.try_send(vec![round as u8; 100 + round * 10]);
        // SAFETY: the child only allocates, frees and checks, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mine: Vec<String> = (0..200).map(|i| format!("child {i}")).collect();
            let inner = GLOBAL.scope();
            let more: Vec<u64> = (0..1000).collect();
            let ok = scope.stats().in_use > 0
                && inner.stats().in_use >= 8000
                && mine.len() + more.len() == 1200
                && GLOBAL.heap().check().is_ok();
            drop(more);
            drop(inner);
            // SAFETY: leaving the child without the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "round {round}: the forked child failed: {status}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    drop(scope);
}
