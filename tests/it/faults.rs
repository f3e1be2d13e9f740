//! Planted faults: every misuse that checked mode must catch, on every front end, each run in a
//! child process (this test binary run again with `ISOHEAP_FAULT=<front end>/<fault>`). The
//! child prints the address it is about to misuse, then misuses it; the parent checks that the
//! child died (a panic, or an abort for `GlobalAlloc`, which must not unwind) with a message that
//! names that address and the kind of fault, and that it never reached the line after the
//! misuse.
//!
//! Not under Miri (it cannot spawn processes; `heap::checked_tests` covers the same detections
//! in-process there), and only where checked mode is on by default (debug assertions or the
//! `checked` feature), which is how `cargo test` runs.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use isoheap::{GlobalHeap, Heap, SharedHeap, SyncHeap};
#[cfg(feature = "nightly")]
use isoheap_testkit::Core;
use isoheap_testkit::bytes::layout;
use isoheap_testkit::{Api2, Front, Global};
use std::process::Command;

const ENV: &str = "ISOHEAP_FAULT";

/// The child's test, by its full name in this binary.
const CHILD: &str = "faults::fault_child";

/// Allocate, free and resize through a front end's own API, with the faults' arguments.
trait Plants {
    fn alloc(&self, size: usize, align: usize) -> NonNull<u8>;
    /// # Safety
    /// Deliberately none: the faults call it with bad arguments.
    unsafe fn free(&self, p: NonNull<u8>, size: usize, align: usize);
    /// # Safety
    /// As for `free`.
    unsafe fn grow(&self, p: NonNull<u8>, old: usize, new: usize, align: usize);
}

impl<F: Front + ?Sized> Plants for F {
    fn alloc(&self, size: usize, align: usize) -> NonNull<u8> {
        self.allocate(layout(size, align)).unwrap().cast()
    }
    unsafe fn free(&self, p: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: none (faults under test): the heap must catch the misuse.
        unsafe { self.deallocate(p, layout(size, align)) }
    }
    unsafe fn grow(&self, p: NonNull<u8>, old: usize, new: usize, align: usize) {
        // SAFETY: none (faults under test): the heap must catch the misuse.
        let r = unsafe { Front::grow(self, p, layout(old, align), layout(new, align)) };
        r.unwrap();
    }
}

/// A planted fault: returns the address it misused (printed before the misuse).
type Plant = fn(&dyn Plants, &dyn Plants);

/// Prints the address about to be misused, so the parent can find it in the message.
fn planted(p: NonNull<u8>) {
    eprintln!("planted at {:#x}", p.addr().get());
}

/// Every fault: name, what the message must say, and the planting.
const FAULTS: &[(&str, &str, Plant)] = &[
    ("double_free_cached", "double free", |h, _| {
        let a = h.alloc(24, 8);
        let _guard = h.alloc(24, 8);
        // SAFETY: the second free is the fault.
        unsafe {
            h.free(a, 24, 8);
            planted(a);
            h.free(a, 24, 8);
        }
    }),
    (
        "double_free_merged",
        "is not the start of a live block",
        |h, _| {
            // Larger than the quick lists take: the first free merges it into the frontier.
            let a = h.alloc(8000, 16);
            // SAFETY: the second free is the fault.
            unsafe {
                h.free(a, 8000, 16);
                planted(a);
                h.free(a, 8000, 16);
            }
        },
    ),
    ("double_free_indexed", "double free", |h, _| {
        // Larger than the quick lists take, with a live block after it: it goes to the index.
        let a = h.alloc(8000, 16);
        let _guard = h.alloc(16, 16);
        // SAFETY: the second free is the fault.
        unsafe {
            h.free(a, 8000, 16);
            planted(a);
            h.free(a, 8000, 16);
        }
    }),
    ("foreign_other_heap", "foreign pointer", |h, other| {
        let f = other.alloc(64, 16);
        planted(f);
        // SAFETY: none: the block belongs to the other heap (the fault).
        unsafe { h.free(f, 64, 16) }
    }),
    ("foreign_stack", "foreign pointer", |h, _| {
        let mut local = [0u64; 4];
        let p = NonNull::from(&mut local).cast::<u8>();
        planted(p);
        // SAFETY: none: a stack address (the fault).
        unsafe { h.free(p, 32, 8) }
    }),
    ("foreign_on_grow", "foreign pointer", |h, other| {
        let f = other.alloc(64, 16);
        planted(f);
        // SAFETY: none: the block belongs to the other heap (the fault).
        unsafe { h.grow(f, 64, 128, 16) }
    }),
    ("interior", "interior pointer", |h, _| {
        let a = h.alloc(100, 16);
        // SAFETY: in bounds of the live block.
        let inside = unsafe { a.add(32) };
        planted(inside);
        // SAFETY: none: an interior pointer (the fault).
        unsafe { h.free(inside, 68, 16) }
    }),
    ("size_larger", "size that does not match", |h, _| {
        let a = h.alloc(20, 8);
        planted(a);
        // SAFETY: none: a size above the one allocated (the fault).
        unsafe { h.free(a, 28, 8) }
    }),
    (
        "size_smaller_same_granule",
        "size that does not match",
        |h, _| {
            let a = h.alloc(20, 8);
            planted(a);
            // SAFETY: none: a size below the one allocated (the fault).
            unsafe { h.free(a, 17, 8) }
        },
    ),
    ("size_other_granules", "size that does not match", |h, _| {
        let a = h.alloc(100, 8);
        let _b = h.alloc(100, 8);
        planted(a);
        // SAFETY: none: a size spanning the next block (the fault).
        unsafe { h.free(a, 200, 8) }
    }),
    ("size_on_grow", "size that does not match", |h, _| {
        let a = h.alloc(20, 8);
        planted(a);
        // SAFETY: none: the old size is wrong (the fault).
        unsafe { h.grow(a, 40, 80, 8) }
    }),
    ("align_mismatch", "alignment that does not match", |h, _| {
        let a = h.alloc(20, 8);
        planted(a);
        // SAFETY: none: another alignment (the fault).
        unsafe { h.free(a, 20, 16) }
    }),
    ("overflow_into_canary", "canary", |h, _| {
        let a = h.alloc(20, 8);
        // SAFETY: none: one byte past the block (the fault); still heap memory.
        unsafe {
            a.as_ptr().add(20).write(0);
            planted(a);
            h.free(a, 20, 8);
        }
    }),
    ("overflow_into_tag", "corrupted tag", |h, _| {
        let a = h.alloc(30, 8);
        // SAFETY: none: two bytes past the block (the fault); still heap memory.
        unsafe {
            a.as_ptr().add(31).write(!a.as_ptr().add(31).read());
            planted(a);
            h.free(a, 30, 8);
        }
    }),
    (
        "corrupted_free_neighbour",
        "free block whose tag is corrupted",
        |h, _| {
            // b first: a heap's first chunk is sized to its first request, so a block allocated
            // before b might sit in a chunk of its own.
            let b = h.alloc(8000, 16);
            let a = h.alloc(200, 16);
            let _guard = h.alloc(16, 16);
            // SAFETY: b is freed, then written (the fault); still heap memory.
            unsafe {
                h.free(b, 8000, 16);
                b.as_ptr().add(12).cast::<u32>().write(3);
                planted(a);
                h.free(a, 200, 16);
            }
        },
    ),
    ("write_after_free", "use after free", |h, _| {
        let a = h.alloc(64, 16);
        // SAFETY: a is freed, then written (the fault); still heap memory.
        unsafe {
            h.free(a, 64, 16);
            a.as_ptr().add(40).write(1);
        }
        planted(a);
        let _again = h.alloc(64, 16);
    }),
];

/// A control that misuses nothing: the harness must report it as not detected (so the check
/// above can fail).
const CONTROL: (&str, &str, Plant) = ("control_correct_use", "", |h, _| {
    let a = h.alloc(24, 8);
    planted(a);
    // SAFETY: a live block with its layout.
    unsafe { h.free(a, 24, 8) }
});

const FRONTS: &[&str] = &[
    "heap_api2",
    #[cfg(feature = "nightly")]
    "heap_core",
    "buffer",
    "sync",
    "shared",
    "global",
];

/// Runs fault `name` on front end `front` (in the child).
fn run(front: &str, name: &str) {
    let plant = FAULTS
        .iter()
        .chain([&CONTROL])
        .find(|f| f.0 == name)
        .expect("known fault")
        .2;
    match front {
        "heap_api2" => {
            let (h, o) = (Heap::new(), Heap::new());
            plant(&Api2::new(&h, "heap"), &Api2::new(&o, "other"));
        }
        #[cfg(feature = "nightly")]
        "heap_core" => {
            let (h, o) = (Heap::new(), Heap::new());
            plant(&Core::new(&h, "heap"), &Core::new(&o, "other"));
        }
        "buffer" => {
            let mut a = vec![MaybeUninit::<u8>::uninit(); 1 << 20];
            let mut b = vec![MaybeUninit::<u8>::uninit(); 1 << 20];
            let (h, o) = (
                Heap::from_buffer(&mut a).unwrap(),
                Heap::from_buffer(&mut b).unwrap(),
            );
            plant(&Api2::new(&*h, "heap"), &Api2::new(&*o, "other"));
        }
        "sync" => {
            let (h, o) = (SyncHeap::new(), SyncHeap::new());
            plant(&Api2::new(&h, "heap"), &Api2::new(&o, "other"));
        }
        "shared" => {
            let (h, o) = (SharedHeap::new(), SharedHeap::new());
            plant(&Api2::new(&*h, "heap"), &Api2::new(&*o, "other"));
        }
        "global" => {
            static G: GlobalHeap = GlobalHeap::new();
            static O: GlobalHeap = GlobalHeap::new();
            plant(&Global(&G), &Global(&O));
        }
        _ => panic!("unknown front end {front}"),
    }
}

/// The child's entry: a no-op unless `ISOHEAP_FAULT` names a fault.
#[test]
fn fault_child() {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let (front, name) = spec.split_once('/').expect("front/fault");
    run(front, name);
    // Reached only if the misuse went undetected.
    eprintln!("NOT DETECTED");
}

/// Runs fault `name` on `front` in a child process: Ok if the child was stopped with a message
/// naming the planted address and containing `expect`, else what happened.
fn detected(front: &str, name: &str, expect: &str) -> Result<(), String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD, "--nocapture", "--test-threads=1"])
        .env(ENV, format!("{front}/{name}"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let addr = err
        .lines()
        .find_map(|l| l.split("planted at ").nth(1))
        .map(str::to_owned);
    let named = addr.as_ref().is_some_and(|a| {
        err.lines()
            .any(|l| l.contains(&format!("isoheap: pointer {a} ")) && l.contains(expect))
    });
    if !out.status.success() && !err.contains("NOT DETECTED") && named {
        Ok(())
    } else {
        Err(format!("{front}/{name}: status {:?}\n{err}", out.status))
    }
}

/// Plants every fault on every front end and checks each was stopped with the right message.
#[test]
fn every_planted_fault_is_detected() {
    let mut missed = Vec::new();
    let mut table = String::new();
    for (name, expect, _) in FAULTS {
        let mut row = format!("{name:28}");
        for front in FRONTS {
            match detected(front, name, expect) {
                Ok(()) => row.push_str("  caught"),
                Err(e) => {
                    row.push_str("  MISSED");
                    missed.push(e);
                }
            }
        }
        table.push_str(&row);
        table.push('\n');
    }
    println!("{:28}  {}\n{table}", "fault", FRONTS.join("  "));
    println!(
        "{} of {} planted faults detected",
        FAULTS.len() * FRONTS.len() - missed.len(),
        FAULTS.len() * FRONTS.len()
    );
    assert!(
        missed.is_empty(),
        "undetected faults:\n{}",
        missed.join("\n")
    );
}

/// The harness itself: correct use is not reported as a detection.
#[test]
fn correct_use_is_not_a_detection() {
    for front in FRONTS {
        assert!(detected(front, CONTROL.0, CONTROL.1).is_err(), "{front}");
    }
}
