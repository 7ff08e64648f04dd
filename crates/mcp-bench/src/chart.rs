//! The SVG chart of a run: every figure that has a target, as its distance to that target
//! (`figure / target` for "at most" targets, `target / figure` for "at least" ones), so that one
//! scale fits timings, throughputs and sizes: a bar left of 1.0 meets its target.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::report::Row;
use crate::stats::{Target, Verdict};

/// How far `row` is from its target (below 1.0 meets it), or `None` without a target.
pub(crate) fn relative_to_target(row: &Row) -> Option<f64> {
    let r = match row.target {
        Target::AtMost(t) => row.value / t,
        Target::AtLeast(t) => t / row.value,
        Target::Info => return None,
    };
    r.is_finite().then_some(r)
}

/// Draws the rows that have a target into an SVG file at `path`.
pub(crate) fn write_svg(rows: &[Row], path: &Path) -> Result<()> {
    let bars: Vec<(String, f64, bool)> = rows
        .iter()
        .filter_map(|r| {
            let rel = relative_to_target(r)?;
            let label = format!("{}: {}", r.bench, short(&r.metric));
            Some((label, rel, r.verdict() == Verdict::Pass))
        })
        .collect();
    let n = bars.len().max(1);
    let height = u32::try_from(120 + 28 * n).unwrap_or(4000);
    let max = bars.iter().map(|b| b.1).fold(1.5_f64, f64::max).min(20.0) * 1.1;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).context("chart background")?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Each figure relative to its target (left of 1.0 meets it)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(560)
        .build_cartesian_2d(0.0..max, (0..n).into_segmented())
        .context("chart axes")?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("figure / target (timings, memory) or target / figure (throughput)")
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .context("chart mesh")?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, rel, pass))| {
            let color = if *pass { GREEN.mix(0.7) } else { RED.mix(0.7) };
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (rel.min(max), SegmentValue::Exact(i + 1)),
                ],
                color.filled(),
            )
        }))
        .context("chart bars")?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(2),
        )))
        .context("chart target line")?;
    root.present().context("writing the chart")?;
    Ok(())
}

/// The metric up to its first colon or ` vs `, so labels stay one short line.
fn short(metric: &str) -> String {
    let cut = metric.find(" vs ").unwrap_or(metric.len());
    let s = &metric[..cut];
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: f64, target: Target) -> Row {
        Row {
            bench: "1 x".into(),
            metric: "ours vs raw".into(),
            ours: String::new(),
            baseline: String::new(),
            value,
            shown: String::new(),
            target,
        }
    }

    #[test]
    fn one_scale_for_every_kind_of_target() {
        assert_eq!(
            relative_to_target(&row(1.2, Target::AtMost(1.2))),
            Some(1.0)
        );
        assert_eq!(
            relative_to_target(&row(0.6, Target::AtMost(1.2))),
            Some(0.5)
        );
        assert_eq!(
            relative_to_target(&row(200.0, Target::AtLeast(100.0))),
            Some(0.5)
        );
        assert_eq!(relative_to_target(&row(1.0, Target::Info)), None);
        assert_eq!(relative_to_target(&row(0.0, Target::AtLeast(3.0))), None);
    }

    #[test]
    fn writes_an_svg_with_a_bar_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        write_svg(
            &[
                row(1.0, Target::AtMost(1.2)),
                row(3.0, Target::AtMost(1.2)),
                row(1.0, Target::Info),
            ],
            &path,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("relative to its target"));
        assert_eq!(svg.matches("1 x: ours").count(), 2, "{svg}");
    }
}
