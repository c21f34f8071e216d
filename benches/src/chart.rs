//! The grouped bar chart for a README: one group per workload, one bar per
//! backend, height = slowdown against kernel overlayfs on a log scale (bars
//! grow up from 1× when slower, down when faster), whiskers from the best to
//! the worst repetition.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{is_fact, Results, BASELINE};

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 680;
/// Bars are clipped to this range of ratios.
const CLIP: (f64, f64) = (0.05, 100.0);
/// Workloads whose `native` figure is not comparable (no copy-up happens).
const NOT_A_FLOOR: [&str; 3] = ["copyup_1g", "copyup_small", "chown_r"];

/// (metric index, backend index, median ratio, best–worst ratio).
type Bar = (usize, usize, f64, Option<(f64, f64)>);

/// Colour per backend: fixed for the known ones so charts of different runs
/// compare at a glance.
fn colour(backend: &str, index: usize) -> RGBColor {
    let name = backend.split('+').next().unwrap_or(backend);
    match name {
        "native" => RGBColor(150, 150, 150),
        "fuse-overlayfs" => RGBColor(230, 130, 30),
        "unionfs-fuse" => RGBColor(150, 90, 180),
        "strata-dir" => RGBColor(30, 100, 200),
        "strata-store" => RGBColor(40, 160, 90),
        _ => {
            const OTHERS: [RGBColor; 4] = [
                RGBColor(200, 60, 60),
                RGBColor(20, 170, 180),
                RGBColor(180, 160, 30),
                RGBColor(110, 70, 40),
            ];
            OTHERS[index % OTHERS.len()]
        }
    }
}

/// Writes the chart of `results` to `path` as SVG.
pub fn write_svg(results: &Results, path: &Path) -> Result<()> {
    let backends: Vec<&String> = results
        .meta
        .backends
        .iter()
        .filter(|b| b.as_str() != BASELINE)
        .collect();
    let metrics: Vec<String> = crate::report::metric_order(&results.samples)
        .into_iter()
        // Mount time against an in-kernel mount (a fraction of a millisecond)
        // is a ratio in the hundreds that would flatten every other bar; the
        // table has it.
        .filter(|m| !is_fact(m) && m != "copyup_1g_nofsync" && m != "mount")
        .filter(|m| {
            results
                .summary
                .iter()
                .any(|s| &s.metric == m && s.ratio.is_some() && s.backend != BASELINE)
        })
        .collect();
    if metrics.is_empty() || backends.is_empty() {
        return Err(anyhow!(
            "nothing to chart: the chart needs the overlay backend and at least one other backend with results"
        ));
    }
    let bars: Vec<Bar> = metrics
        .iter()
        .enumerate()
        .flat_map(|(mi, metric)| {
            backends
                .iter()
                .enumerate()
                .filter_map(move |(bi, backend)| {
                    // On a plain directory these are in-place writes, not copy-ups:
                    // a floor for the table, noise for the chart.
                    if backend.as_str() == "native" && NOT_A_FLOOR.contains(&metric.as_str()) {
                        return None;
                    }
                    let s = results
                        .summary
                        .iter()
                        .find(|s| &s.backend == *backend && &s.metric == metric)?;
                    Some((mi, bi, s.ratio?, s.ratio_range))
                })
        })
        .collect();
    let lowest = bars
        .iter()
        .map(|b| b.3.map_or(b.2, |r| r.0))
        .fold(1.0f64, f64::min);
    let highest = bars
        .iter()
        .map(|b| b.3.map_or(b.2, |r| r.1))
        .fold(1.0f64, f64::max);
    let y_lo = (lowest * 0.8).clamp(CLIP.0, 0.5);
    let y_hi = (highest * 1.25).clamp(2.0, CLIP.1);
    let clip = |v: f64| v.clamp(y_lo, y_hi);

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow!("drawing chart: {e}"))?;
    let (head, body) = root.split_vertically(74);
    let title = format!(
        "cowbench: slowdown vs kernel overlayfs (log scale, lower is better) — median of {} rep{}, {} CPUs, kernel {}",
        results.meta.reps,
        if results.meta.reps == 1 { "" } else { "s" },
        results.meta.cpus,
        results.meta.kernel
    );
    draw_head(&head, &title, &backends)?;
    let n = metrics.len() as f64;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (y_lo..y_hi).log_scale())
        .map_err(|e| anyhow!("laying out chart: {e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("time / overlay time  (throughput: overlay / backend)")
        .y_label_formatter(&|v| format!("{}×", crate::report::fmt_num(*v)))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("drawing axes: {e}"))?;

    let slot = 0.84 / backends.len() as f64;
    for (bi, backend) in backends.iter().enumerate() {
        let fill = colour(backend, bi);
        let mine: Vec<_> = bars.iter().filter(|b| b.1 == bi).collect();
        chart
            .draw_series(mine.iter().map(|(mi, _, ratio, _)| {
                let x0 = *mi as f64 + 0.08 + bi as f64 * slot;
                Rectangle::new([(x0, 1.0), (x0 + slot * 0.88, clip(*ratio))], fill.filled())
            }))
            .map_err(|e| anyhow!("drawing bars: {e}"))?;
        chart
            .draw_series(mine.iter().filter_map(|(mi, _, _, range)| {
                let (lo, hi) = (*range)?;
                let x = *mi as f64 + 0.08 + bi as f64 * slot + slot * 0.44;
                Some(PathElement::new(
                    vec![(x, clip(lo)), (x, clip(hi))],
                    BLACK.stroke_width(1),
                ))
            }))
            .map_err(|e| anyhow!("drawing whiskers: {e}"))?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (n, 1.0)],
            BLACK.stroke_width(2),
        )))
        .map_err(|e| anyhow!("drawing the 1× line: {e}"))?;

    // Workload names under each group, in backend pixels.
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (mi, metric) in metrics.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(mi as f64 + 0.5, y_lo));
        // backend_coord gives pixels of the whole image: draw on the root.
        root.draw(&Text::new(metric.clone(), (x, y + 8), label_style.clone()))
            .map_err(|e| anyhow!("drawing labels: {e}"))?;
    }
    root.present()
        .with_context(|| format!("writing chart {}", path.display()))?;
    Ok(())
}

/// Title and a one-line legend above the plot, so the legend never hides a bar.
fn draw_head<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    backends: &[&String],
) -> Result<()> {
    let centred =
        TextStyle::from(("sans-serif", 20).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(
        title.to_string(),
        (WIDTH as i32 / 2, 10),
        centred,
    ))
    .map_err(|e| anyhow!("drawing the title: {e}"))?;
    let font =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut entries: Vec<(String, Option<RGBColor>)> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.to_string(), Some(colour(b, i))))
        .collect();
    entries.push((
        "kernel overlayfs = 1×  (whiskers: best–worst rep)".into(),
        None,
    ));
    let widths: Vec<i32> = entries
        .iter()
        .map(|(label, _)| 34 + 8 * label.chars().count() as i32)
        .collect();
    let total: i32 = widths.iter().sum();
    let mut x = (WIDTH as i32 - total).max(0) / 2;
    let y = 52;
    for ((label, fill), width) in entries.iter().zip(widths) {
        match fill {
            Some(fill) => area.draw(&Rectangle::new(
                [(x, y - 7), (x + 16, y + 7)],
                fill.filled(),
            )),
            None => area.draw(&PathElement::new(
                vec![(x, y), (x + 16, y)],
                BLACK.stroke_width(2),
            )),
        }
        .map_err(|e| anyhow!("drawing the legend: {e}"))?;
        area.draw(&Text::new(label.clone(), (x + 22, y), font.clone()))
            .map_err(|e| anyhow!("drawing the legend: {e}"))?;
        x += width;
    }
    Ok(())
}
