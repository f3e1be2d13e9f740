//! `isoheap::Heap` through allocator-api2's `Allocator` (the stable front end), built in one of
//! several ways (new, limit, no quick lists, budget, with_capacity, any builder), with resets,
//! renewals, budgets set on the fly, stats and map checks.
#![no_main]

use isoheap_testkit::Api2 as Via;
include!("../src/heap_front.rs");
