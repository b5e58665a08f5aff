//! Medians, spreads, and writing results where the lead can paste them:
//! each table is printed and also written as a markdown fragment, with the
//! raw rows as CSV, into the output directory.

use std::fs;
use std::path::Path;

/// Median, minimum and maximum of `v` (None when empty).
pub fn spread(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((med, s[0], s[n - 1]))
}

/// "1.23 (1.20–1.31)", with `prec` decimals; "–" for no values.
pub fn show(v: &[f64], prec: usize) -> String {
    match spread(v) {
        None => "–".into(),
        Some((m, lo, hi)) if v.len() == 1 || lo == hi => format!("{m:.prec$}"),
        Some((m, lo, hi)) => format!("{m:.prec$} ({lo:.prec$}–{hi:.prec$})"),
    }
}

/// A markdown table being built.
pub struct Table {
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n", self.head.join(" | "));
        s.push_str(&format!("|{}\n", "---|".repeat(self.head.len())));
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }
}

/// CSV text: a header and rows (cells must not hold commas or quotes;
/// ours are numbers and plain names).
pub fn csv(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = head.join(",");
    s.push('\n');
    for r in rows {
        s.push_str(&r.join(","));
        s.push('\n');
    }
    s
}

/// Writes `text` to `dir/name` and says so.
pub fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    eprintln!("wrote {}", p.display());
}
