//! `GlobalHeap` as the program's `#[global_allocator]`, re-entered from a signal handler on a
//! thread that is inside the allocator, maybe holding an arena's spin lock.
//!
//! A POSIX timer (`timer_create` with `SIGEV_THREAD_ID`, every 100 µs) sends `SIGALRM` to the
//! thread under test, so the handler interrupts that thread wherever it is, including inside
//! `alloc`/`dealloc`/`realloc` with its arena locked. The handler calls `GlobalAlloc` directly
//! (no std collection, no std lock). The allocator must not deadlock: a thread whose arena is
//! locked takes another one (`SyncHeap::with_any`); frees never wait (remote-free lists).
//!
//! The thread-directed timer is deliberate: a process-directed `SIGALRM`/`SIGPROF` goes to
//! whichever thread the kernel picks (usually the test harness's main thread, which holds no
//! arena lock), so it would not test the interesting case.
//!
//! Cases that block by design run in a forked child with a deadline, so a deadlock is reported
//! as the failure of that test. The in-process test has a watchdog that ends the whole binary
//! with a message after 20 s.

#![cfg(all(target_os = "linux", not(miri)))]

use isoheap::GlobalHeap;
use std::alloc::{GlobalAlloc, Layout};
use std::ptr::null_mut;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: GlobalHeap = GlobalHeap::new();

/// The tests share the `SIGALRM` disposition and the counters below: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// What the handler does (see [`on_alarm`]).
static MODE: AtomicUsize = AtomicUsize::new(MODE_ALLOC);
const MODE_ALLOC: usize = 0;
const MODE_REALLOC_SHARED: usize = 1;
const MODE_FREE_POOL: usize = 2;

/// Handler invocations.
static RUNS: AtomicUsize = AtomicUsize::new(0);
/// Invocations that interrupted the thread inside one of its own `GLOBAL` calls.
static INSIDE: AtomicUsize = AtomicUsize::new(0);
/// Null results in the handler.
static NULLS: AtomicUsize = AtomicUsize::new(0);
/// Wrong bytes seen by the handler.
static CORRUPT: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Set while this thread is inside a `GLOBAL` call of the test loop.
    static IN_ALLOC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Blocks the thread allocated before the timer started, which the handler frees one per
/// signal in [`MODE_FREE_POOL`] (64 bytes each, filled with 0x3C).
static POOL: [AtomicPtr<u8>; POOL_LEN] = [const { AtomicPtr::new(null_mut()) }; POOL_LEN];
const POOL_LEN: usize = 8192;
static POOL_NEXT: AtomicUsize = AtomicUsize::new(0);

/// The block the handler reallocates in [`MODE_REALLOC_SHARED`], and its size.
static SHARED: AtomicPtr<u8> = AtomicPtr::new(null_mut());
static SHARED_SIZE: AtomicUsize = AtomicUsize::new(0);

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// The signal handler. Async-signal-safe as far as the test goes: atomics, a const-initialised
/// thread-local without destructor, raw memory, and `GLOBAL`'s `GlobalAlloc` methods.
extern "C" fn on_alarm(_sig: libc::c_int) {
    // SAFETY: the calling thread's errno slot, saved and restored around the handler.
    let errno = unsafe { *libc::__errno_location() };
    let run = RUNS.fetch_add(1, Relaxed);
    if IN_ALLOC.with(|c| c.get()) {
        INSIDE.fetch_add(1, Relaxed);
    }
    let tag = run as u8 | 1;
    match MODE.load(Relaxed) {
        MODE_ALLOC => {
            let size = [16, 200, 4000, 70_000][run % 4];
            let l = layout(size, 16);
            // SAFETY: non-zero sizes; each block is written within its layout, reallocated
            // while it is the handler's alone (it is in whatever arena the handler got, never
            // one the interrupted thread holds), and freed with its layout.
            unsafe {
                let p = GLOBAL.alloc(l);
                if p.is_null() {
                    NULLS.fetch_add(1, Relaxed);
                } else {
                    p.write_bytes(tag, size);
                    let q = GLOBAL.realloc(p, l, 2 * size);
                    if q.is_null() {
                        NULLS.fetch_add(1, Relaxed);
                        GLOBAL.dealloc(p, l);
                    } else {
                        let s = std::slice::from_raw_parts(q, size);
                        if s.iter().any(|&b| b != tag) {
                            CORRUPT.fetch_add(1, Relaxed);
                        }
                        GLOBAL.dealloc(q, layout(2 * size, 16));
                    }
                }
            }
        }
        MODE_FREE_POOL => {
            let i = POOL_NEXT.fetch_add(1, Relaxed);
            if i < POOL_LEN {
                let p = POOL[i].swap(null_mut(), Relaxed);
                // SAFETY: a live 64-byte block of the pool, which only this handler frees.
                unsafe {
                    if std::slice::from_raw_parts(p, 64).iter().any(|&b| b != 0x3C) {
                        CORRUPT.fetch_add(1, Relaxed);
                    }
                    GLOBAL.dealloc(p, layout(64, 16));
                }
            }
        }
        MODE_REALLOC_SHARED => {
            let p = SHARED.load(Relaxed);
            let old = SHARED_SIZE.load(Relaxed);
            let new = if old == 64 { 4096 } else { 64 };
            // SAFETY: SHARED is a live block of SHARED_SIZE bytes that only this handler
            // touches after setup; its first 64 bytes hold 0x5C.
            unsafe {
                let q = GLOBAL.realloc(p, layout(old, 16), new);
                if q.is_null() {
                    NULLS.fetch_add(1, Relaxed);
                } else {
                    if std::slice::from_raw_parts(q, 64).iter().any(|&b| b != 0x5C) {
                        CORRUPT.fetch_add(1, Relaxed);
                    }
                    SHARED.store(q, Relaxed);
                    SHARED_SIZE.store(new, Relaxed);
                }
            }
        }
        _ => {}
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The counters as one line on stderr, written directly (in a forked child the test harness's
/// output capture would swallow `eprintln!`).
fn summary(what: &str, iterations: usize) -> bool {
    summary_with(what, iterations, false)
}

/// As [`summary`]; `nulls_allowed`: a re-entered allocation may fail (null) when every arena
/// is busy: it never waits for a lock, which could be its own thread's.
fn summary_with(what: &str, iterations: usize, nulls_allowed: bool) -> bool {
    let (runs, inside) = (RUNS.load(Relaxed), INSIDE.load(Relaxed));
    let (nulls, corrupt) = (NULLS.load(Relaxed), CORRUPT.load(Relaxed));
    let check = GLOBAL.heap().check();
    let line = format!(
        "{what}: {iterations} iterations, {runs} signals, {inside} inside a GLOBAL call, \
         {nulls} null, {corrupt} corrupt, check {check:?}\n"
    );
    // SAFETY: writing our own bytes to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    iterations > 100
        && runs >= 200
        && (nulls_allowed || nulls == 0)
        && corrupt == 0
        && check.is_ok()
}

fn reset_counters(mode: usize) {
    MODE.store(mode, Relaxed);
    for c in [&RUNS, &INSIDE, &NULLS, &CORRUPT] {
        c.store(0, Relaxed);
    }
}

/// Installs [`on_alarm`] for `SIGALRM` (restarting interrupted system calls).
fn install_handler() {
    // SAFETY: a zeroed sigaction is valid; we fill handler, mask and flags.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGALRM, &sa, null_mut()), 0);
    }
}

/// A timer sending `SIGALRM` to one thread every `period`; deleted when dropped (the handler
/// stays installed, so a signal still pending then is harmless).
struct Ticker(libc::timer_t);

impl Ticker {
    /// Starts ticking at the calling thread.
    fn at_this_thread(period: Duration) -> Ticker {
        // SAFETY: a zeroed sigevent is valid; timer_create and timer_settime get valid
        // pointers; the timer targets the calling thread (its kernel tid).
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGALRM;
            sev.sigev_notify_thread_id = libc::gettid();
            let mut t: libc::timer_t = std::mem::zeroed();
            assert_eq!(
                libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut t),
                0,
                "timer_create"
            );
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: period.as_nanos() as libc::c_long,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            assert_eq!(libc::timer_settime(t, 0, &spec, null_mut()), 0);
            Ticker(t)
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // SAFETY: our timer; after deleting it no new signal is generated.
        unsafe { libc::timer_delete(self.0) };
    }
}

/// Ends the process with a message if it is not dropped within `secs` seconds.
struct Watchdog {
    done: &'static AtomicBool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(secs: u64, what: &'static str) -> Watchdog {
        let done: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while !done.load(Acquire) {
                if Instant::now() > deadline {
                    // No allocation here: the allocator may be the thing that is stuck.
                    let msg = b"global_reentry watchdog: no progress within the deadline \
                        (deadlock in the allocator?): ";
                    // SAFETY: writing our own bytes to stderr, then leaving at once.
                    unsafe {
                        libc::write(2, msg.as_ptr().cast(), msg.len());
                        libc::write(2, what.as_ptr().cast(), what.len());
                        libc::write(2, b"\n".as_ptr().cast(), 1);
                        libc::_exit(101);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether every byte of `s` is `v` (one `memcmp` of the slice with itself shifted by one, so
/// it is fast even in a debug build and the loop spends its time in the allocator).
fn all_are(s: &[u8], v: u8) -> bool {
    s.first().is_none_or(|&b| b == v) && s[1..] == s[..s.len() - 1]
}

/// The allocation loop the signal interrupts: `GLOBAL` called directly (zeroed allocations of
/// reused, dirty memory and moving reallocs make long critical sections), with std collections
/// in between. Every block is filled with its tag and checked before it is freed. Runs for
/// `time`; returns the number of iterations.
fn allocation_loop(time: Duration) -> usize {
    struct Live {
        p: *mut u8,
        size: usize,
        tag: u8,
    }
    let mut ring: Vec<Live> = Vec::with_capacity(64);
    let call = |f: &mut dyn FnMut()| {
        IN_ALLOC.with(|c| c.set(true));
        f();
        IN_ALLOC.with(|c| c.set(false));
    };
    let deadline = Instant::now() + time;
    let mut i = 0usize;
    while Instant::now() < deadline {
        i += 1;
        let size = [24, 1000, 16 << 10, 64 << 10, 300][i % 5];
        let l = layout(size, 16);
        let mut p = null_mut();
        // SAFETY: non-zero size.
        call(&mut || p = unsafe { GLOBAL.alloc_zeroed(l) });
        assert!(!p.is_null(), "alloc_zeroed({size}) failed in the loop");
        // SAFETY: a fresh block of `size` bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(p, size) };
        assert!(all_are(s, 0), "alloc_zeroed gave dirty memory");
        let tag = i as u8 | 1;
        s.fill(tag);
        let mut live = Live { p, size, tag };
        if i.is_multiple_of(3) {
            // A realloc that usually moves (the block behind is in use).
            let new = live.size * 2 + 16;
            let mut q = null_mut();
            // SAFETY: live.p is a live block of live.size bytes with align 16.
            call(&mut || q = unsafe { GLOBAL.realloc(live.p, layout(live.size, 16), new) });
            assert!(!q.is_null(), "realloc in the loop failed");
            // SAFETY: the first `size` bytes moved with the block; the rest is ours to write.
            let s = unsafe { std::slice::from_raw_parts_mut(q, new) };
            assert!(all_are(&s[..size], tag), "realloc lost bytes");
            s.fill(tag);
            live = Live {
                p: q,
                size: new,
                tag,
            };
        }
        if ring.len() < 64 {
            ring.push(live);
        } else {
            let old = std::mem::replace(&mut ring[i % 64], live);
            // SAFETY: old is a live block of old.size bytes, filled with its tag.
            let s = unsafe { std::slice::from_raw_parts(old.p, old.size) };
            assert!(
                all_are(s, old.tag),
                "a live block of the loop was overwritten"
            );
            // SAFETY: freeing it with its layout.
            call(&mut || unsafe { GLOBAL.dealloc(old.p, layout(old.size, 16)) });
        }
        // std collections, through the global allocator (not counted as "inside").
        let v: Vec<u64> = (0..(i % 50) as u64).collect();
        let text = format!("{i}:{}", v.len());
        assert!(text.starts_with(&i.to_string()));
    }
    for old in ring {
        // SAFETY: live blocks of the ring.
        unsafe { GLOBAL.dealloc(old.p, layout(old.size, 16)) };
    }
    i
}

/// Row "allocation during a lock for the global allocator": a handler that allocates (and
/// reallocates and frees its own block) while the interrupted thread may hold its arena's lock.
#[test]
fn signal_handler_allocates_while_the_thread_holds_an_arena() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _watchdog = Watchdog::start(
        20,
        "signal_handler_allocates_while_the_thread_holds_an_arena",
    );
    reset_counters(MODE_ALLOC);
    install_handler();
    let iterations = {
        let _ticker = Ticker::at_this_thread(Duration::from_micros(100));
        allocation_loop(Duration::from_millis(500))
    };
    let (runs, inside) = (RUNS.load(Relaxed), INSIDE.load(Relaxed));
    eprintln!("{iterations} iterations, {runs} signals, {inside} inside a GLOBAL call");
    assert!(iterations > 100, "the loop made {iterations} iterations");
    assert!(runs >= 200, "the handler ran only {runs} times in 0.5 s");
    assert!(
        inside >= 20,
        "only {inside} of {runs} signals arrived inside the allocator"
    );
    assert_eq!(NULLS.load(Relaxed), 0, "allocations failed in the handler");
    assert_eq!(
        CORRUPT.load(Relaxed),
        0,
        "realloc in the handler lost bytes"
    );
    GLOBAL.heap().check().expect("global heap consistent");
}

/// Starts a thread with `pthread_create`, for a forked child. Not `std::thread::spawn`: a
/// thread std starts takes a process-wide lock (the stack-overflow handler's table of thread
/// information) that another thread of the test harness may have held at the moment of the
/// fork; in the child nobody ever releases it, and every new thread waited for it forever (seen
/// under load, 1 run in 25: all 16 threads in `thread_info::set_current_info`).
fn spawn_raw(f: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> libc::pthread_t {
    // SAFETY: a zeroed pthread_t is overwritten by pthread_create; default attributes; `f`
    // takes no argument it reads.
    unsafe {
        let mut t: libc::pthread_t = std::mem::zeroed();
        let r = libc::pthread_create(&mut t, std::ptr::null(), f, null_mut());
        assert_eq!(r, 0, "pthread_create");
        t
    }
}

/// Waits for a thread from [`spawn_raw`]; returns its result pointer's address.
fn join_raw(t: libc::pthread_t) -> usize {
    let mut ret: *mut libc::c_void = null_mut();
    // SAFETY: a joinable thread of ours, joined once.
    let r = unsafe { libc::pthread_join(t, &mut ret) };
    assert_eq!(r, 0, "pthread_join");
    ret.addr()
}

/// Runs `body` in a forked child that must exit 0 within `secs` seconds; fails with `what`
/// on a hang.
fn in_child(secs: u64, what: &str, body: fn() -> i32) {
    // Hold every arena across fork, so the child does not inherit a lock some other thread held.
    GLOBAL.fork_safe();
    // SAFETY: the child runs `body` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(body).unwrap_or(99);
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut status = 0;
    loop {
        // SAFETY: polling our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("{what}: the child made no progress within {secs} s (deadlock)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what}: the child failed (status {status:#x})"
    );
}

/// Re-entrant `realloc` of a block whose arena the interrupted thread holds: the handler
/// cannot take another arena for a block that lives in this one, so `realloc` must not wait for
/// a lock its own thread holds (it could, for example, allocate elsewhere, copy, and free
/// through the remote list).
#[test]
fn signal_handler_reallocates_a_block_of_the_held_arena() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_child(
        20,
        "realloc from a signal handler of a block in the arena the interrupted thread holds",
        || {
            reset_counters(MODE_REALLOC_SHARED);
            let l = layout(64, 16);
            // SAFETY: a 64-byte block from this thread's home arena, the one its loop uses.
            unsafe {
                let p = GLOBAL.alloc(l);
                assert!(!p.is_null());
                p.write_bytes(0x5C, 64);
                SHARED.store(p, Relaxed);
            }
            SHARED_SIZE.store(64, Relaxed);
            install_handler();
            let iterations = {
                let _ticker = Ticker::at_this_thread(Duration::from_micros(100));
                allocation_loop(Duration::from_millis(500))
            };
            if summary("realloc of a block of the held arena", iterations) {
                0
            } else {
                1
            }
        },
    );
}

/// A handler that frees blocks its thread allocated earlier (from the arena the thread's loop
/// holds when the signal comes): `dealloc` must never wait for a lock (README: a free that
/// cannot take its arena's lock goes onto the arena's remote-free list).
#[test]
fn signal_handler_frees_a_block_of_the_held_arena() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_child(
        20,
        "dealloc from a signal handler of a block in the arena the interrupted thread holds",
        || {
            reset_counters(MODE_FREE_POOL);
            for slot in &POOL {
                // SAFETY: a 64-byte block from this thread's home arena, filled with 0x3C.
                unsafe {
                    let p = GLOBAL.alloc(layout(64, 16));
                    assert!(!p.is_null());
                    p.write_bytes(0x3C, 64);
                    slot.store(p, Relaxed);
                }
            }
            install_handler();
            let iterations = {
                let _ticker = Ticker::at_this_thread(Duration::from_micros(100));
                allocation_loop(Duration::from_millis(500))
            };
            if summary("dealloc of blocks of the held arena", iterations) {
                0
            } else {
                1
            }
        },
    );
}

/// Many threads, each interrupted by its own timer while it allocates: when a handler runs on
/// a thread that holds its home arena while the other arenas are all busy, it must still not
/// wait for the arena its own thread holds. It tries every arena for a while and may then fail
/// (null, counted): the test asserts progress, intact contents and a valid heap.
#[test]
fn signal_handlers_on_many_threads_with_every_arena_busy() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_child(
        20,
        "signal handlers allocating on 16 threads that keep every arena busy",
        || {
            reset_counters(MODE_ALLOC);
            install_handler();
            extern "C" fn worker(_: *mut libc::c_void) -> *mut libc::c_void {
                let _ticker = Ticker::at_this_thread(Duration::from_micros(100));
                // An iteration count, carried in the thread's result pointer.
                core::ptr::without_provenance_mut(allocation_loop(Duration::from_millis(500)))
            }
            let threads: Vec<_> = (0..2 * isoheap::ARENAS)
                .map(|_| spawn_raw(worker))
                .collect();
            let iterations: usize = threads.into_iter().map(join_raw).sum();
            if summary_with("16 threads", iterations, true) {
                0
            } else {
                1
            }
        },
    );
}

/// The three handler modes above with the interrupted thread inside a `GLOBAL.scope()`: its
/// loop allocates from the scope heap (maybe holding that heap's lock when the signal comes),
/// the pool and the shared block are scope blocks, and the handler's own allocations are
/// redirected too. A re-entered call never waits for the scope heap's lock: an allocation
/// then comes from the arenas, a free goes onto the scope heap's remote list, a realloc moves
/// the block to the arenas.
#[test]
fn signal_handlers_while_the_thread_is_in_a_scope() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (mode, what) in [
        (
            MODE_ALLOC,
            "allocation from a signal handler inside a scope",
        ),
        (
            MODE_FREE_POOL,
            "dealloc from a signal handler of scope blocks",
        ),
        (
            MODE_REALLOC_SHARED,
            "realloc from a signal handler of a scope block",
        ),
    ] {
        MODE.store(mode, Relaxed);
        in_child(20, what, || {
            let mode = MODE.load(Relaxed);
            reset_counters(mode);
            POOL_NEXT.store(0, Relaxed);
            let scope = GLOBAL.scope();
            if mode == MODE_FREE_POOL {
                for slot in &POOL {
                    // SAFETY: a 64-byte scope block, filled with 0x3C.
                    unsafe {
                        let p = GLOBAL.alloc(layout(64, 16));
                        assert!(!p.is_null());
                        p.write_bytes(0x3C, 64);
                        slot.store(p, Relaxed);
                    }
                }
            }
            if mode == MODE_REALLOC_SHARED {
                // SAFETY: a 64-byte scope block, filled with 0x5C.
                unsafe {
                    let p = GLOBAL.alloc(layout(64, 16));
                    assert!(!p.is_null());
                    p.write_bytes(0x5C, 64);
                    SHARED.store(p, Relaxed);
                }
                SHARED_SIZE.store(64, Relaxed);
            }
            let in_scope = scope.stats().in_use;
            install_handler();
            let iterations = {
                let _ticker = Ticker::at_this_thread(Duration::from_micros(100));
                allocation_loop(Duration::from_millis(500))
            };
            let ok = summary("in a scope", iterations)
                && (mode != MODE_FREE_POOL || in_scope >= POOL_LEN * 64)
                && GLOBAL.live_scopes() >= 1;
            drop(scope);
            if ok { 0 } else { 1 }
        });
    }
}
