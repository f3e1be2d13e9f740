//! Every test that needs no process-wide state, in one binary (one link, one harness), a module
//! per suite. Select a suite by test-name filter: `cargo test --test it -- model::` (libtest
//! takes several filters: `-- model:: sync::`), skip one with `--skip faults::`.
//!
//! - `integration`: the public API end to end;
//! - `model`: the model-based property test (proptest against the kit's shadow model);
//! - `bad_input`: bad and extreme input through every front end (the table in
//!   `docs/bad-input.md`);
//! - `regressions`: one test per class of allocator bug;
//! - `reliability`: one test per confirmed reliability bug (mapping, peak, wiping on drop);
//! - `ergonomics`: the allocator traits (0.2, 0.4, core) on every front end, `format_in!`,
//!   `String`, the `alloc` helpers and `collections::HashMap`;
//! - `sync`: the thread-safe heap from many threads (also under Miri);
//! - `faults`: planted misuses, each in a child process (this binary run again with
//!   `ISOHEAP_FAULT`); not under Miri, and only where checked mode is on by default.
//!
//! The binaries that install a `#[global_allocator]` or measure the resident size stay apart:
//! `tests/global.rs`, `tests/global_reentry.rs`, `tests/rss.rs`.
#![cfg_attr(feature = "nightly", feature(allocator_api, btreemap_alloc))]

mod bad_input;
#[cfg(all(feature = "std", feature = "mmap", feature = "allocator-api2"))]
mod ergonomics;
#[cfg(all(not(miri), any(debug_assertions, feature = "checked")))]
mod faults;
mod integration;
mod model;
mod regressions;
mod reliability;
mod sync;
