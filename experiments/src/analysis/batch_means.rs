//! Batch means: what one long run says about a steady-state mean, per traced series
//! and replication.

use super::*;
use infersim_agents::world::PART_COLUMN;

/// The batch-means interval of one traced series of one replication: what a single
/// long run says about a steady-state mean, without independent replications.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesBatchMeans {
    /// Point index.
    pub point: u32,
    /// Replication index.
    pub replication: u64,
    /// The trace file the series came from (`requests.parquet` or `timeseries.parquet`).
    pub file: String,
    /// The column.
    pub series: String,
    /// Non-null observations in file order.
    pub observations: usize,
    /// Warm-up deletion, batch size and the interval.
    pub result: BatchMeans,
}

/// The traces of every replication under `dirs`: (point, replication, directory),
/// sorted.
pub(super) fn trace_dirs(dirs: &[PathBuf]) -> Result<Vec<(u32, u64, PathBuf)>, AnalysisError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| AnalysisError::Output(OutputError::Io { path, error })
    };
    let mut found = Vec::new();
    for dir in dirs {
        let traces = dir.join("traces");
        if !traces.is_dir() {
            continue;
        }
        for point_entry in std::fs::read_dir(&traces).map_err(io(&traces))? {
            let point_dir = point_entry.map_err(io(&traces))?.path();
            let Some(point) = hive_value(&point_dir, "point") else { continue };
            for rep_entry in std::fs::read_dir(&point_dir).map_err(io(&point_dir))? {
                let rep_dir = rep_entry.map_err(io(&point_dir))?.path();
                if let Some(rep) = hive_value(&rep_dir, "rep") {
                    found.push((point as u32, rep, rep_dir));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `N` from a directory named `key=N`.
pub(super) fn hive_value(dir: &Path, key: &str) -> Option<u64> {
    dir.file_name()?.to_str()?.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
}

/// Batch means of the column `series` in each traced replication under `dirs`
/// (looked up in `requests.parquet`, then `timeseries.parquet`), in file order, after
/// the `warmup` rule, in `batches` batches. An error if no trace has the column.
pub fn batch_means_of_traces(
    dirs: &[PathBuf],
    series: &str,
    warmup: Warmup,
    batches: usize,
    confidence: f64,
) -> Result<Vec<SeriesBatchMeans>, AnalysisError> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(AnalysisError::BadConfidence(confidence));
    }
    let mut results = Vec::new();
    for (point, replication, dir) in trace_dirs(dirs)? {
        for file in ["requests.parquet", "timeseries.parquet"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let text = path.to_string_lossy().into_owned();
            let frame = LazyFrame::scan_parquet(PlRefPath::new(text.as_str()), ScanArgsParquet::default())
                .map_err(polars_err(text.clone()))?;
            let schema = frame.clone().collect_schema().map_err(polars_err(text.clone()))?;
            if schema.get(series).is_none() {
                continue;
            }
            // A time series' rows of a part (a fleet's pool) are not the series.
            let frame = match schema.get(PART_COLUMN) {
                Some(_) => frame.filter(col(PART_COLUMN).is_null()),
                None => frame,
            };
            let column = frame
                .select([col(series).cast(DataType::Float64)])
                .drop_nulls(None)
                .collect()
                .map_err(polars_err(format!("{text}: reading {series}")))?;
            let values: Vec<f64> = column
                .column(series)
                .and_then(|c| c.f64().map(|ca| ca.into_no_null_iter().collect()))
                .map_err(polars_err(format!("{text}: reading {series}")))?;
            let result = batch_means(&values, warmup, batches, confidence).map_err(|e| AnalysisError::BatchMeans {
                path: text.clone(),
                series: series.into(),
                message: e.to_string(),
            })?;
            results.push(SeriesBatchMeans {
                point,
                replication,
                file: file.into(),
                series: series.into(),
                observations: values.len(),
                result,
            });
            break;
        }
    }
    if results.is_empty() {
        return Err(AnalysisError::NoSeries(series.into()));
    }
    Ok(results)
}

/// The rows of [`batch_means_of_traces`] as a frame (for `batch_means.csv`).
pub fn batch_means_frame(rows: &[SeriesBatchMeans], warmup: Warmup) -> Result<DataFrame, AnalysisError> {
    let rule = match warmup {
        Warmup::None => "none".to_string(),
        Warmup::Fixed(n) => format!("fixed {n}"),
        Warmup::Mser5 => "mser5".to_string(),
    };
    let f = |get: fn(&SeriesBatchMeans) -> f64| rows.iter().map(get).collect::<Vec<f64>>();
    DataFrame::new_infer_height(vec![
        Column::new("point".into(), rows.iter().map(|r| r.point).collect::<Vec<_>>()),
        Column::new("replication".into(), rows.iter().map(|r| r.replication).collect::<Vec<_>>()),
        Column::new("file".into(), rows.iter().map(|r| r.file.clone()).collect::<Vec<_>>()),
        Column::new("series".into(), rows.iter().map(|r| r.series.clone()).collect::<Vec<_>>()),
        Column::new("observations".into(), rows.iter().map(|r| r.observations as u64).collect::<Vec<_>>()),
        Column::new("warmup_rule".into(), vec![rule; rows.len()]),
        Column::new("deleted".into(), rows.iter().map(|r| r.result.deleted as u64).collect::<Vec<_>>()),
        Column::new("batches".into(), rows.iter().map(|r| r.result.ci.n).collect::<Vec<_>>()),
        Column::new("batch_size".into(), rows.iter().map(|r| r.result.batch_size as u64).collect::<Vec<_>>()),
        Column::new("mean".into(), f(|r| r.result.ci.mean)),
        Column::new("ci_low".into(), f(|r| r.result.ci.low)),
        Column::new("ci_high".into(), f(|r| r.result.ci.high)),
        Column::new("confidence".into(), f(|r| r.result.ci.confidence)),
        Column::new(
            "lag1_autocorrelation".into(),
            rows.iter().map(|r| r.result.lag1_autocorrelation).collect::<Vec<Option<f64>>>(),
        ),
    ])
    .map_err(polars_err("building the batch-means table"))
}
