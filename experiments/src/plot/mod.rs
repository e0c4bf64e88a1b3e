//! Charts of a finished batch, as PNG and SVG (plotters):
//! - `timeseries_<column>.{png,svg}`: the sampled state over time, mean over
//!   replications with its confidence band, one line per point;
//! - `latency_cdf.{png,svg}`: the empirical distribution of request latency after
//!   warm-up, pooled over replications, one line per point;
//! - `sweep_<metric>.{png,svg}`: each metric against the first swept parameter, with
//!   confidence bars, one line per value of the other swept parameters.

use std::fs;
use std::path::{Path, PathBuf};

use infersim_engine::stats::student_t_quantile;
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::*;

use crate::analysis::AnalysisError;
use crate::batch::Manifest;
use crate::registry::Registry;
use crate::scenario::Scenario;
use infersim_agents::world::{Charts, PART_COLUMN, WARMUP_COLUMN};

mod draw;
use draw::{Bands, Marks, all_zero, chart, log_if_wide, tick};
pub use draw::{Line, axis_label, line_chart, scatter_chart};

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// Reading or aggregating the data failed.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    /// polars failed.
    #[error("{0}")]
    Polars(#[from] PolarsError),
    /// `--x` named a key that is not swept.
    #[error("--x {key}: not a swept key of this batch; swept: {swept}")]
    NotSwept {
        /// The key asked for.
        key: String,
        /// The swept keys.
        swept: String,
    },
    /// `--by` named a kind of part the batch has no table of.
    #[error("--by {kind}: no {} (only fleets of several pools or models have part tables; `pool` and `model` are the kinds)", path.display())]
    NoParts {
        /// The kind asked for.
        kind: String,
        /// The summary table that would hold it.
        path: PathBuf,
    },
    /// Drawing or writing the image failed.
    #[error("{path}: {message}")]
    Draw {
        /// The image.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file-system operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

/// Columns of a trace file that are not state: the time axis, the hive partition
/// columns polars adds from `point=P/rep=R` directories, and identifiers (a node's
/// number has no mean worth drawing).
const NOT_STATE: [&str; 5] = ["t_h", "t_s", "point", "rep", "node"];

/// Trace files `traces/point=P/rep=R/<name>` with their point and replication.
fn trace_files(out: &Path, name: &str) -> Vec<(u32, u64, PathBuf)> {
    let mut found = Vec::new();
    let parse = |entry: &fs::DirEntry, key: &str| -> Option<u64> {
        entry.file_name().to_str()?.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
    };
    let Ok(points) = fs::read_dir(out.join("traces")) else { return found };
    for p in points.flatten() {
        let Some(point) = parse(&p, "point") else { continue };
        let Ok(reps) = fs::read_dir(p.path()) else { continue };
        for r in reps.flatten() {
            let Some(rep) = parse(&r, "rep") else { continue };
            let file = r.path().join(name);
            if file.is_file() {
                found.push((point as u32, rep, file));
            }
        }
    }
    found.sort();
    found
}

fn scan(path: &Path) -> Result<LazyFrame, PolarsError> {
    let text = path.to_string_lossy().into_owned();
    LazyFrame::scan_parquet(PlRefPath::new(text.as_str()), ScanArgsParquet::default())
}

fn label(manifest: &Manifest, point: u32) -> String {
    manifest.point_params(point).iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

/// The most bins a time-series chart draws.
const MAX_BINS: usize = 150;

/// A round bin width (h) at least `h`: 1, 2 or 5 times a power of ten seconds, or a
/// round number of minutes or hours.
fn nice_bin_h(h: f64) -> f64 {
    if !(h.is_finite() && h > 0.0) {
        return 0.0;
    }
    let s = h * 3600.0;
    let round_s = [60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21_600.0, 43_200.0, 86_400.0];
    let width_s = if (60.0..=86_400.0).contains(&s) {
        round_s.iter().copied().find(|w| *w >= s).unwrap_or(86_400.0)
    } else {
        let p = 10f64.powf(s.log10().floor());
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|w| *w >= s * (1.0 - 1e-12)).unwrap_or(10.0 * p)
    };
    width_s / 3600.0
}

/// A bin width for an axis label: seconds, minutes or hours.
fn fmt_bin(h: f64) -> String {
    let s = h * 3600.0;
    if s < 60.0 {
        format!("{} s", tick(&s))
    } else if s < 3600.0 {
        format!("{} min", tick(&(s / 60.0)))
    } else {
        format!("{} h", tick(&h))
    }
}

/// Per bin of `bin_h` hours: each replication's mean of `value`, then the mean over
/// replications with its t-interval, clipped to the smallest and largest value the
/// replications' bin means took. A bin width of 0 keeps every instant.
fn binned_band(
    frame: LazyFrame,
    value: &str,
    bin_h: f64,
    confidence: f64,
) -> Result<Vec<(f64, f64, f64, f64)>, PlotError> {
    // t_h >= 0, so truncation is the floor (the round_series feature would cost build time).
    let bin = if bin_h > 0.0 {
        (col("t_h") / lit(bin_h)).cast(DataType::Int64).cast(DataType::Float64) * lit(bin_h)
    } else {
        col("t_h")
    };
    let per_rep = frame
        .select([bin.alias("bin"), col("rep"), col(value).cast(DataType::Float64).alias("v")])
        .group_by([col("rep"), col("bin")])
        .agg([col("v").mean().alias("v")]);
    let df = per_rep
        .group_by([col("bin")])
        .agg([
            col("v").mean().alias("mean"),
            col("v").std(1).alias("std"),
            col("v").count().cast(DataType::UInt64).alias("n"),
            col("v").min().alias("min"),
            col("v").max().alias("max"),
        ])
        .sort(["bin"], SortMultipleOptions::default())
        .collect()?;
    let get = |name: &str| -> Result<Float64Chunked, PlotError> {
        Ok(df.column(name)?.cast(&DataType::Float64)?.f64()?.clone())
    };
    let (xs, mean, std, lo, hi) = (get("bin")?, get("mean")?, get("std")?, get("min")?, get("max")?);
    let n = df.column("n")?.u64()?.clone();
    let mut points = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let (Some(x), Some(m)) = (xs.get(i), mean.get(i)) else { continue };
        let count = n.get(i).unwrap_or(0);
        let half = match std.get(i) {
            Some(s) if count >= 2 => student_t_quantile(1.0 - (1.0 - confidence) / 2.0, (count - 1) as f64)
                .map_or(0.0, |t| t * s / (count as f64).sqrt()),
            _ => 0.0,
        };
        let (low, high) = (lo.get(i).unwrap_or(m), hi.get(i).unwrap_or(m));
        // The centre of the bin on the axis.
        let x = if bin_h > 0.0 { x + bin_h / 2.0 } else { x };
        points.push((x, m, (m - half).max(low), (m + half).min(high)));
    }
    Ok(points)
}

/// Latency objectives of the batch's scenario (task SLOs, say), for marking charts.
fn latency_objectives(manifest: &Manifest, registry: &Registry) -> Vec<(String, f64)> {
    let scenario = Scenario::parse_with(registry, &manifest.scenario, &manifest.scenario_toml, Path::new(""));
    let Ok(scenario) = scenario else {
        return Vec::new();
    };
    let mut marks: Vec<(String, f64)> = Vec::new();
    for point in scenario.checked_points().filter_map(|p| scenario.point(p).ok()) {
        for (name, slo_s) in point.model.latency_objectives() {
            if !marks.iter().any(|(_, x)| *x == slo_s) {
                marks.push((format!("SLO {name} {} s", tick(&slo_s)), slo_s));
            }
        }
    }
    marks
}

/// The values of `column` after warm-up of point `point`'s request traces, sorted;
/// none when the traces lack the column.
fn sorted_values(
    requests: &[(u32, u64, PathBuf)],
    point: u32,
    column: &str,
) -> Result<Option<Float64Chunked>, PlotError> {
    let files: Vec<LazyFrame> =
        requests.iter().filter(|f| f.0 == point).map(|f| scan(&f.2)).collect::<Result<_, _>>()?;
    if files.is_empty() {
        return Ok(None);
    }
    let frame = concat(files, UnionArgs::default())?;
    let schema = frame.clone().collect_schema()?;
    if schema.get(column).is_none() {
        return Ok(None);
    }
    let keep = if schema.get(WARMUP_COLUMN).is_some() {
        col(WARMUP_COLUMN).not().and(col(column).is_not_null())
    } else {
        col(column).is_not_null()
    };
    let df = frame
        .filter(keep)
        .select([col(column).cast(DataType::Float64)])
        .sort([column], SortMultipleOptions::default())
        .collect()?;
    Ok(Some(df.column(column)?.f64()?.clone()))
}

/// The distribution of request column `column` after warm-up, pooled over
/// replications, a line per point: its CDF (`<column>_cdf`, e.g. `latency_cdf`) and
/// its tail on a log scale; nothing when no trace has the column.
fn distribution_charts(
    requests: &[(u32, u64, PathBuf)],
    manifest: &Manifest,
    dir: &Path,
    column: &str,
    what: &str,
    marks: &Marks,
) -> Result<Vec<PathBuf>, PlotError> {
    let (mut lines, mut tails) = (Vec::new(), Vec::new());
    for point in 0..manifest.point_count() as u32 {
        let Some(values) = sorted_values(requests, point, column)? else { continue };
        let n = values.len();
        if n == 0 {
            continue;
        }
        // At most ~2000 points per line: every k-th order statistic.
        let step = (n / 2000).max(1);
        let cdf: Vec<(f64, f64, f64, f64)> = (0..n)
            .step_by(step)
            .chain(std::iter::once(n - 1))
            .filter_map(|i| values.get(i).map(|x| (x, (i + 1) as f64 / n as f64)))
            .map(|(x, y)| (x, y, y, y))
            .collect();
        // The tail: log10 of the share slower than x, down to one request in n.
        let tail: Vec<(f64, f64, f64, f64)> = (0..n.saturating_sub(1))
            .filter(|i| {
                let share = (n - 1 - i) as f64 / n as f64;
                *i == 0 || share <= 0.5 && ((n - 1 - i) % step.max((n - 1 - i) / 200).max(1) == 0)
            })
            .filter_map(|i| values.get(i).map(|x| (x, ((n - 1 - i) as f64 / n as f64).log10())))
            .map(|(x, y)| (x, y, y, y))
            .collect();
        lines.push(Line { label: label(manifest, point), points: cdf });
        tails.push(Line { label: label(manifest, point), points: tail });
    }
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let stem = column.strip_suffix("_s").unwrap_or(column);
    let x_label = format!("{} (s)", what.to_lowercase());
    let mut written = chart(
        dir,
        &format!("{stem}_cdf"),
        &format!("{what} after warm-up, all replications"),
        &x_label,
        "share of requests",
        &lines,
        Bands::None,
        marks,
    )?;
    written.extend(chart(
        dir,
        &format!("{stem}_tail"),
        &format!("{what}: share of requests slower than x"),
        &x_label,
        "share slower (log scale)",
        &tails,
        Bands::None,
        &Marks { log_y: true, ..marks.clone() },
    )?);
    Ok(written)
}

/// Draws every chart the batch in `out` has data for, into `dir`, with the charts of
/// its world in `registry`; returns the files.
#[allow(clippy::too_many_arguments)]
pub fn plot_batch(
    out: &Path,
    manifest: &Manifest,
    summary: &DataFrame,
    dir: &Path,
    confidence: f64,
    x_key: Option<&str>,
    registry: &Registry,
) -> Result<Vec<PathBuf>, PlotError> {
    let charts = registry.get(&manifest.world).map(|w| w.charts()).unwrap_or_default();
    let x_key = match x_key {
        Some(key) if !manifest.sweep_keys.iter().any(|k| k == key) => {
            return Err(PlotError::NotSwept { key: key.into(), swept: manifest.sweep_keys.join(", ") });
        }
        Some(key) => Some(key.to_string()),
        None => manifest.sweep_keys.first().cloned(),
    };
    fs::create_dir_all(dir).map_err(|error| PlotError::Io { path: dir.to_path_buf(), error })?;
    // Resolving the scenario's points is the slow part: only for request charts.
    let traced_requests = !trace_files(out, "requests.parquet").is_empty();
    let objectives = if traced_requests { latency_objectives(manifest, registry) } else { Vec::new() };
    let batch = PlotBatch { out, manifest, summary, dir, confidence, x_key, charts, objectives };
    let mut written = time_series_charts(&batch)?;
    written.extend(request_charts(&batch)?);
    written.extend(sweep_charts(&batch)?);
    written.extend(tradeoff_charts(&batch)?);
    Ok(written)
}

/// Draws a sweep chart per metric of a part table (`by`: `pool` or `model`, from
/// `<by>s_summary.parquet`), a line per part and combination of the other swept keys,
/// into `dir`; returns the files.
pub fn plot_parts(
    out: &Path,
    manifest: &Manifest,
    by: &str,
    dir: &Path,
    confidence: f64,
    x_key: Option<&str>,
) -> Result<Vec<PathBuf>, PlotError> {
    let path = out.join(format!("{by}s_summary.parquet"));
    if !path.is_file() {
        return Err(PlotError::NoParts { kind: by.into(), path });
    }
    let x_key = match x_key {
        Some(key) if !manifest.sweep_keys.iter().any(|k| k == key) => {
            return Err(PlotError::NotSwept { key: key.into(), swept: manifest.sweep_keys.join(", ") });
        }
        Some(key) => Some(key),
        None => manifest.sweep_keys.first().map(String::as_str),
    };
    let summary = scan(&path)?.collect()?;
    let mut metrics: Vec<String> = Vec::new();
    for m in summary.column("metric")?.str()?.iter().flatten() {
        if !metrics.iter().any(|x| x == m) {
            metrics.push(m.to_string());
        }
    }
    fs::create_dir_all(dir).map_err(|error| PlotError::Io { path: dir.to_path_buf(), error })?;
    let parts = Parts { column: Some(by), metrics: &metrics };
    sweep_lines(manifest, &summary, &parts, dir, confidence, x_key)
}

/// What the charts of one batch are drawn from.
struct PlotBatch<'a> {
    out: &'a Path,
    manifest: &'a Manifest,
    summary: &'a DataFrame,
    dir: &'a Path,
    confidence: f64,
    /// The swept key on the x axis of sweep charts.
    x_key: Option<String>,
    charts: Charts,
    /// Latency objectives (label, seconds), marked on latency charts.
    objectives: Vec<(String, f64)>,
}

/// Time series of sampled state, a line per point with its band.
fn time_series_charts(b: &PlotBatch<'_>) -> Result<Vec<PathBuf>, PlotError> {
    let PlotBatch { out, manifest, dir, confidence, .. } = b;
    let confidence = *confidence;
    let mut written = Vec::new();
    // Time series: each replication averaged over bins (a few hundred across the run),
    // then the mean over replications with its band, clipped to the range the
    // quantity took (a queue's band never goes below zero).
    let series = trace_files(out, "timeseries.parquet");
    if !series.is_empty() {
        // Numbers only: text (a plan, a task name) and flags have no mean to draw.
        let columns: Vec<String> = scan(&series[0].2)?
            .collect_schema()?
            .iter()
            .filter(|(_, dtype)| dtype.is_primitive_numeric())
            .map(|(n, _)| n.to_string())
            .filter(|n| !NOT_STATE.contains(&n.as_str()))
            .collect();
        let frames: Vec<LazyFrame> = series
            .iter()
            .map(
                |(point, rep, path)| Ok(scan(path)?.with_columns([lit(*point).alias("point"), lit(*rep).alias("rep")])),
            )
            .collect::<Result<_, PolarsError>>()?;
        let everything = concat(frames, UnionArgs::default())?;
        // Rows of a part (a fleet's pool) are drawn apart; the whole's are the series.
        let parted = scan(&series[0].2)?.collect_schema()?.get(PART_COLUMN).is_some();
        let all = if parted { everything.clone().filter(col(PART_COLUMN).is_null()) } else { everything.clone() };
        let span = all.clone().select([col("t_h").min().alias("lo"), col("t_h").max().alias("hi")]).collect()?;
        let (t0, t1) = (
            span.column("lo")?.cast(&DataType::Float64)?.f64()?.get(0).unwrap_or(0.0),
            span.column("hi")?.cast(&DataType::Float64)?.f64()?.get(0).unwrap_or(0.0),
        );
        let bin_h = nice_bin_h((t1 - t0) / MAX_BINS as f64);
        // Runs shorter than two hours are drawn in seconds.
        let (unit, per_hour) = if t1 - t0 < 2.0 { ("s", 3600.0) } else { ("h", 1.0) };
        for column in &columns {
            let mut lines = Vec::new();
            for point in 0..manifest.point_count() as u32 {
                let frame = all.clone().filter(col("point").eq(lit(point)));
                let mut binned = binned_band(frame, column, bin_h, confidence)?;
                for p in &mut binned {
                    p.0 *= per_hour;
                }
                if !binned.is_empty() {
                    lines.push(Line { label: label(manifest, point), points: binned });
                }
            }
            if lines.is_empty() {
                continue;
            }
            let title = format!("{}: mean over replications, {:.0}% band", axis_label(column), confidence * 100.0);
            let x_label = if bin_h > 0.0 {
                format!("time ({unit}); means over {} bins", fmt_bin(bin_h))
            } else {
                format!("time ({unit})")
            };
            let mut charts = vec![(format!("timeseries_{column}"), lines)];
            if parted {
                let parts = part_lines(&everything, manifest, column, bin_h, per_hour, confidence)?;
                charts.push((format!("timeseries_{column}_by_{PART_COLUMN}"), parts));
            }
            for (file, lines) in charts.iter().filter(|(_, lines)| !lines.is_empty()) {
                let y_label = axis_label(column);
                written.extend(chart(dir, file, &title, &x_label, &y_label, lines, Bands::Shaded, &Marks::default())?);
            }
        }
    }
    Ok(written)
}

/// A time-series line per part and point (the point's label after the part's when
/// the batch has several), from the rows that name a part.
fn part_lines(
    all: &LazyFrame,
    manifest: &Manifest,
    column: &str,
    bin_h: f64,
    per_hour: f64,
    confidence: f64,
) -> Result<Vec<Line>, PlotError> {
    let rows = all.clone().filter(col(PART_COLUMN).is_not_null());
    let parts_frame = rows
        .clone()
        .select([col(PART_COLUMN).cast(DataType::String)])
        .unique_stable(None, UniqueKeepStrategy::First)
        .collect()?;
    let parts: Vec<String> = parts_frame.column(PART_COLUMN)?.str()?.iter().flatten().map(str::to_string).collect();
    let mut lines = Vec::new();
    for part in &parts {
        for point in 0..manifest.point_count() as u32 {
            let frame = rows.clone().filter(
                col("point").eq(lit(point)).and(col(PART_COLUMN).cast(DataType::String).eq(lit(part.as_str()))),
            );
            let mut binned = binned_band(frame, column, bin_h, confidence)?;
            for p in &mut binned {
                p.0 *= per_hour;
            }
            if !binned.is_empty() {
                let label = match manifest.point_count() {
                    1 => part.clone(),
                    _ => format!("{part}, {}", label(manifest, point)),
                };
                lines.push(Line { label, points: binned });
            }
        }
    }
    Ok(lines)
}

/// The world's request distributions after warm-up.
fn request_charts(b: &PlotBatch<'_>) -> Result<Vec<PathBuf>, PlotError> {
    let PlotBatch { out, manifest, dir, .. } = b;
    let mut written = Vec::new();
    // The world's request distributions after warm-up, pooled over replications
    // (end-to-end latency with the SLOs marked, say), each with its tail on a log
    // scale (the share of requests slower than x).
    let requests = trace_files(out, "requests.parquet");
    if !requests.is_empty() {
        let slos = Marks { vertical: b.objectives.clone(), ..Marks::default() };
        for chart in b.charts.distributions {
            let marks = if chart.objectives { slos.clone() } else { Marks::default() };
            written.extend(distribution_charts(&requests, manifest, dir, chart.column, chart.title, &marks)?);
        }
    }
    Ok(written)
}

/// Each metric against the swept key on the x axis.
fn sweep_charts(b: &PlotBatch<'_>) -> Result<Vec<PathBuf>, PlotError> {
    let PlotBatch { manifest, summary, dir, confidence, x_key, .. } = b;
    let by = Parts { column: None, metrics: &manifest.metrics };
    sweep_lines(manifest, summary, &by, dir, *confidence, x_key.as_deref())
}

/// Whose lines a sweep chart draws: the batch's (`column` None), or each part's of a
/// part table (`pool`, `model`), and which metrics.
struct Parts<'a> {
    column: Option<&'a str>,
    metrics: &'a [String],
}

/// Each metric against one swept parameter (`x_key`), a line per combination of the
/// other swept keys (and per part, with `by`), in sweep order.
fn sweep_lines(
    manifest: &Manifest,
    summary: &DataFrame,
    by: &Parts<'_>,
    dir: &Path,
    confidence: f64,
    x_key: Option<&str>,
) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    if let Some(first) = x_key {
        let parts = match by.column {
            Some(column) => Some(summary.column(column)?.str()?.clone()),
            None => None,
        };
        let metrics = summary.column("metric")?.str()?.clone();
        let point_col = summary.column("point")?.u32()?.clone();
        let (mean, low, high) = (
            summary.column("mean")?.f64()?.clone(),
            summary.column("ci_low")?.f64()?.clone(),
            summary.column("ci_high")?.f64()?.clone(),
        );
        for metric in by.metrics {
            let mut groups: Vec<Line> = Vec::new();
            for i in 0..summary.height() {
                if metrics.get(i) != Some(metric.as_str()) {
                    continue;
                }
                let Some(params) = point_col.get(i).map(|p| manifest.point_params(p)) else { continue };
                let Some(x) = params.iter().find(|(k, _)| k == first).and_then(|(_, v)| v.as_f64()) else { continue };
                let mut rest: Vec<String> =
                    params.iter().filter(|(k, _)| k != first).map(|(k, v)| format!("{k} = {v}")).collect();
                if let (Some(column), Some(parts)) = (by.column, &parts) {
                    rest.insert(0, format!("{column} {}", parts.get(i).unwrap_or("")));
                }
                let (Some(m), lo, hi) = (mean.get(i), low.get(i), high.get(i)) else { continue };
                let label = rest.join(", ");
                let index = match groups.iter().position(|l| l.label == label) {
                    Some(index) => index,
                    None => {
                        groups.push(Line { label, points: Vec::new() });
                        groups.len() - 1
                    }
                };
                groups[index].points.push((x, m, lo.unwrap_or(m), hi.unwrap_or(m)));
            }
            let mut lines: Vec<Line> = groups
                .into_iter()
                .map(|mut line| {
                    line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    line
                })
                .filter(|l| !l.points.is_empty())
                .collect();
            if !lines.is_empty() && !all_zero(&lines) {
                let log_y = log_if_wide(&mut lines);
                let title = format!("{metric} ({:.0}% intervals)", confidence * 100.0);
                let y_label = if log_y { format!("{}, log scale", axis_label(metric)) } else { axis_label(metric) };
                let file = match by.column {
                    Some(column) => format!("sweep_{metric}_by_{column}"),
                    None => format!("sweep_{metric}"),
                };
                written.extend(chart(
                    dir,
                    &file,
                    &title,
                    first,
                    &y_label,
                    &lines,
                    Bands::Bars,
                    &Marks { log_y, ..Marks::default() },
                )?);
            }
        }
    }
    Ok(written)
}

/// The world's trade-offs across a sweep.
fn tradeoff_charts(b: &PlotBatch<'_>) -> Result<Vec<PathBuf>, PlotError> {
    let PlotBatch { manifest, summary, dir, confidence, x_key, .. } = b;
    let confidence = *confidence;
    let mut written = Vec::new();
    // The world's trade-offs across a sweep (accuracy or tail latency against energy,
    // say), one marker per point (with its interval), a line per combination of the
    // other swept keys.
    if let Some(first) = x_key.as_ref() {
        let value = |point: usize, metric: &str| -> Option<(f64, f64, f64)> {
            let (metrics, points) =
                (summary.column("metric").ok()?.str().ok()?, summary.column("point").ok()?.u32().ok()?);
            let row = (0..summary.height())
                .find(|&i| metrics.get(i) == Some(metric) && points.get(i) == Some(point as u32))?;
            let at = |c: &str| summary.column(c).ok()?.f64().ok()?.get(row);
            let m = at("mean")?;
            Some((m, at("ci_low").unwrap_or(m), at("ci_high").unwrap_or(m)))
        };
        for tradeoff in b.charts.tradeoffs {
            let (metric, name) = (tradeoff.metric, tradeoff.name);
            let Some(energy) = tradeoff.against.iter().find(|m| manifest.metrics.iter().any(|x| x == *m)) else {
                continue;
            };
            let mut groups: Vec<Line> = Vec::new();
            for p in 0..manifest.point_count() as usize {
                let (Some((x, _, _)), Some((y, lo, hi))) = (value(p, energy), value(p, metric)) else { continue };
                let params = manifest.point_params(p as u32);
                let rest: Vec<String> =
                    params.iter().filter(|(k, _)| k != first).map(|(k, v)| format!("{k} = {v}")).collect();
                let label = rest.join(", ");
                match groups.iter_mut().find(|l| l.label == label) {
                    Some(line) => line.points.push((x, y, lo, hi)),
                    None => groups.push(Line { label, points: vec![(x, y, lo, hi)] }),
                }
            }
            for line in &mut groups {
                line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            if groups.iter().map(|l| l.points.len()).sum::<usize>() >= 2 {
                let title = format!(
                    "{} against {} ({:.0}% intervals)",
                    axis_label(metric),
                    axis_label(energy),
                    confidence * 100.0
                );
                let (x_label, y_label) = (format!("{} (points: {first})", axis_label(energy)), axis_label(metric));
                written.extend(chart(dir, name, &title, &x_label, &y_label, &groups, Bands::Bars, &Marks::default())?);
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_round_and_bands_stay_within_the_values_seen() {
        assert_eq!(nice_bin_h(0.5 / 150.0) * 3600.0, 20.0);
        assert_eq!(nice_bin_h(24.0 / 150.0) * 3600.0, 600.0);
        assert_eq!(nice_bin_h(0.0), 0.0);
        // Three replications of a queue that is 0, 0 and 6 in one bin: the t-interval
        // of the mean (2) would reach below zero; the band stops at 0.
        let frame = df!(
            "t_h" => [0.0, 0.0, 0.0, 0.01, 0.01, 0.01],
            "rep" => [0u64, 1, 2, 0, 1, 2],
            "queue_len" => [0u32, 0, 6, 1, 1, 1],
        )
        .unwrap()
        .lazy();
        let band = binned_band(frame, "queue_len", 0.005, 0.95).unwrap();
        assert_eq!(band.len(), 2);
        let (x, mean, low, high) = band[0];
        assert_eq!((x, mean, low), (0.0025, 2.0, 0.0));
        assert!(high <= 6.0);
        assert_eq!(band[1].1, 1.0);
    }

    #[test]
    fn axes_name_their_units_and_wide_ranges_go_on_a_log_scale() {
        assert_eq!(axis_label("ttft_p99_s"), "ttft p99 (s)");
        assert_eq!(axis_label("energy_per_output_token_j"), "energy per output token (J)");
        assert_eq!(axis_label("throughput_per_s"), "throughput (per s)");
        assert_eq!(axis_label("carbon_kg"), "carbon (kg CO2e)");
        assert_eq!(axis_label("served"), "served");
        // 0.2 s beside 40 s: on a linear axis 0.2 would sit on zero.
        let mut wide =
            vec![Line { label: String::new(), points: vec![(1.0, 0.2, -0.1, 0.5), (2.0, 40.0, 35.0, 45.0)] }];
        assert!(log_if_wide(&mut wide));
        let (y, low) = (wide[0].points[0].1, wide[0].points[0].2);
        assert!((y - 0.2f64.log10()).abs() < 1e-12 && (low - 0.02f64.log10()).abs() < 1e-12, "{y} {low}");
        let mut narrow =
            vec![Line { label: String::new(), points: vec![(1.0, 2.0, 1.0, 3.0), (2.0, 40.0, 35.0, 45.0)] }];
        assert!(!log_if_wide(&mut narrow));
        assert!(all_zero(&[Line { label: String::new(), points: vec![(1.0, 0.0, 0.0, 0.0)] }]));
    }

    #[test]
    fn tick_labels_stay_distinct_at_any_magnitude() {
        let labels: Vec<String> = [5.5e-5, 6.0e-5, 6.5e-5].iter().map(tick).collect();
        assert_eq!(labels, ["5.50e-5", "6.00e-5", "6.50e-5"]);
        assert_eq!(tick(&1.25), "1.25");
        assert_eq!(tick(&20.0), "20");
        assert_eq!(tick(&0.0), "0");
        assert_eq!(tick(&250_000.0), "2.50e5");
    }
}
