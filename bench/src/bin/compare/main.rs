//! Side-by-side comparison of `isoheap` with other allocators, all driven through one small
//! trait ([`Subject`]) in one process, interleaved, with fixed seeds.
//!
//! The modules: [`peers`] (the trait and each allocator behind it), [`workloads`] (random
//! numbers, distributions, tagged blocks and the workloads), [`report`] (table, CSV, chart);
//! this file holds the options and the runner.
//!
//! ```text
//! cargo run --release -p isoheap-bench --bin compare -- --quick  # 3 reps, smaller op counts (< 1 min)
//! cargo run --release -p isoheap-bench --bin compare             # 5 repetitions (< 10 min)
//! options: --quick  --reps N  --out DIR  --only SUBJECT[,SUBJECT]  --filter WORKLOAD (id such as
//!          churn_100, or a substring of the name)
//! ```
//!
//! Subjects: `isoheap` (inherent `allocate`/`deallocate`/`grow`/`shrink`), glibc malloc
//! (`std::alloc::System`), `mimalloc` (`MiMalloc` used directly, not as the global allocator),
//! `bumpalo` (`Bump`, its allocator-api2 `Allocator` impl for free/grow/shrink; it frees only the
//! most recent block), and three buffer-backed allocators that each run over their own
//! anonymous `mmap` region (`MAP_NORESERVE`, 8 GiB of address space, 64 MiB for `efficiency`):
//! `talc` (`Talc<Manual>` + `claim`), `rlsf` (`Tlsf<u32, u32, 30, 32>`) and
//! `linked_list_allocator` (`Heap::init`). A fresh subject (new region / new `Heap` / new
//! `Bump`) is built for every workload run; the system allocator and mimalloc are global state.
//!
//! # Random numbers and distributions
//! SplitMix64 with a fixed seed per workload (the same op sequence for every subject and
//! repetition). "Log-uniform a..b" means `a * (b/a)^u`, `u` uniform in [0, 1), taken from a
//! 4096-entry quantile table (so drawing costs one table load, not `exp`). Every block gets a
//! random tag byte written at its first and last byte; the tags are checked on free and after
//! each realloc, and any mismatch is reported as corruption. Nothing else is written, so the
//! times are allocator + copy cost + a small harness overhead (PRNG, bookkeeping, two byte
//! writes) that is the same for every subject.
//!
//! - **churn K** (K = 100, 10 000, 100 000, 1 000 000): fill to K live blocks (untimed), then
//!   `ops` steps (timed): allocate with p = 0.55 while live < K and p = 0.45 otherwise, else
//!   free a uniformly chosen live block. Sizes log-uniform 8 B..4 KiB (mean ~660 B); alignment
//!   8 (70 %), 16 (25 %), 64 (5 %). Then everything is freed (untimed). `linked_list_allocator`
//!   is O(free blocks) per call: its op count is capped at K = 10 000 and 100 000 (see
//!   `LLA_CHURN_CAP`, `LLA_CHURN_CAP_QUICK`) and it is skipped at K = 1 000 000.
//! - **request**: one request makes 2 000 objects: 40 % strings (8..64 B uniform, align 1),
//!   30 % structs (16..128 B in steps of 8, align 8 or 16 at 4:1), 30 % small vecs (start 16 B,
//!   align 8, grown by doubling realloc to 16 << U{0..6} B). 30 % of the objects are
//!   temporaries kept in an 8-slot ring (freed when pushed out). A hash-table-like array (1 KiB,
//!   align 16) is rehashed (allocate 2x, copy, free old) after objects 250, 500, 1000 and 1800.
//!   At the end every object is freed in allocation order. The **reset** variant (isoheap:
//!   `Heap::reset()`, which keeps 1 MiB warm; bumpalo: `Bump::reset()`) frees
//!   the temporaries and the old tables one by one but drops the rest with the heap; the reset
//!   counts as one call.
//! - **vec_push**: 1 000 vecs of u64; each step picks a vec uniformly and makes one allocator
//!   call: the first allocation (4 elements), a doubling realloc, or - once the capacity
//!   reaches the vec's target length (log-uniform 1..16 384 elements) - its free, after which
//!   the slot starts a new vec. Reports the fraction of reallocs that returned the same pointer.
//! - **vec_push_isolated**: the same, but isoheap gives each vec its own `Heap::new()` and
//!   bumpalo its own `Bump::new()` (made at the first allocation, dropped with the vec, both
//!   inside the timing); the other subjects share one allocator, as in vec_push.
//! - **realloc_strings**: 1 000 strings (align 1); each step picks one uniformly: new strings
//!   start at 1..16 B, then grow by 1..16 B appends through exact-size realloc until their
//!   target (log-uniform 16 B..8 KiB), then are freed. Reports the in-place fraction too.
//! - **sizes D, L** (the grid; workloads other people's benchmarks vary systematically): a
//!   size distribution D (64 B fixed; uniform 8 B..4 KiB; log-uniform 8 B..4 KiB; powers of two
//!   8 B..4 KiB; bimodal 90 % 16..64 B / 10 % 4..64 KiB; log-uniform 8 B..64 KiB) and a
//!   lifetime order L (LIFO, FIFO, random): 1 000 live blocks, each step an allocation or the
//!   free of the newest / oldest / a random block (as churn, alignment mix as churn). The full
//!   run has all 18 cells; `--quick` one per distribution, the lifetimes taking turns.
//! - **glibc-simple**: after glibc's `benchtests/bench-malloc-simple.c` (in mimalloc-bench):
//!   batches of 25, 100, 400 and 1 600 blocks of one size (16, 64, 256, 1 024, 4 096 B),
//!   allocated then freed in allocation order.
//! - **random actions (talc)**: after talc's `random_actions` benchmark: 1/7 realloc of a
//!   random block to 1..3x the maximum size, 3/7 allocate (always below 300 live), 3/7 free a
//!   random block; sizes biased small up to 1 000, 3 000, 10 000, 30 000 B in turn, alignment
//!   1..64 B.
//! - **stress (rlsf)**: after rlsf's stress benchmark: 1 024 live blocks; free a random one,
//!   allocate one of a size in `min..=min+mask` (ten ranges from 1..8 to 128..255, in turn)
//!   at alignment `4 << (r & 3)`.
//! - **efficiency**: a fixed 64 MiB heap (isoheap: `Heap::builder().initial(64 MiB).limit(64
//!   MiB)`; talc, rlsf, linked_list_allocator: a 64 MiB region; bumpalo: `Bump` with an
//!   allocation limit of 64 MiB; system and mimalloc have no fixed heap and are skipped). Steps:
//!   55 % allocate, 20 % free a random block, 25 % realloc a random block to a new log-uniform
//!   8 B..4 KiB size (alignment mix as in churn), until the first allocation or realloc fails.
//!   Reports the bytes requested by live blocks at that moment / 64 MiB (higher is better).
//!   Deterministic, so it runs once. Also with every distribution of the sizes grid (in
//!   `--quick`: log-uniform and bimodal); `linked_list_allocator` only with the first (with up
//!   to a million live blocks, its O(free blocks) calls would take hours).
//!
//! The multi-threaded patterns of the same suites (larson, xmalloc, cache-scratch) run on
//! `SyncHeap` and `GlobalHeap` in `global_bench`.
//!
//! # Output
//! Medians over the repetitions (subject order rotates each repetition). A Markdown table of
//! ns per allocator call with the ratio to the system allocator (lower is better), a table of
//! in-place realloc fractions, the same as CSV in `target/compare/compare.csv` (and `.md`),
//! `target/compare/churn.svg` (ns per call against live blocks, both axes log-scale) and
//! `target/compare/families.svg` (isoheap's time over the best freeing peer's, per workload).
//! The table's last column is that ratio (for efficiency: the difference in points).
//! isoheap's heap invariants (`Heap::check`, and `in_use == 0` once everything is freed) are
//! checked after every run, outside the timing.

mod peers;
mod report;
mod workloads;

use peers::{BIG_REGION, BumpS, FIXED_HEAP, Iso, KINDS, Kind, Lla, Mi, RlsfS, Subject, Sys, TalcS};
use report::{Cell, churn_svg, cpu_model, csv, families_svg, report, utc_now};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;
use workloads::{
    DISTS, Dist, Dists, LIVES, LogTable, Outcome, Wl, churn, efficiency, glibc_simple,
    random_actions, realloc_strings, request, rlsf_stress, sizes, vec_push,
};

// ---------------------------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------------------------

pub(crate) struct Cfg {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    pub(crate) churn_ops: usize,
    pub(crate) requests: usize,
    pub(crate) vec_steps: usize,
    pub(crate) str_steps: usize,
    pub(crate) sizes_ops: usize,
    pub(crate) glibc_rounds: usize,
    pub(crate) ra_ops: usize,
    pub(crate) stress_ops: usize,
}

/// Churn op cap for linked_list_allocator (O(free blocks) per call), by K.
/// Full run: (K, cap). Its time per call grows as the free list develops (~4 us after 10 000
/// ops at K = 100 000, ~28 us after 50 000).
const LLA_CHURN_CAP: [(usize, usize); 2] = [(10_000, 100_000), (100_000, 50_000)];
/// `--quick`: (K, cap).
const LLA_CHURN_CAP_QUICK: [(usize, usize); 2] = [(10_000, 50_000), (100_000, 10_000)];

enum Plan {
    Run,
    Skip(&'static str),
}

fn plan(kind: Kind, wl: Wl) -> Plan {
    match (kind, wl) {
        (Kind::Lla, Wl::Churn(k)) if k >= 1_000_000 => Plan::Skip("skipped (O(n))"),
        // Up to a million live blocks in 64 MiB: hours at O(free blocks) per call.
        (Kind::Lla, Wl::Efficiency(d)) if d != Dist::LogUniform => Plan::Skip("skipped (O(n))"),
        (Kind::System | Kind::Mimalloc, Wl::Efficiency(_)) => Plan::Skip("no fixed heap"),
        // Checked mode's cost is measured on churn and requests (the issue's workloads).
        (Kind::IsoChecked, Wl::Churn(_) | Wl::Request { .. }) => Plan::Run,
        (Kind::IsoChecked, _) => Plan::Skip("not measured"),
        (k, Wl::Request { reset: true })
            if !matches!(k, Kind::Isoheap | Kind::IsoChecked | Kind::Bumpalo) =>
        {
            Plan::Skip("no bulk free")
        }
        _ => Plan::Run,
    }
}

fn run_on<S: Subject>(
    s: &mut S,
    kind: Kind,
    wl: Wl,
    cfg: &Cfg,
    d: &Dists,
) -> Result<Outcome, String> {
    assert_eq!(s.name(), kind.name(), "subject and kind disagree");
    let seed = wl.seed();
    match wl {
        Wl::Churn(k) => {
            let mut ops = cfg.churn_ops;
            let mut note = None;
            if kind == Kind::Lla
                && let Some(&(_, cap)) = (if cfg.quick {
                    &LLA_CHURN_CAP_QUICK
                } else {
                    &LLA_CHURN_CAP
                })
                .iter()
                .find(|&&(kk, _)| kk == k)
                && cap < ops
            {
                ops = cap;
                note = Some(format!("ops capped at {cap}"));
            }
            let mut o = churn(s, k, ops, seed, d)?;
            o.note = note;
            Ok(o)
        }
        Wl::Request { reset } => request(s, cfg.requests, reset, seed),
        Wl::VecPush { isolated } => vec_push(s, 1000, cfg.vec_steps, isolated, seed, d),
        Wl::ReallocStrings => realloc_strings(s, 1000, cfg.str_steps, seed, d),
        Wl::Efficiency(dist) => efficiency(s, seed, &d.grid[dist as usize], 20_000_000),
        Wl::Sizes(dist, life) => sizes(s, &d.grid[dist as usize], life, 1000, cfg.sizes_ops, seed),
        Wl::GlibcSimple => glibc_simple(s, cfg.glibc_rounds, seed),
        Wl::RandomActions => random_actions(s, cfg.ra_ops, seed),
        Wl::RlsfStress => rlsf_stress(s, cfg.stress_ops, seed),
    }
}

fn run_one(kind: Kind, wl: Wl, cfg: &Cfg, d: &Dists) -> Result<Outcome, String> {
    let fixed = wl.is_eff();
    let region = if fixed { FIXED_HEAP } else { BIG_REGION };
    match kind {
        Kind::Isoheap => {
            let mut s = if fixed {
                Iso::fixed(FIXED_HEAP)
            } else {
                Iso::new()
            };
            run_on(&mut s, kind, wl, cfg, d)
        }
        Kind::IsoChecked => run_on(&mut Iso::checked(), kind, wl, cfg, d),
        Kind::System => run_on(&mut Sys, kind, wl, cfg, d),
        Kind::Mimalloc => run_on(&mut Mi, kind, wl, cfg, d),
        Kind::Bumpalo => {
            let mut s = if fixed {
                BumpS::limited(FIXED_HEAP)
            } else {
                BumpS::new()
            };
            run_on(&mut s, kind, wl, cfg, d)
        }
        Kind::Talc => run_on(&mut TalcS::new(region), kind, wl, cfg, d),
        Kind::Rlsf => run_on(&mut RlsfS::new(region), kind, wl, cfg, d),
        Kind::Lla => run_on(&mut Lla::new(region), kind, wl, cfg, d),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

fn out_dir(arg: Option<String>) -> std::path::PathBuf {
    if let Some(a) = arg {
        return a.into();
    }
    // target/<profile>/compare -> target/compare
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("compare")))
        .unwrap_or_else(|| "target/compare".into())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut reps, mut out) = (false, None, None);
    let (mut only, mut filter): (Option<String>, Option<String>) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--reps" => {
                reps = args
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n > 0)
            }
            "--out" => out = args.next(),
            "--only" => only = args.next(),
            "--filter" => filter = args.next(),
            "--bench" => {} // passed by `cargo bench`-style runners; ignored
            "-h" | "--help" => {
                println!(
                    "usage: compare [--quick] [--reps N] [--out DIR] [--only SUBJECT[,SUBJECT..]] [--filter WORKLOAD-SUBSTRING]\n\
                     subjects: isoheap isoheap_checked system mimalloc bumpalo talc rlsf linked_list_allocator"
                );
                return;
            }
            other => {
                eprintln!("compare: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let cfg = if quick {
        Cfg {
            quick,
            reps: reps.unwrap_or(3),
            churn_ops: 300_000,
            requests: 60,
            vec_steps: 100_000,
            str_steps: 300_000,
            sizes_ops: 200_000,
            glibc_rounds: 10,
            ra_ops: 300_000,
            stress_ops: 300_000,
        }
    } else {
        Cfg {
            quick,
            reps: reps.unwrap_or(5),
            churn_ops: 2_000_000,
            requests: 300,
            vec_steps: 400_000,
            str_steps: 1_500_000,
            sizes_ops: 1_000_000,
            glibc_rounds: 40,
            ra_ops: 1_500_000,
            stress_ops: 1_500_000,
        }
    };
    let dir = out_dir(out);
    let d = Dists {
        small: LogTable::new(8, 4096),
        vec_len: LogTable::new(1, 16_384),
        str_len: LogTable::new(16, 8192),
        grid: DISTS.iter().map(|d| d.table()).collect(),
    };
    // The size grid: every distribution with every lifetime in the full run; in --quick, each
    // distribution once, the lifetimes taking turns (so each family has a cell).
    let grid: Vec<Wl> = DISTS
        .iter()
        .enumerate()
        .flat_map(|(i, &d)| {
            LIVES
                .iter()
                .enumerate()
                .filter(move |&(j, _)| !quick || j == i % LIVES.len())
                .map(move |(_, &l)| Wl::Sizes(d, l))
        })
        .collect();
    let effs = DISTS
        .iter()
        .filter(|&&d| !quick || matches!(d, Dist::LogUniform | Dist::Bimodal))
        .map(|&d| Wl::Efficiency(d));
    let all_wls: Vec<Wl> = [
        Wl::Churn(100),
        Wl::Churn(10_000),
        Wl::Churn(100_000),
        Wl::Churn(1_000_000),
        Wl::Request { reset: false },
        Wl::Request { reset: true },
        Wl::VecPush { isolated: false },
        Wl::VecPush { isolated: true },
        Wl::ReallocStrings,
        Wl::GlibcSimple,
        Wl::RandomActions,
        Wl::RlsfStress,
    ]
    .into_iter()
    .chain(grid)
    .chain(effs)
    .collect();
    let wls: Vec<Wl> = all_wls
        .into_iter()
        .filter(|w| {
            filter
                .as_ref()
                .is_none_or(|f| w.id() == *f || w.name().contains(f.as_str()))
        })
        .collect();
    let wanted = |k: Kind| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|n| n == k.name()))
    };

    let started = Instant::now();
    let date = utc_now();
    let cpu = cpu_model();
    println!("# isoheap comparison");
    println!();
    println!("- date: {date}");
    println!("- cpu: {cpu}");
    println!(
        "- mode: {} ({} repetitions, medians; churn {} ops after the fill, request x{}, vec_push {} steps, realloc_strings {} steps, sizes {} steps, glibc-simple x{}, random actions {} steps, stress {} steps)",
        if cfg.quick { "--quick" } else { "full" },
        cfg.reps,
        cfg.churn_ops,
        cfg.requests,
        cfg.vec_steps,
        cfg.str_steps,
        cfg.sizes_ops,
        cfg.glibc_rounds,
        cfg.ra_ops,
        cfg.stress_ops
    );
    println!();

    let mut cells: Vec<Vec<Cell>> = wls
        .iter()
        .map(|_| KINDS.iter().map(|_| Cell::default()).collect())
        .collect();
    for rep in 0..cfg.reps {
        for (wi, &wl) in wls.iter().enumerate() {
            if wl.is_eff() && rep > 0 {
                continue; // deterministic: once is enough
            }
            let t_wl = Instant::now();
            let mut line = String::new();
            for j in 0..KINDS.len() {
                let ki = (j + rep) % KINDS.len();
                let kind = KINDS[ki];
                let cell = &mut cells[wi][ki];
                if !wanted(kind) {
                    cell.skip = Some("not selected");
                    continue;
                }
                if let Plan::Skip(why) = plan(kind, wl) {
                    cell.skip = Some(why);
                    continue;
                }
                if cell.error.is_some() {
                    continue; // failed before: do not repeat
                }
                let t_run = Instant::now();
                let r = catch_unwind(AssertUnwindSafe(|| run_one(kind, wl, &cfg, &d)));
                let secs = t_run.elapsed().as_secs_f64();
                let took = if secs >= 0.5 {
                    format!("[{secs:.1}s]")
                } else {
                    String::new()
                };
                let r = match r {
                    Ok(r) => r,
                    Err(p) => Err(format!("panicked: {}", panic_text(&*p))),
                };
                match r {
                    Ok(o) => {
                        if o.corrupt > 0 {
                            eprintln!(
                                "!! {} {}: {} tag mismatches (memory corruption)",
                                kind.name(),
                                wl.name(),
                                o.corrupt
                            );
                        }
                        cell.corrupt += o.corrupt;
                        cell.note = o.note.clone().or(cell.note.take());
                        if let Some(e) = o.eff {
                            cell.eff = Some(e);
                            let _ = write!(line, " {}={:.1}%{took}", kind.name(), e * 100.0);
                        } else {
                            cell.ns.push(o.ns_per_call());
                            let _ = write!(line, " {}={:.1}{took}", kind.name(), o.ns_per_call());
                        }
                        if wl.has_inplace() {
                            cell.inplace
                                .push(o.in_place as f64 / o.reallocs.max(1) as f64);
                        }
                    }
                    Err(e) => {
                        eprintln!("!! {} {}: {e}", kind.name(), wl.name());
                        let _ = write!(line, " {}=FAILED", kind.name());
                        cell.error = Some(e);
                    }
                }
            }
            eprintln!(
                "[{:>5.1}s] rep {}/{} {:<24} ({:.1}s){}",
                started.elapsed().as_secs_f64(),
                rep + 1,
                cfg.reps,
                wl.name(),
                t_wl.elapsed().as_secs_f64(),
                line
            );
        }
    }
    let total = started.elapsed().as_secs_f64();

    let md = report(&wls, &cells, &cfg, &date, &cpu, total);
    println!("{md}");

    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("compare: cannot create {}: {e}", dir.display());
        return;
    }
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        match std::fs::write(&p, text) {
            Ok(()) => eprintln!("wrote {}", p.display()),
            Err(e) => eprintln!("compare: cannot write {}: {e}", p.display()),
        }
    };
    write("compare.csv", csv(&wls, &cells, &cfg));
    write(
        "compare.md",
        format!("# isoheap comparison\n\n- date: {date}\n- cpu: {cpu}\n\n{md}"),
    );
    write("churn.svg", churn_svg(&wls, &cells, &cfg));
    write("families.svg", families_svg(&wls, &cells, &cfg));
}
