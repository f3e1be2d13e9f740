//! The results: per-cell samples, the Markdown table, the CSV and the churn chart.

use crate::Cfg;
use crate::peers::{KINDS, Kind};
use crate::workloads::Wl;
use std::fmt::Write as _;

#[derive(Default)]
pub(crate) struct Cell {
    pub(crate) ns: Vec<f64>,
    pub(crate) inplace: Vec<f64>,
    pub(crate) eff: Option<f64>,
    pub(crate) skip: Option<&'static str>,
    pub(crate) error: Option<String>,
    pub(crate) corrupt: u64,
    pub(crate) note: Option<String>,
}

pub(crate) fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

pub(crate) fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

pub(crate) fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let n = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model} ({n} logical CPUs)")
}

/// Current UTC date and time, from the Unix clock (civil-from-days, proleptic Gregorian).
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

pub(crate) fn sys_idx() -> usize {
    KINDS.iter().position(|&k| k == Kind::System).unwrap_or(0)
}

pub(crate) fn cell_text(wl: Wl, c: &Cell, sys: Option<f64>) -> String {
    if let Some(e) = &c.error {
        let short: String = e.chars().take(40).collect();
        return format!("FAILED ({short})");
    }
    if let Some(s) = c.skip {
        return if s == "skipped (O(n))" {
            "skipped (O(n))".into()
        } else {
            "—".into()
        };
    }
    let mut t = if wl.is_eff() {
        match c.eff {
            Some(e) => format!("{:.1}%", e * 100.0),
            None => "—".into(),
        }
    } else {
        match median(&c.ns) {
            Some(m) => match sys {
                Some(s) if s > 0.0 => format!("{m:.1} ({:.2}×)", m / s),
                _ => format!("{m:.1}"),
            },
            None => "—".into(),
        }
    };
    if c.corrupt > 0 {
        let _ = write!(t, " CORRUPT×{}", c.corrupt);
    }
    if c.note.is_some() {
        t.push_str(" ¹");
    }
    t
}

/// The header of a Markdown table with a column per subject.
fn table_header(s: &mut String) {
    let _ = write!(s, "| workload |");
    for k in KINDS {
        let _ = write!(s, " {} |", k.name());
    }
    let _ = write!(s, " isoheap vs best freeing peer |");
    let _ = write!(s, "\n|---|");
    for _ in KINDS {
        let _ = write!(s, "---:|");
    }
    s.push_str("---:|\n");
}

/// The subjects that free (what isoheap's speed targets compare with): not bumpalo, not
/// isoheap itself.
const FREEING_PEERS: [Kind; 5] = [
    Kind::System,
    Kind::Mimalloc,
    Kind::Talc,
    Kind::Rlsf,
    Kind::Lla,
];

/// isoheap against the best freeing peer on one workload: (isoheap's median / the best peer's,
/// the peer) for times; (isoheap's fraction - the best peer's, the peer) for efficiency.
pub(crate) fn vs_best(wl: Wl, row: &[Cell]) -> Option<(f64, Kind)> {
    let at = |k: Kind| KINDS.iter().position(|&x| x == k);
    let ok = |c: &Cell| c.error.is_none() && c.skip.is_none();
    let iso = &row[at(Kind::Isoheap)?];
    if !ok(iso) {
        return None;
    }
    let peers = FREEING_PEERS
        .iter()
        .filter_map(|&k| Some((k, &row[at(k)?])))
        .filter(|(_, c)| ok(c));
    if wl.is_eff() {
        let (k, best) = peers
            .filter_map(|(k, c)| Some((k, c.eff?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        return Some((iso.eff? - best, k));
    }
    let (k, best) = peers
        .filter_map(|(k, c)| Some((k, median(&c.ns)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    Some((median(&iso.ns)? / best, k))
}

fn vs_best_text(wl: Wl, row: &[Cell]) -> String {
    match vs_best(wl, row) {
        Some((d, k)) if wl.is_eff() => format!("{:+.1} pt ({})", d * 100.0, k.name()),
        Some((r, k)) => format!("{r:.2}× ({})", k.name()),
        None => "—".into(),
    }
}

pub(crate) fn report(
    wls: &[Wl],
    cells: &[Vec<Cell>],
    cfg: &Cfg,
    date: &str,
    cpu: &str,
    total: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## ns per allocator call (median of {}; ratio to system in parentheses; lower is better)\n",
        cfg.reps
    );
    table_header(&mut s);
    for (wi, &wl) in wls.iter().enumerate() {
        let sys = if wl.is_eff() {
            None
        } else {
            median(&cells[wi][sys_idx()].ns)
        };
        let _ = write!(s, "| {} |", wl.name());
        for c in &cells[wi] {
            let _ = write!(s, " {} |", cell_text(wl, c, sys));
        }
        let _ = writeln!(s, " {} |", vs_best_text(wl, &cells[wi]));
    }
    let _ = writeln!(
        s,
        "\n## reallocs that stayed in place (pointer unchanged; median)\n"
    );
    table_header(&mut s);
    for (wi, &wl) in wls.iter().enumerate() {
        if !wl.has_inplace() {
            continue;
        }
        let _ = write!(s, "| {} |", wl.name());
        for c in &cells[wi] {
            let t = match (&c.error, median(&c.inplace)) {
                (Some(_), _) => "FAILED".into(),
                (None, Some(m)) => format!("{:.1}%", m * 100.0),
                (None, None) => "—".into(),
            };
            let _ = write!(s, " {t} |");
        }
        s.push_str(" — |\n");
    }
    let mut notes = String::new();
    for (wi, &wl) in wls.iter().enumerate() {
        for (ki, c) in cells[wi].iter().enumerate() {
            if let Some(n) = &c.note {
                let _ = writeln!(notes, "- ¹ {} / {}: {n}", KINDS[ki].name(), wl.name());
            }
            if let Some(e) = &c.error {
                let _ = writeln!(notes, "- FAILED {} / {}: {e}", KINDS[ki].name(), wl.name());
            }
            if c.corrupt > 0 {
                let _ = writeln!(
                    notes,
                    "- CORRUPT {} / {}: {} tag mismatches over all repetitions",
                    KINDS[ki].name(),
                    wl.name(),
                    c.corrupt
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nNotes: bumpalo frees only its most recent block and bumps downward, so its grow of \
         the last block returns a new pointer (an overlapping move). \"—\": not applicable \
         (no bulk free / no fixed heap). Efficiency runs once (deterministic); higher is better."
    );
    if !notes.is_empty() {
        let _ = write!(s, "\n{notes}");
    }
    let _ = writeln!(s, "\nRun: {date}, {cpu}, {total:.1} s.");
    s
}

pub(crate) fn csv(wls: &[Wl], cells: &[Vec<Cell>], cfg: &Cfg) -> String {
    let mut s = String::from(
        "workload,subject,metric,median,min,max,ratio_to_system,samples,status,note\n",
    );
    for (wi, &wl) in wls.iter().enumerate() {
        let sys = median(&cells[wi][sys_idx()].ns);
        for (ki, c) in cells[wi].iter().enumerate() {
            let status = if let Some(e) = &c.error {
                format!("failed: {}", e.replace([',', '\n', '"'], " "))
            } else if let Some(k) = c.skip {
                k.to_string()
            } else if c.corrupt > 0 {
                format!("corrupt: {}", c.corrupt)
            } else {
                "ok".into()
            };
            let note = c.note.clone().unwrap_or_default().replace(',', ";");
            let name = KINDS[ki].name();
            if wl.is_eff() {
                let v = c.eff.map_or(String::new(), |e| format!("{e:.4}"));
                let _ = writeln!(
                    s,
                    "{},{name},live_fraction,{v},{v},{v},,{},{status},{note}",
                    wl.id(),
                    usize::from(c.eff.is_some())
                );
                continue;
            }
            let (m, (lo, hi)) = (median(&c.ns), min_max(&c.ns));
            let f = |x: f64| {
                if x.is_finite() {
                    format!("{x:.2}")
                } else {
                    String::new()
                }
            };
            let ratio = match (m, sys) {
                (Some(m), Some(sy)) if sy > 0.0 => format!("{:.3}", m / sy),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "{},{name},ns_per_call,{},{},{},{ratio},{},{status},{note}",
                wl.id(),
                m.map_or(String::new(), f),
                f(lo),
                f(hi),
                c.ns.len()
            );
            if wl.has_inplace() {
                let (m, (lo, hi)) = (median(&c.inplace), min_max(&c.inplace));
                let _ = writeln!(
                    s,
                    "{},{name},in_place_fraction,{},{},{},,{},{status},{note}",
                    wl.id(),
                    m.map_or(String::new(), |x| format!("{x:.4}")),
                    if lo.is_finite() {
                        format!("{lo:.4}")
                    } else {
                        String::new()
                    },
                    if hi.is_finite() {
                        format!("{hi:.4}")
                    } else {
                        String::new()
                    },
                    c.inplace.len()
                );
            }
        }
    }
    let _ = cfg;
    s
}

/// A hand-drawn line chart: ns per call against live blocks, log-log.
pub(crate) fn churn_svg(wls: &[Wl], cells: &[Vec<Cell>], cfg: &Cfg) -> String {
    let (w, h) = (900.0_f64, 540.0_f64);
    let (l, r, t, b) = (80.0, 230.0, 56.0, 64.0);
    let mut series: Vec<(Kind, Vec<(f64, f64)>)> = Vec::new();
    for (ki, &kind) in KINDS.iter().enumerate() {
        let pts: Vec<(f64, f64)> = wls
            .iter()
            .enumerate()
            .filter_map(|(wi, &wl)| match wl {
                Wl::Churn(k) if cells[wi][ki].error.is_none() => {
                    median(&cells[wi][ki].ns).map(|m| (k as f64, m))
                }
                _ => None,
            })
            .collect();
        series.push((kind, pts));
    }
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .filter(|&y| y > 0.0 && y.is_finite())
        .collect();
    if ys.is_empty() {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"80\"><text x=\"20\" y=\"40\" font-family=\"sans-serif\">no churn results in this run</text></svg>\n"
        );
    }
    let ylo = ys.iter().copied().fold(f64::INFINITY, f64::min).max(0.1);
    let yhi = ys.iter().copied().fold(0.0_f64, f64::max).max(ylo * 10.0);
    let (y0, y1) = (ylo.log10().floor(), yhi.log10().ceil());
    let (x0, x1) = (2.0_f64, 6.0_f64);
    let px = |x: f64| l + (x.log10() - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| t + (1.0 - (y.log10() - y0) / (y1 - y0)) * (h - t - b);
    let mut s = svg_open(
        w,
        h,
        (l + w - r) / 2.0,
        &format!(
            "churn: ns per allocator call vs live blocks (median of {}{})",
            cfg.reps,
            if cfg.quick { ", --quick" } else { "" }
        ),
    );
    // y grid: 1, 2, 5 per decade
    for e in (y0 as i32)..=(y1 as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v.log10() > y1 + 1e-9 {
                break;
            }
            let y = py(v);
            let major = m == 1.0;
            let _ = writeln!(
                s,
                r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"##,
                w - r,
                if major { "#bbb" } else { "#e5e5e5" }
            );
            let label = if v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
                l - 6.0,
                y + 4.0
            );
        }
    }
    // x grid: decades
    for ex in 2..=6 {
        let v = 10f64.powi(ex);
        let x = px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#bbb" stroke-width="1"/>"##,
            h - b
        );
        let label = match ex {
            2 => "100".to_string(),
            3 => "1 000".into(),
            4 => "10 000".into(),
            5 => "100 000".into(),
            _ => "1 000 000".into(),
        };
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            h - b + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        w - l - r,
        h - t - b
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">live blocks K (log scale)</text>"#,
        (l + w - r) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">ns per call (log scale)</text>"#,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for (i, (kind, pts)) in series.iter().enumerate() {
        let width = if *kind == Kind::Isoheap { 3.0 } else { 1.8 };
        if pts.len() > 1 {
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}"/>"#,
                path.join(" "),
                kind.color()
            );
        }
        for &(x, y) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{} K={x}: {y:.1} ns</title></circle>"#,
                px(x),
                py(y),
                kind.color(),
                kind.name()
            );
        }
        // legend
        let lx = w - r + 16.0;
        let ly = t + 10.0 + i as f64 * 22.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="{width}"/>"#,
            lx + 26.0,
            kind.color()
        );
        let suffix = if pts.len() < 4 { " (partial)" } else { "" };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}{suffix}</text>"#,
            lx + 32.0,
            ly + 4.0,
            kind.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A hand-drawn bar chart: isoheap's time over the best freeing peer's, per workload (log
/// scale, 1 = as fast as the best; the target line is at 1.05).
pub(crate) fn families_svg(wls: &[Wl], cells: &[Vec<Cell>], cfg: &Cfg) -> String {
    let rows: Vec<(String, f64, Kind)> = wls
        .iter()
        .enumerate()
        .filter(|&(_, &wl)| !wl.is_eff())
        .filter_map(|(wi, &wl)| {
            let (r, k) = vs_best(wl, &cells[wi])?;
            Some((wl.name(), r, k))
        })
        .collect();
    let (w, bar, top, left, right) = (900.0_f64, 18.0_f64, 60.0_f64, 300.0_f64, 170.0_f64);
    let h = top + bar * rows.len() as f64 + 50.0;
    let mut s = svg_open(
        w,
        h,
        w / 2.0,
        &format!(
            "isoheap's time / the best freeing peer's, per workload (median of {}; log scale)",
            cfg.reps
        ),
    );
    if rows.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="20" y="50">no results in this run</text></svg>"#
        );
        return s;
    }
    let hi = rows
        .iter()
        .map(|r| r.1)
        .fold(2.0_f64, f64::max)
        .log2()
        .ceil();
    let lo = rows
        .iter()
        .map(|r| r.1)
        .fold(0.5_f64, f64::min)
        .log2()
        .floor();
    let px = |r: f64| left + (r.log2() - lo) / (hi - lo) * (w - left - right);
    for e in (lo as i32)..=(hi as i32) {
        let x = px(2f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}×</text>"##,
            top - 6.0,
            h - 40.0,
            h - 24.0,
            2f64.powi(e)
        );
    }
    for (r, color) in [(1.0, "#000"), (1.05, "#c00")] {
        let x = px(r);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{color}" stroke-dasharray="4 3"/>"#,
            top - 6.0,
            h - 40.0
        );
    }
    for (i, (name, r, k)) in rows.iter().enumerate() {
        let y = top + bar * i as f64;
        let (x0, x1) = (px(1.0), px(*r));
        let (a, b) = if x1 >= x0 { (x0, x1) } else { (x1, x0) };
        let fill = if *r <= 1.05 { "#2a7" } else { "#d63" };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text><rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}">{r:.2}× ({})</text>"#,
            left - 8.0,
            y + bar * 0.7,
            name.replace('&', "&amp;").replace('<', "&lt;"),
            y + 2.0,
            (b - a).max(1.0),
            bar - 4.0,
            b + 6.0,
            y + bar * 0.7,
            k.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// An SVG document's opening: size, white background, a title centred at `cx`.
fn svg_open(w: f64, h: f64, cx: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{cx}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        title.replace('&', "&amp;").replace('<', "&lt;")
    );
    s
}
