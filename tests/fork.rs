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
