//! Result rows, the printed table and `docs/BENCHMARKS.md`.

use std::fmt::Write as _;

use crate::machine::Machine;
use crate::stats::{Samples, Target, Verdict, number};

/// One line of the results table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Benchmark number and name (`1 docker start`).
    pub(crate) bench: String,
    /// What the figure compares.
    pub(crate) metric: String,
    /// Our side: median (min-max), with its unit.
    pub(crate) ours: String,
    /// The baseline's side, or `-`.
    pub(crate) baseline: String,
    /// The figure judged against the target (a ratio, or an absolute value).
    pub(crate) value: f64,
    /// How the figure is shown (`1.04x (0.98-1.10)`, `81,000 pods/s`).
    pub(crate) shown: String,
    /// Its target.
    pub(crate) target: Target,
}

impl Row {
    /// PASS / MISS / info.
    pub(crate) fn verdict(&self) -> Verdict {
        self.target.verdict(self.value)
    }
}

/// `median (min-max) unit` of durations, all in the median's unit.
pub(crate) fn timing(s: &Samples) -> String {
    let m = s.median();
    let (scale, unit) = if m < 1e-3 {
        (1e6, "µs")
    } else if m < 1.0 {
        (1e3, "ms")
    } else {
        (1.0, "s")
    };
    format!(
        "{} ({}-{}) {unit}",
        number(m * scale),
        number(s.min() * scale),
        number(s.max() * scale)
    )
}

/// `median (min-max) unit` of any quantity.
pub(crate) fn spread(s: &Samples, unit: &str) -> String {
    format!(
        "{} ({}-{}) {unit}",
        number(s.median()),
        number(s.min()),
        number(s.max())
    )
}

/// The ratio of `ours` to `base` as a row figure: the median of the per-repetition ratios
/// (repetitions are interleaved, so each pair ran under the same load), with their range.
pub(crate) fn ratio(ours: &Samples, base: &Samples) -> (f64, String) {
    let paired = ours.pairs_with(base, |a, b| a / b);
    (
        paired.median(),
        format!(
            "{}x ({}-{})",
            number(paired.median()),
            number(paired.min()),
            number(paired.max())
        ),
    )
}

impl Samples {
    /// `f(ours_i, base_i)` for each repetition i.
    pub(crate) fn pairs_with(&self, base: &Samples, f: impl Fn(f64, f64) -> f64) -> Samples {
        let mut out = Samples::new();
        for (a, b) in self.values().iter().zip(base.values()) {
            out.push(f(*a, *b));
        }
        out
    }
}

/// A timing comparison: ours vs a baseline, lower is better.
pub(crate) fn timing_row(
    bench: &str,
    metric: &str,
    ours: &Samples,
    base: &Samples,
    target: Target,
) -> Row {
    let (value, shown) = ratio(ours, base);
    Row {
        bench: bench.to_owned(),
        metric: metric.to_owned(),
        ours: timing(ours),
        baseline: timing(base),
        value,
        shown,
        target,
    }
}

/// Everything one run produced.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Result rows in benchmark order.
    pub(crate) rows: Vec<Row>,
    /// Sizes, skips and observations, one line each.
    pub(crate) notes: Vec<String>,
    /// The load when each benchmark started (`name load`).
    pub(crate) loads: Vec<String>,
}

const HEADERS: [&str; 7] = [
    "benchmark",
    "metric",
    "ours",
    "baseline",
    "figure",
    "target",
    "result",
];

fn cells(r: &Row) -> [String; 7] {
    [
        r.bench.clone(),
        r.metric.clone(),
        r.ours.clone(),
        r.baseline.clone(),
        r.shown.clone(),
        r.target.to_string(),
        r.verdict().to_string(),
    ]
}

impl Report {
    /// The results as an aligned plain-text table.
    pub(crate) fn table(&self) -> String {
        let rows: Vec<[String; 7]> = self.rows.iter().map(cells).collect();
        let mut widths = HEADERS.map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (c, w) in cells.iter().zip(widths) {
                let pad = w - c.chars().count();
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            }
            s.trim_end().to_owned()
        };
        let mut out = line(&HEADERS.map(str::to_owned));
        out.push('\n');
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
        for r in &rows {
            out.push('\n');
            out.push_str(&line(r));
        }
        out
    }

    /// The results as a Markdown table.
    pub(crate) fn markdown_table(&self) -> String {
        let mut out = format!("| {} |\n|{}\n", HEADERS.join(" | "), "---|".repeat(7));
        for r in &self.rows {
            let c = cells(r);
            let result = match r.verdict() {
                Verdict::Pass => "PASS".to_owned(),
                Verdict::Miss => "**MISS**".to_owned(),
                Verdict::Info => "info".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c[0], c[1], c[2], c[3], c[4], c[5], result
            );
        }
        out
    }

    /// How many rows missed their target.
    pub(crate) fn misses(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict() == Verdict::Miss)
            .count()
    }

    /// The whole `docs/BENCHMARKS.md`: the machine, the figures, the analysis and how to
    /// reproduce them.
    /// `chart` is the file name of the run's SVG chart, next to the document.
    pub(crate) fn markdown(
        &self,
        machine: &Machine,
        command: &str,
        analysis: &str,
        chart: Option<&str>,
    ) -> String {
        let mut out = String::new();
        out.push_str("# Benchmarks\n\n");
        out.push_str(
            "Generated by `cargo xtask bench` (crate `crates/mcp-bench`). Each benchmark runs our \
             code and its baseline **in the same run, interleaved** (the order rotates every \
             repetition), after one unmeasured warm-up; figures are medians with (min-max). \
             Timings are compared as **ratios** (absolutes alongside), because the absolutes \
             depend on the machine and on whatever else it was doing. Targets are informational: \
             a MISS never fails the command or CI; only errors do (a failed request, a byte or \
             line count that does not match, a container or process left behind).\n\n",
        );
        out.push_str("## Machine\n\n");
        out.push_str(&machine.markdown());
        let _ = writeln!(out, "\nCommand: `{command}`\n");
        out.push_str("## Results\n\n");
        out.push_str(&self.markdown_table());
        if let Some(chart) = chart {
            let _ = writeln!(
                out,
                "\n![Each figure relative to its target; left of 1.0 meets it]({chart})\n\n\
                 The chart ([{chart}]({chart})) draws every figure that has a target as its \
                 distance to it, so timings, throughputs and sizes share one scale."
            );
        }
        if !self.notes.is_empty() {
            out.push_str("\nRun notes:\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out.push('\n');
        out.push_str(analysis);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[f64]) -> Samples {
        let mut out = Samples::new();
        for x in v {
            out.push(*x);
        }
        out
    }

    #[test]
    fn ratios_are_medians_of_paired_repetitions() {
        let (value, shown) = ratio(&s(&[1.1, 2.2, 3.0]), &s(&[1.0, 2.0, 1.0]));
        assert!((value - 1.1).abs() < 1e-9, "{value}");
        assert_eq!(shown, "1.10x (1.10-3.00)");
    }

    #[test]
    fn table_has_a_row_per_figure_with_its_verdict() {
        let report = Report {
            rows: vec![timing_row(
                "1 docker start",
                "vs raw bollard",
                &s(&[0.2]),
                &s(&[0.1]),
                Target::AtMost(1.1),
            )],
            notes: vec!["sizes".to_owned()],
            loads: Vec::new(),
        };
        let table = report.table();
        assert!(table.lines().nth(2).unwrap().ends_with("MISS"), "{table}");
        assert!(table.contains("2.00x"), "{table}");
        assert!(table.contains("200 (200-200) ms"), "{table}");
        assert_eq!(report.misses(), 1);
        let md = report.markdown_table();
        assert!(md.contains("| 1 docker start | vs raw bollard |"), "{md}");
        assert!(md.contains("**MISS**"), "{md}");
    }
}
