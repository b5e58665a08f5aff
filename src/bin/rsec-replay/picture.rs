//! The decisions over time as an SVG, written by hand: capture time
//! across, one row per source (the busiest ones; the rest share a last
//! row), each request a tick (grey passed, red lost), each ban a bar from
//! its start to its end with a marker and the rule's name where it
//! starts. With two runs (`--compare-*`), each row has a lane for A and
//! one for B.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::report::{secs, utc, Input, Run, Source, SourceBan};

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 250.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 78.0;
const LANE: f64 = 20.0;
const ROW_GAP: f64 = 12.0;
const GREY: &str = "#9a9a9a";
const RED: &str = "#d62728";
const BAR: &str = "#f7c6c4";

/// `&`, `<`, `>` and `"` escaped for text and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

/// One row: a source, or the sources left over.
struct Row<'a> {
    label: String,
    detail: String,
    /// Per run, the sources drawn in this row.
    per_run: Vec<Vec<&'a Source>>,
}

/// Under a row's label: its requests, and how many each run lost.
fn detail(runs: &[Run], per_run: &[Vec<&Source>]) -> String {
    let requests: u64 = per_run[0].iter().map(|s| s.requests).sum();
    let lost: Vec<u64> = per_run
        .iter()
        .map(|ss| ss.iter().map(|s| s.lost).sum())
        .collect();
    match &lost[..] {
        [0] | [0, 0] => format!("{requests} requests"),
        [l] => format!("{requests} requests, {l} lost"),
        _ => {
            let each: Vec<String> = runs
                .iter()
                .zip(&lost)
                .map(|(r, l)| format!("{} {l}", r.name))
                .collect();
            format!("{requests} requests, lost {}", each.join(", "))
        }
    }
}

/// A run's decisions in a few words: "1 ban (pike 1), 270 lost".
fn outline(r: &Run) -> String {
    let t = r.tally;
    let rules: Vec<String> = t
        .bans_by_rule()
        .iter()
        .map(|(r, n)| format!("{} {n}", r.as_str()))
        .collect();
    format!(
        "{} ban{}{}, {} lost",
        t.bans.len(),
        if t.bans.len() == 1 { "" } else { "s" },
        if rules.is_empty() {
            String::new()
        } else {
            format!(" ({})", rules.join(", "))
        },
        t.lost
    )
}

/// The same source in another run.
fn find<'t>(r: &Run<'t>, s: &Source) -> Option<&'t Source> {
    r.tally.sources.get(&s.ip)
}

/// A step between time labels (1, 2 or 5 times a power of ten seconds)
/// giving at most about ten labels.
fn step_us(span_us: u64) -> u64 {
    let mut step = 1_000u64;
    loop {
        for m in [1, 2, 5] {
            if span_us / (step * m) <= 10 {
                return step * m;
            }
        }
        step *= 10;
    }
}

pub fn svg(inp: &Input, runs: &[Run], max_rows: usize) -> String {
    let start = inp.start_us();
    let end = inp.stats.last_us.max(start + 1_000);
    let span = (end - start) as f64;
    let plot = WIDTH - LEFT - RIGHT;
    let x = |t: u64| LEFT + (t.saturating_sub(start) as f64 / span * plot).clamp(0.0, plot);

    // Rows: the busiest sources of the first run (banned ones first among
    // equals), the rest in one row.
    let first = runs[0].tally;
    let mut order: Vec<&Source> = first.sources.values().filter(|s| s.requests > 0).collect();
    order.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.ip.cmp(&b.ip)));
    let shown = order.len().min(max_rows);
    let mut rows: Vec<Row> = order[..shown]
        .iter()
        .map(|s| Row {
            label: s.ip.to_string(),
            detail: String::new(),
            per_run: runs
                .iter()
                .map(|r| find(r, s).into_iter().collect())
                .collect(),
        })
        .collect();
    if order.len() > shown {
        let rest = &order[shown..];
        rows.push(Row {
            label: format!("{} other sources", rest.len()),
            detail: String::new(),
            per_run: runs
                .iter()
                .map(|r| rest.iter().filter_map(|s| find(r, s)).collect())
                .collect(),
        });
    }
    let lanes = runs.len() as f64;
    let row_h = lanes * LANE + ROW_GAP;
    let plot_bottom = TOP + rows.len() as f64 * row_h;
    let height = plot_bottom + 70.0;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>"##
    );
    // Title.
    for row in &mut rows {
        row.detail = detail(runs, &row.per_run);
    }
    let outlines: Vec<String> = match runs {
        [r] => vec![outline(r)],
        _ => runs
            .iter()
            .map(|r| format!("{}: {}", r.name, outline(r)))
            .collect(),
    };
    let _ = writeln!(
        o,
        r##"<text x="12" y="22" font-size="16" font-weight="bold">{}</text>"##,
        esc(&format!(
            "rsec-replay: {} - {} requests from {} sources; {}",
            inp.path,
            first.requests,
            first.request_sources(),
            outlines.join("; ")
        ))
    );
    let mut sub = format!("from {} (time axis: seconds since then)", utc(start));
    for r in runs {
        if runs.len() > 1 {
            let _ = write!(sub, "; {}: {}", r.name, r.label);
        } else {
            let _ = write!(sub, "; {}", r.label);
        }
    }
    let _ = writeln!(
        o,
        r##"<text x="12" y="40" fill="#444">{}</text>"##,
        esc(&sub)
    );

    // Time axis and grid.
    let step = step_us(end - start);
    let mut tick = 0;
    while start + tick <= end {
        let xt = x(start + tick);
        let _ = writeln!(
            o,
            r##"<line x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{plot_bottom:.1}" stroke="#e4e4e4"/><text x="{xt:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}s</text>"##,
            TOP - 12.0,
            TOP - 16.0,
            secs(tick)
        );
        tick += step;
    }

    for (i, row) in rows.iter().enumerate() {
        let y0 = TOP + i as f64 * row_h;
        let _ = writeln!(
            o,
            r##"<g class="row"><text x="12" y="{:.1}" font-weight="bold">{}</text><text x="12" y="{:.1}" fill="#666" font-size="10">{}</text>"##,
            y0 + LANE * 0.6,
            esc(&row.label),
            y0 + LANE * 0.6 + 12.0,
            esc(&row.detail)
        );
        for (lane, sources) in row.per_run.iter().enumerate() {
            let ly = y0 + lane as f64 * LANE;
            if runs.len() > 1 {
                let _ = writeln!(
                    o,
                    r##"<text x="{:.1}" y="{:.1}" fill="#666" text-anchor="end">{}</text>"##,
                    LEFT - 6.0,
                    ly + LANE * 0.65,
                    runs[lane].name
                );
            }
            lane_svg(&mut o, sources, ly, end, &x);
        }
        let _ = writeln!(
            o,
            r##"<line x1="12" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#f0f0f0"/></g>"##,
            y0 + row_h - ROW_GAP / 2.0,
            WIDTH - RIGHT,
            y0 + row_h - ROW_GAP / 2.0
        );
    }

    // Legend.
    let ly = plot_bottom + 30.0;
    let _ = writeln!(
        o,
        r##"<g class="legend"><path d="M{l:.1} {a:.1}v12" stroke="{GREY}" stroke-width="2"/><text x="{:.1}" y="{b:.1}">request passed</text><path d="M{:.1} {a:.1}v12" stroke="{RED}" stroke-width="2"/><text x="{:.1}" y="{b:.1}">request lost</text><rect x="{:.1}" y="{a:.1}" width="24" height="12" fill="{BAR}"/><text x="{:.1}" y="{b:.1}">ban in force</text><path d="M{:.1} {:.1}l-5 -7h10z" fill="{RED}"/><text x="{:.1}" y="{b:.1}">ban starts (rule)</text></g>"##,
        LEFT + 8.0,
        LEFT + 130.0,
        LEFT + 138.0,
        LEFT + 240.0,
        LEFT + 270.0,
        LEFT + 400.0,
        ly + 6.0,
        LEFT + 410.0,
        l = LEFT,
        a = ly,
        b = ly + 11.0,
    );
    o.push_str("</svg>\n");
    o
}

/// One lane: the ban bars, the request ticks (one per pixel column, red
/// when any request there was lost), the ban markers.
fn lane_svg(o: &mut String, sources: &[&Source], ly: f64, end: u64, x: &dyn Fn(u64) -> f64) {
    let mut seen = HashSet::new();
    let bans: Vec<&SourceBan> = sources
        .iter()
        .flat_map(|s| &s.bans)
        .filter(|b| seen.insert((b.ban.target, b.ban.start_us)))
        .collect();
    for b in &bans {
        let (x1, x2) = (x(b.ban.start_us), x(b.ban.end_us.unwrap_or(end).min(end)));
        let _ = writeln!(
            o,
            r##"<rect class="ban" x="{x1:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{BAR}"/>"##,
            ly + 2.0,
            (x2 - x1).max(1.0),
            LANE - 4.0
        );
    }
    // Pixel columns: 0 none, 1 passed, 2 lost.
    let mut cols: Vec<u8> = Vec::new();
    for s in sources {
        for t in &s.ticks {
            let c = x(t.t_us).floor() as usize;
            if cols.len() <= c {
                cols.resize(c + 1, 0);
            }
            cols[c] = cols[c].max(if t.lost { 2 } else { 1 });
        }
    }
    for (kind, color) in [(1, GREY), (2, RED)] {
        let mut d = String::new();
        for (c, _) in cols.iter().enumerate().filter(|(_, &k)| k == kind) {
            let _ = write!(d, "M{}.5 {:.1}v{:.1}", c, ly + 4.0, LANE - 8.0);
        }
        if !d.is_empty() {
            let _ = writeln!(
                o,
                r##"<path class="{}" d="{d}" stroke="{color}" stroke-width="1"/>"##,
                if kind == 1 { "passed" } else { "lost" }
            );
        }
    }
    // Markers, a label beside each unless it would overlap the last one.
    let mut last_label = f64::NEG_INFINITY;
    for b in &bans {
        let xb = x(b.ban.start_us);
        let rule = b.ban.rule.as_str();
        let _ = write!(
            o,
            r##"<g class="ban-start"><title>{} banned ({rule}) at {}</title><path d="M{xb:.1} {:.1}l-5 -7h10z" fill="{RED}"/>"##,
            esc(&b.ban.target.to_string()),
            utc(b.ban.start_us),
            ly + 8.0
        );
        if xb - last_label > 50.0 {
            let _ = write!(
                o,
                r##"<text x="{:.1}" y="{:.1}" fill="{RED}" font-weight="bold" stroke="white" stroke-width="3" paint-order="stroke">{rule}</text>"##,
                xb + 6.0,
                ly + LANE * 0.65
            );
            last_label = xb;
        }
        o.push_str("</g>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(step_us(10_000_000), 1_000_000);
        assert_eq!(step_us(20_000_000), 2_000_000);
        assert_eq!(step_us(60_000_000), 10_000_000);
        assert_eq!(step_us(3_600_000_000), 500_000_000);
        assert_eq!(step_us(500), 1_000);
    }

    #[test]
    fn escapes() {
        assert_eq!(esc("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
