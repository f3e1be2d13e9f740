//! Counters shared by the workers, the resident size, and the units the summary prints.

use crate::http::Outcome;
use crate::http::Stage;
use isoheap::Stats;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Counters shared by the workers.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) served: AtomicUsize,
    pub(crate) over_body: AtomicUsize,
    pub(crate) over_document: AtomicUsize,
    pub(crate) no_memory: AtomicUsize,
    pub(crate) rejected: AtomicUsize,
    /// Largest `peak_in_use` of a request's heap, over the requests served with 200.
    pub(crate) peak_served: AtomicUsize,
    /// Sum of those peaks (for the mean).
    pub(crate) peak_served_sum: AtomicUsize,
    /// Largest `peak_in_use` over the refused requests (at most the budget).
    pub(crate) peak_refused: AtomicUsize,
    /// Sum of the heaps' `budget_refusals`.
    pub(crate) budget_refusals: AtomicUsize,
    /// Largest resident size seen (by the sampler thread, and by workers at each refusal).
    pub(crate) rss_peak: AtomicUsize,
}

impl Metrics {
    pub(crate) fn record(&self, outcome: &Outcome, stats: &Stats) {
        let peak = stats.peak_in_use;
        self.budget_refusals
            .fetch_add(stats.budget_refusals, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Served => {
                self.peak_served.fetch_max(peak, Ordering::Relaxed);
                self.peak_served_sum.fetch_add(peak, Ordering::Relaxed);
                &self.served
            }
            Outcome::OverBudget(stage) => {
                self.peak_refused.fetch_max(peak, Ordering::Relaxed);
                match stage {
                    Stage::Body => &self.over_body,
                    Stage::Document => &self.over_document,
                }
            }
            Outcome::NoMemory => &self.no_memory,
            Outcome::Rejected => &self.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Resident size
// ---------------------------------------------------------------------------------------------

/// The page size, from the auxiliary vector's `AT_PAGESZ` (no libc call, no `unsafe`).
pub(crate) fn page_size() -> Option<usize> {
    const AT_PAGESZ: usize = 6;
    const W: usize = size_of::<usize>();
    let aux = std::fs::read("/proc/self/auxv").ok()?;
    aux.chunks_exact(2 * W).find_map(|pair| {
        let key = usize::from_ne_bytes(pair[..W].try_into().ok()?);
        let value = usize::from_ne_bytes(pair[W..].try_into().ok()?);
        (key == AT_PAGESZ).then_some(value)
    })
}

/// Resident bytes: the second field of `/proc/self/statm` (pages) times the page size.
pub(crate) fn rss_bytes(page: Option<usize>) -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page?)
}

pub(crate) fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

pub(crate) fn mib(bytes: Option<usize>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

pub(crate) fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}
