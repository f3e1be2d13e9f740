//! isoheap's shared test kit (not published): what the test binaries and the fuzz targets share.
//!
//! - [`Front`]: one trait over every way into a heap, with implementations for `&Heap` through
//!   allocator-api2 ([`Api2`]) and core's `Allocator` ([`Core`], feature `nightly`), the
//!   inherent methods of `Heap`/`BufferHeap`/`SyncHeap` ([`Methods`]), `SharedHeap` (through
//!   [`Api2`]) and `GlobalHeap` through `GlobalAlloc` ([`Global`]);
//! - [`Rng`]: the one small deterministic generator;
//! - [`Shadow`]: the one shadow model of the live blocks (ordered by address, a pattern written
//!   into every block and verified before every resize and free, `check()` after every step);
//! - [`front_tests!`]: named tests that run one row on every front end of a kind ([`rows`]);
//! - [`bytes`]: helpers for blocks written and checked by hand.
//!
//! Features `std`, `mmap`, `allocator-api2` and `nightly` turn on isoheap's feature of the same
//! name and the front ends that need it; isoheap's own features turn these on in its tests.

#![cfg_attr(feature = "nightly", feature(allocator_api))]

pub mod bytes;
mod front;
mod rng;
pub mod rows;
mod shadow;

#[cfg(feature = "allocator-api2")]
pub use front::Api2;
#[cfg(feature = "nightly")]
pub use front::Core;
#[cfg(feature = "mmap")]
pub use front::Global;
pub use front::{Block, Caps, Front, Inspect, Methods, checked_default};
pub use rng::Rng;
pub use shadow::{ABSURD, Options, Rec, Shadow, TAG, must_fail};

/// Bytes a block of `size` takes in its heap (and counts in `stats().in_use`): the size plus
/// the 2-byte tag in checked mode, rounded up to 16.
pub fn span(f: &dyn Front, size: usize) -> usize {
    (size + tag_bytes(f)).next_multiple_of(isoheap::GRANULE)
}

/// Bytes checked mode adds to every block of `f`'s heap: a 2-byte tag after the caller's bytes.
pub fn tag_bytes(f: &dyn Front) -> usize {
    if f.checked() { TAG } else { 0 }
}

/// Test cases or workload sizes scaled by `ISOHEAP_TEST_SCALE` (a factor, default 1; `0.25`
/// runs a quarter, `4` four times as many), never below 1.
pub fn scaled(n: u32) -> u32 {
    let f: f64 = std::env::var("ISOHEAP_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|f: &f64| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);
    ((n as f64 * f).round() as u32).max(1)
}

/// Named tests that run one row (a `fn(&dyn Front)`) on the front ends of one kind each:
///
/// ```ignore
/// front_tests!(zero_size {
///     heap => zero_size_heap { /* more, after the row */ },
///     core(3 << 20) => zero_size_core,   // cfg(feature = "nightly"); a buffer of 3 MiB
///     buffer(3 << 20) => zero_size_buffer,
///     sync => zero_size_sync,
/// });
/// ```
///
/// `heap`: [`rows::heap`]; `core(len)`: [`rows::core`] (only with the calling crate's
/// `nightly` feature); `buffer(len)`: [`rows::buffer_heap`]; `sync`: [`rows::sync`]. Each
/// test may have a block that runs after the row.
#[macro_export]
macro_rules! front_tests {
    ($row:path { $( $kind:ident $( ($arg:expr) )? => $test:ident $( $extra:block )? ),* $(,)? }) => {
        $( $crate::front_tests!(@one $kind [$($arg)?] $row, $test $($extra)?); )*
    };
    (@one heap [] $row:path, $test:ident $($extra:block)?) => {
        #[test]
        fn $test() {
            $crate::rows::heap($row);
            $($extra)?
        }
    };
    (@one core [$len:expr] $row:path, $test:ident $($extra:block)?) => {
        #[cfg(feature = "nightly")]
        #[test]
        fn $test() {
            $crate::rows::core($len, $row);
            $($extra)?
        }
    };
    (@one buffer [$len:expr] $row:path, $test:ident $($extra:block)?) => {
        #[test]
        fn $test() {
            $crate::rows::buffer_heap($len, $row);
            $($extra)?
        }
    };
    (@one sync [] $row:path, $test:ident $($extra:block)?) => {
        #[test]
        fn $test() {
            $crate::rows::sync($row);
            $($extra)?
        }
    };
}

/// Runs a test in a process of its own, for a test that needs the whole process (one that
/// compares process-wide counters, which the other tests of its binary move). Call it first
/// thing in the test, with `module_path!()` and the test function's name, and go on only if it
/// returns true:
///
/// ```ignore
/// if !isoheap_testkit::alone(module_path!(), "os_maps_and_unmaps_balance") {
///     return;
/// }
/// ```
///
/// In the test binary's own process it runs this binary again with `--exact` on that test
/// alone (and `ISOHEAP_TEST_ALONE` naming it), asserts that the test passed there, and returns
/// false; in that child it returns true. Under Miri (no processes) it returns true: the test
/// runs in place.
pub fn alone(module_path: &str, test: &str) -> bool {
    const ENV: &str = "ISOHEAP_TEST_ALONE";
    // The test's name in its binary: the module path without the crate's name.
    let name = match module_path.split_once("::") {
        Some((_, path)) => format!("{path}::{test}"),
        None => test.to_owned(),
    };
    if cfg!(miri) || std::env::var(ENV).is_ok_and(|v| v == name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(ENV, &name)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name}, alone in a child process: {}\n{stdout}\n{stderr}",
        out.status
    );
    false
}
