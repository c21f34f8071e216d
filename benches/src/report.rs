//! Results: raw samples, their summary (median, min, max, ratio to kernel
//! overlayfs), the markdown tables printed at the end and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The backend every ratio is relative to.
pub const BASELINE: &str = "overlay";

/// Metrics in report order; anything else follows in order of appearance.
const ORDER: [&str; 19] = [
    "walk_cold",
    "walk_warm",
    "readdir10k",
    "path_search",
    "seqread_cold",
    "seqread_warm",
    "randread4k",
    "copyup_1g",
    "copyup_1g_nofsync",
    "copyup_small",
    "untar_5k",
    "create_fsync",
    "seqwrite_1g",
    "rm_rf",
    "chown_r",
    "chown_r_upper",
    "mount",
    "peak_rss",
    "daemon_threads",
];

/// Metrics that describe the run rather than speed: shown in the table
/// without a ratio-based verdict and left out of the chart.
pub fn is_fact(metric: &str) -> bool {
    matches!(metric, "chown_r_upper" | "peak_rss" | "daemon_threads")
}

/// One measured value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Backend label.
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// Repetition, from 1.
    pub rep: usize,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// A result check that failed (wrong count or size); the value is kept.
    pub anomaly: Option<String>,
    /// Page-cache drops by other processes during the measurement.
    pub foreign_drops: u64,
    /// Times the measurement was repeated because of foreign drops.
    pub retries: u32,
    /// CPU seconds the FUSE daemon spent during the workload.
    pub daemon_cpu_s: Option<f64>,
    /// Seconds since the start of the run.
    pub at_s: f64,
}

/// A workload that could not run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// Backend label.
    pub backend: String,
    /// Workload name.
    pub workload: String,
    /// Repetition, from 1.
    pub rep: usize,
    /// What went wrong.
    pub error: String,
}

/// Median, spread and ratio of one backend on one metric.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Backend label.
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Median over repetitions.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Samples.
    pub n: usize,
    /// Slowdown relative to kernel overlayfs: time ratio, or inverse
    /// throughput ratio; above 1 is slower.
    pub ratio: Option<f64>,
    /// Ratio of the best and worst sample to the overlay median.
    pub ratio_range: Option<(f64, f64)>,
    /// Median FUSE daemon CPU seconds.
    pub daemon_cpu_s: Option<f64>,
    /// Samples with an anomaly.
    pub anomalies: usize,
}

/// Facts about the run, stored with the results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// When the run started (UTC).
    pub date: String,
    /// Kernel release.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Read-ahead window of the dataset's disk, KiB (older results lack it).
    #[serde(default)]
    pub disk_readahead_kb: Option<u32>,
    /// Dataset scale.
    pub scale: String,
    /// Repetitions.
    pub reps: usize,
    /// Backends as given (each rep starts one further along).
    pub backends: Vec<String>,
    /// Mount program per backend, with its version where it reports one.
    pub programs: BTreeMap<String, String>,
    /// Dataset facts.
    pub dataset: crate::dataset::Manifest,
    /// The command line.
    pub command: String,
    /// Page-cache drops by other processes during the whole run.
    pub foreign_drops: u64,
}

/// Everything `--json` writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Run facts.
    pub meta: Meta,
    /// Per-backend, per-metric summary.
    pub summary: Vec<Summary>,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Workloads that failed.
    pub failures: Vec<Failure>,
}

/// Whether a bigger value is better for this unit.
pub fn higher_is_better(unit: &str) -> bool {
    matches!(unit, "MiB/s" | "IOPS")
}

/// Slowdown of `value` against `base`: above 1 is slower (or bigger).
pub fn slowdown(value: f64, base: f64, unit: &str) -> Option<f64> {
    if value <= 0.0 || base <= 0.0 {
        return None;
    }
    Some(if higher_is_better(unit) {
        base / value
    } else {
        value / base
    })
}

/// Median of the values (sorted in place); 0 when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Metric names present in `samples`, in report order.
pub fn metric_order(samples: &[Sample]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for sample in samples {
        if !seen.contains(&sample.metric) {
            seen.push(sample.metric.clone());
        }
    }
    let rank = |m: &String| ORDER.iter().position(|o| o == m).unwrap_or(ORDER.len());
    seen.sort_by_key(rank);
    seen
}

/// Summarises samples per backend and metric. A sample spoiled by a foreign
/// cache drop counts only when no clean sample exists.
pub fn summarise(samples: &[Sample], backends: &[String]) -> Vec<Summary> {
    let metrics = metric_order(samples);
    let mut out = Vec::new();
    let pick = |backend: &str, metric: &str| -> Vec<&Sample> {
        let all: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.backend == backend && s.metric == metric)
            .collect();
        let clean: Vec<&Sample> = all
            .iter()
            .copied()
            .filter(|s| s.foreign_drops == 0)
            .collect();
        if clean.is_empty() {
            all
        } else {
            clean
        }
    };
    for metric in &metrics {
        let mut base_values: Vec<f64> = pick(BASELINE, metric).iter().map(|s| s.value).collect();
        let base = (!base_values.is_empty()).then(|| median(&mut base_values));
        for backend in backends {
            let chosen = pick(backend, metric);
            if chosen.is_empty() {
                continue;
            }
            let unit = chosen[0].unit.clone();
            let mut values: Vec<f64> = chosen.iter().map(|s| s.value).collect();
            let med = median(&mut values);
            let min = values.first().copied().unwrap_or(0.0);
            let max = values.last().copied().unwrap_or(0.0);
            let ratio = base.and_then(|b| slowdown(med, b, &unit));
            let ratio_range = base.and_then(|b| {
                let a = slowdown(min, b, &unit)?;
                let c = slowdown(max, b, &unit)?;
                Some((a.min(c), a.max(c)))
            });
            let mut cpu: Vec<f64> = chosen.iter().filter_map(|s| s.daemon_cpu_s).collect();
            out.push(Summary {
                backend: backend.clone(),
                metric: metric.clone(),
                unit,
                median: med,
                min,
                max,
                n: values.len(),
                ratio,
                ratio_range,
                daemon_cpu_s: (!cpu.is_empty()).then(|| median(&mut cpu)),
                anomalies: chosen.iter().filter(|s| s.anomaly.is_some()).count(),
            });
        }
    }
    out
}

/// A number with about three significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.2e}")
    }
}

fn find<'a>(summary: &'a [Summary], backend: &str, metric: &str) -> Option<&'a Summary> {
    summary
        .iter()
        .find(|s| s.backend == backend && s.metric == metric)
}

/// The markdown report: medians with ratios, noise, daemon figures, failures.
pub fn markdown(results: &Results) -> String {
    let meta = &results.meta;
    let backends = &meta.backends;
    let metrics: Vec<String> = ORDER
        .iter()
        .map(|m| m.to_string())
        .filter(|m| results.summary.iter().any(|s| &s.metric == m))
        .chain(
            metric_order(&results.samples)
                .into_iter()
                .filter(|m| !ORDER.contains(&m.as_str())),
        )
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## cowbench: median of {} rep{}, scale {}, {}\n",
        meta.reps,
        if meta.reps == 1 { "" } else { "s" },
        meta.scale,
        meta.date
    );
    let _ = writeln!(
        out,
        "Kernel {}, {} CPUs, {}dataset {} merged files in {} dirs ({} MiB small-file data), big directory {} entries. \
         Cells: median (slowdown vs kernel overlayfs: time ratio or inverse throughput ratio, > 1 is slower).\n",
        meta.kernel,
        meta.cpus,
        meta.disk_readahead_kb
            .map(|kb| format!("dataset disk read-ahead {kb} KiB, "))
            .unwrap_or_default(),
        meta.dataset.merged_files,
        meta.dataset.merged_dirs,
        meta.dataset.small_bytes >> 20,
        meta.dataset.bigdir_entries
    );
    let header = |out: &mut String, first: &str| {
        let _ = write!(out, "| {first} | unit |");
        for b in backends {
            let _ = write!(out, " {b} |");
        }
        let _ = write!(out, "\n|---|---|");
        for _ in backends {
            let _ = write!(out, "---|");
        }
        out.push('\n');
    };
    header(&mut out, "workload");
    for metric in &metrics {
        let unit = results
            .summary
            .iter()
            .find(|s| &s.metric == metric)
            .map(|s| s.unit.clone())
            .unwrap_or_default();
        let _ = write!(out, "| {metric} | {unit} |");
        for backend in backends {
            let cell = match find(&results.summary, backend, metric) {
                Some(s) => {
                    let flag = if s.anomalies > 0 { " !" } else { "" };
                    match s.ratio {
                        Some(r) if backend != BASELINE => {
                            format!("{} ({r:.2}×){flag}", fmt_num(s.median))
                        }
                        _ => format!("{}{flag}", fmt_num(s.median)),
                    }
                }
                None if failed(results, backend, metric) => "FAIL".into(),
                None => "–".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\n### Noise: min – max over reps (spread: (max − min) / median)\n"
    );
    header(&mut out, "workload");
    for metric in &metrics {
        let unit = results
            .summary
            .iter()
            .find(|s| &s.metric == metric)
            .map(|s| s.unit.clone())
            .unwrap_or_default();
        let _ = write!(out, "| {metric} | {unit} |");
        for backend in backends {
            let cell = match find(&results.summary, backend, metric) {
                Some(s) if s.median > 0.0 => format!(
                    "{} – {} ({:.0}%)",
                    fmt_num(s.min),
                    fmt_num(s.max),
                    (s.max - s.min) / s.median * 100.0
                ),
                Some(s) => format!("{} – {}", fmt_num(s.min), fmt_num(s.max)),
                None => "–".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    let fuse: Vec<&String> = backends
        .iter()
        .filter(|b| {
            results
                .summary
                .iter()
                .any(|s| &s.backend == *b && s.daemon_cpu_s.is_some())
        })
        .collect();
    if !fuse.is_empty() {
        let _ = writeln!(out, "\n### FUSE daemon CPU seconds per workload (median)\n");
        let _ = write!(out, "| workload |");
        for b in &fuse {
            let _ = write!(out, " {b} |");
        }
        let _ = write!(out, "\n|---|");
        for _ in &fuse {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        let with_cpu = metrics.iter().filter(|m| {
            !is_fact(m)
                && fuse
                    .iter()
                    .any(|b| find(&results.summary, b, m).is_some_and(|s| s.daemon_cpu_s.is_some()))
        });
        for metric in with_cpu {
            let _ = write!(out, "| {metric} |");
            for b in &fuse {
                let cell = find(&results.summary, b, metric)
                    .and_then(|s| s.daemon_cpu_s)
                    .map(fmt_num)
                    .unwrap_or_else(|| "–".into());
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "\n### Programs\n");
    for (backend, program) in &meta.programs {
        let _ = writeln!(out, "- {backend}: {program}");
    }
    let anomalies: Vec<&Sample> = results
        .samples
        .iter()
        .filter(|s| s.anomaly.is_some())
        .collect();
    if !anomalies.is_empty() {
        let _ = writeln!(out, "\n### Anomalies (! above)\n");
        for s in anomalies {
            let _ = writeln!(
                out,
                "- {} {} rep {}: {}",
                s.backend,
                s.metric,
                s.rep,
                s.anomaly.as_deref().unwrap_or_default()
            );
        }
    }
    if !results.failures.is_empty() {
        let _ = writeln!(out, "\n### Failures\n");
        for f in &results.failures {
            let _ = writeln!(
                out,
                "- {} {} rep {}: {}",
                f.backend, f.workload, f.rep, f.error
            );
        }
    }
    let foreign: u64 = results.samples.iter().map(|s| s.foreign_drops).sum();
    if foreign > 0 || meta.foreign_drops > 0 {
        let _ = writeln!(
            out,
            "\nOther processes dropped the page cache {} times during the run; {} during measurements (spoiled samples were retried or left out of medians where a clean one exists).",
            meta.foreign_drops, foreign
        );
    }
    let _ = writeln!(out, "\nCommand: `{}`", meta.command);
    out
}

fn failed(results: &Results, backend: &str, metric: &str) -> bool {
    results
        .failures
        .iter()
        .any(|f| f.backend == backend && metric.starts_with(&f.workload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(backend: &str, metric: &str, value: f64, unit: &str) -> Sample {
        Sample {
            backend: backend.into(),
            metric: metric.into(),
            rep: 1,
            value,
            unit: unit.into(),
            anomaly: None,
            foreign_drops: 0,
            retries: 0,
            daemon_cpu_s: None,
            at_s: 0.0,
        }
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn ratios_invert_throughput() {
        assert_eq!(slowdown(2.0, 1.0, "s"), Some(2.0));
        assert_eq!(slowdown(500.0, 1000.0, "MiB/s"), Some(2.0));
        assert_eq!(slowdown(0.0, 1.0, "s"), None);
    }

    #[test]
    fn summary_prefers_clean_samples_and_orders_metrics() {
        let mut spoiled = sample("x", "walk_warm", 100.0, "s");
        spoiled.foreign_drops = 1;
        let samples = vec![
            sample("overlay", "walk_warm", 1.0, "s"),
            sample("x", "walk_warm", 2.0, "s"),
            spoiled,
            sample("overlay", "walk_cold", 3.0, "s"),
        ];
        let backends = vec!["overlay".to_string(), "x".to_string()];
        let summary = summarise(&samples, &backends);
        assert_eq!(summary[0].metric, "walk_cold");
        let x = find(&summary, "x", "walk_warm").expect("x summarised");
        assert_eq!(x.n, 1);
        assert_eq!(x.ratio, Some(2.0));
        let results = Results {
            meta: Meta {
                date: "d".into(),
                kernel: "k".into(),
                cpus: 2,
                disk_readahead_kb: Some(128),
                scale: "quick".into(),
                reps: 1,
                backends,
                programs: BTreeMap::new(),
                dataset: crate::dataset::Manifest {
                    version: 0,
                    scale: crate::dataset::Scale::Quick,
                    complete: true,
                    merged_files: 1,
                    merged_dirs: 1,
                    bigdir_entries: 1,
                    rm_files: 1,
                    layer_entries: [1; 3],
                    small_bytes: 1,
                    sizes: BTreeMap::new(),
                },
                command: "cowbench".into(),
                foreign_drops: 0,
            },
            summary,
            samples,
            failures: Vec::new(),
        };
        let table = markdown(&results);
        assert!(
            table.contains("| walk_warm | s | 1.00 | 2.00 (2.00×) |"),
            "{table}"
        );
        assert!(table.contains("| walk_cold | s | 3.00 | – |"), "{table}");
    }
}
