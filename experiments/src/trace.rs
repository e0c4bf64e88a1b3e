//! Per-replication traces, streamed to Parquet in row groups so that a run with
//! millions of requests never holds its trace in memory.
//!
//! ```text
//! OUT/traces/point=P/rep=R/timeseries.parquet   sampled state, t_h first
//! OUT/traces/point=P/rep=R/requests.parquet     one row per request (customer)
//! ```
//!
//! The `point=P/rep=R` directories follow the hive layout, so
//! `polars.scan_parquet("OUT/traces/**/*.parquet", hive_partitioning=True)` reads
//! every trace at once with `point` and `rep` as columns.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use infersim_agents::serving::{RequestOutcome, RequestRecord, ServingSample};
use infersim_agents::station::{CustomerRecord, Outcome, StationSample};
use infersim_engine::Observer;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use crate::output::{OutputError, writer_properties};

/// How much of each replication to record. Levels are cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TraceLevel {
    /// Per-replication metrics only.
    #[default]
    Summary,
    /// Also the state sampled on a time grid (timeseries.parquet).
    Timeseries,
    /// Also one row per request (requests.parquet).
    Requests,
}

/// Rows per Parquet row group: the most a trace holds in memory.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Column buffers for one kind of trace row.
pub trait Columns: Default {
    /// The row type.
    type Row;
    /// The Arrow schema of the file.
    fn schema() -> SchemaRef;
    /// Appends a row.
    fn push(&mut self, row: Self::Row);
    /// Rows buffered.
    fn len(&self) -> usize;
    /// Whether nothing is buffered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The buffered rows as arrays in schema order, emptying the buffers.
    fn take(&mut self) -> Vec<ArrayRef>;
}

/// A trace file being written: rows are buffered and written a row group at a time
/// to a temporary file, which [`ParquetSink::finish`] renames into place. A write error
/// is kept and reported by `finish` (observers cannot fail mid-run).
pub struct ParquetSink<C: Columns> {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    columns: C,
    rows: u64,
    error: Option<OutputError>,
}

impl<C: Columns> ParquetSink<C> {
    /// Starts writing the trace that will appear at `path`.
    pub fn create(path: PathBuf) -> Result<Self, OutputError> {
        Self::with_columns(path, C::default())
    }

    /// Like [`ParquetSink::create`], with column buffers that carry context (such as
    /// the names behind an index).
    pub fn with_columns(path: PathBuf, columns: C) -> Result<Self, OutputError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("trace");
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|error| OutputError::Io { path: tmp.clone(), error })?;
        let writer = ArrowWriter::try_new(file, C::schema(), Some(writer_properties()))
            .map_err(|e| OutputError::Format { path: tmp.clone(), message: e.to_string() })?;
        Ok(ParquetSink { path, tmp, writer: Some(writer), columns, rows: 0, error: None })
    }

    fn flush(&mut self) {
        if self.columns.is_empty() || self.error.is_some() {
            return;
        }
        let Some(writer) = self.writer.as_mut() else { return };
        let batch = RecordBatch::try_new(C::schema(), self.columns.take())
            .and_then(|b| writer.write(&b).map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e))));
        if let Err(e) = batch {
            self.error = Some(OutputError::Format { path: self.tmp.clone(), message: e.to_string() });
        }
    }

    /// Writes what is buffered, closes the file and renames it into place; returns
    /// the number of rows.
    pub fn finish(mut self) -> Result<u64, OutputError> {
        self.flush();
        let result = match (self.error.take(), self.writer.take()) {
            (Some(e), _) => Err(e),
            (None, Some(writer)) => writer
                .close()
                .map(|_| ())
                .map_err(|e| OutputError::Format { path: self.tmp.clone(), message: e.to_string() })
                .and_then(|()| {
                    fs::rename(&self.tmp, &self.path)
                        .map_err(|error| OutputError::Io { path: self.path.clone(), error })
                }),
            (None, None) => Ok(()),
        };
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result.map(|()| self.rows)
    }
}

impl<C: Columns> Observer<C::Row> for ParquetSink<C> {
    fn observe(&mut self, row: C::Row) {
        self.columns.push(row);
        self.rows += 1;
        if self.columns.len() >= ROW_GROUP_ROWS {
            self.flush();
        }
    }
}

/// Columns of `requests.parquet` for the station: one row per customer.
#[derive(Default)]
pub struct StationRequestColumns {
    request_id: Vec<u64>,
    arrival_s: Vec<f64>,
    start_s: Vec<Option<f64>>,
    finish_s: Vec<Option<f64>>,
    server: Vec<Option<u32>>,
    wait_s: Vec<Option<f64>>,
    latency_s: Vec<Option<f64>>,
    outcome: Vec<&'static str>,
    warmup: Vec<bool>,
}

impl Columns for StationRequestColumns {
    type Row = CustomerRecord;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("request_id", DataType::UInt64, false),
            Field::new("arrival_s", DataType::Float64, false),
            Field::new("start_s", DataType::Float64, true),
            Field::new("finish_s", DataType::Float64, true),
            Field::new("server", DataType::UInt32, true),
            Field::new("wait_s", DataType::Float64, true),
            Field::new("latency_s", DataType::Float64, true),
            Field::new("outcome", DataType::Utf8, false),
            Field::new("warmup", DataType::Boolean, false),
        ]))
    }

    fn push(&mut self, r: CustomerRecord) {
        self.request_id.push(r.customer);
        self.arrival_s.push(r.arrival_s);
        self.start_s.push(r.start_s);
        self.finish_s.push(r.finish_s);
        self.server.push(r.server);
        self.wait_s.push(r.start_s.map(|s| s - r.arrival_s));
        self.latency_s.push(r.finish_s.map(|f| f - r.arrival_s));
        self.outcome.push(match r.outcome {
            Outcome::Served => "served",
            Outcome::Blocked => "rejected",
        });
        self.warmup.push(r.warmup);
    }

    fn len(&self) -> usize {
        self.request_id.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let c = std::mem::take(self);
        vec![
            Arc::new(UInt64Array::from(c.request_id)),
            Arc::new(Float64Array::from(c.arrival_s)),
            Arc::new(Float64Array::from(c.start_s)),
            Arc::new(Float64Array::from(c.finish_s)),
            Arc::new(UInt32Array::from(c.server)),
            Arc::new(Float64Array::from(c.wait_s)),
            Arc::new(Float64Array::from(c.latency_s)),
            Arc::new(StringArray::from(c.outcome)),
            Arc::new(BooleanArray::from(c.warmup)),
        ]
    }
}

/// Columns of `requests.parquet` for the serving world: one row per request, whatever
/// became of it (`outcome`: served, rejected, timed_out).
#[derive(Default)]
pub struct ServingRequestColumns {
    task_names: Vec<String>,
    request_id: Vec<u64>,
    task: Vec<String>,
    tokens: Vec<u32>,
    truncated: Vec<bool>,
    arrival_s: Vec<f64>,
    start_s: Vec<Option<f64>>,
    finish_s: Vec<Option<f64>>,
    node: Vec<Option<u32>>,
    gpu: Vec<Option<u32>>,
    batch_size: Vec<Option<u32>>,
    latency_s: Vec<Option<f64>>,
    energy_kwh: Vec<f64>,
    outcome: Vec<&'static str>,
    slo_met: Vec<bool>,
    warmup: Vec<bool>,
}

impl ServingRequestColumns {
    /// Buffers that write task names for task indices.
    pub fn new(task_names: Vec<String>) -> Self {
        ServingRequestColumns { task_names, ..Default::default() }
    }
}

impl Columns for ServingRequestColumns {
    type Row = RequestRecord;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("request_id", DataType::UInt64, false),
            Field::new("task", DataType::Utf8, false),
            Field::new("tokens", DataType::UInt32, false),
            Field::new("truncated", DataType::Boolean, false),
            Field::new("arrival_s", DataType::Float64, false),
            Field::new("start_s", DataType::Float64, true),
            Field::new("finish_s", DataType::Float64, true),
            Field::new("node", DataType::UInt32, true),
            Field::new("gpu", DataType::UInt32, true),
            Field::new("batch_size", DataType::UInt32, true),
            Field::new("latency_s", DataType::Float64, true),
            Field::new("energy_kwh", DataType::Float64, false),
            Field::new("outcome", DataType::Utf8, false),
            Field::new("slo_met", DataType::Boolean, false),
            Field::new("warmup", DataType::Boolean, false),
        ]))
    }

    fn push(&mut self, r: RequestRecord) {
        let name = self.task_names.get(r.task as usize).cloned().unwrap_or_else(|| r.task.to_string());
        let served = r.outcome == RequestOutcome::Served;
        self.request_id.push(r.request_id);
        self.task.push(name);
        self.tokens.push(r.tokens);
        self.truncated.push(r.truncated);
        self.arrival_s.push(r.arrival_s);
        self.start_s.push(r.start_s);
        self.finish_s.push(r.finish_s);
        self.node.push(r.node);
        self.gpu.push(r.gpu);
        self.batch_size.push(r.batch_size);
        self.latency_s.push(r.finish_s.filter(|_| served).map(|f| f - r.arrival_s));
        self.energy_kwh.push(r.energy_kwh);
        self.outcome.push(r.outcome.as_str());
        self.slo_met.push(r.slo_met);
        self.warmup.push(r.warmup);
    }

    fn len(&self) -> usize {
        self.request_id.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let names = std::mem::take(&mut self.task_names);
        let c = std::mem::replace(self, ServingRequestColumns::new(names));
        vec![
            Arc::new(UInt64Array::from(c.request_id)),
            Arc::new(StringArray::from(c.task)),
            Arc::new(UInt32Array::from(c.tokens)),
            Arc::new(BooleanArray::from(c.truncated)),
            Arc::new(Float64Array::from(c.arrival_s)),
            Arc::new(Float64Array::from(c.start_s)),
            Arc::new(Float64Array::from(c.finish_s)),
            Arc::new(UInt32Array::from(c.node)),
            Arc::new(UInt32Array::from(c.gpu)),
            Arc::new(UInt32Array::from(c.batch_size)),
            Arc::new(Float64Array::from(c.latency_s)),
            Arc::new(Float64Array::from(c.energy_kwh)),
            Arc::new(StringArray::from(c.outcome)),
            Arc::new(BooleanArray::from(c.slo_met)),
            Arc::new(BooleanArray::from(c.warmup)),
        ]
    }
}

/// Columns of `timeseries.parquet` for the serving world.
#[derive(Default)]
pub struct ServingSampleColumns {
    t_s: Vec<f64>,
    queue_len: Vec<u32>,
    busy_gpus: Vec<u32>,
    power_kw: Vec<f64>,
    energy_kwh: Vec<f64>,
    carbon_kg: Vec<f64>,
}

impl Columns for ServingSampleColumns {
    type Row = ServingSample;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("t_h", DataType::Float64, false),
            Field::new("t_s", DataType::Float64, false),
            Field::new("queue_len", DataType::UInt32, false),
            Field::new("busy_gpus", DataType::UInt32, false),
            Field::new("power_kw", DataType::Float64, false),
            Field::new("energy_kwh", DataType::Float64, false),
            Field::new("carbon_kg", DataType::Float64, false),
        ]))
    }

    fn push(&mut self, s: ServingSample) {
        self.t_s.push(s.t_s);
        self.queue_len.push(s.queue_len);
        self.busy_gpus.push(s.busy_gpus);
        self.power_kw.push(s.power_kw);
        self.energy_kwh.push(s.energy_kwh);
        self.carbon_kg.push(s.carbon_kg);
    }

    fn len(&self) -> usize {
        self.t_s.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let c = std::mem::take(self);
        let t_h: Vec<f64> = c.t_s.iter().map(|t| t / 3600.0).collect();
        vec![
            Arc::new(Float64Array::from(t_h)),
            Arc::new(Float64Array::from(c.t_s)),
            Arc::new(UInt32Array::from(c.queue_len)),
            Arc::new(UInt32Array::from(c.busy_gpus)),
            Arc::new(Float64Array::from(c.power_kw)),
            Arc::new(Float64Array::from(c.energy_kwh)),
            Arc::new(Float64Array::from(c.carbon_kg)),
        ]
    }
}

/// Columns of `timeseries.parquet` for the station.
#[derive(Default)]
pub struct StationSampleColumns {
    t_s: Vec<f64>,
    queue_len: Vec<u32>,
    busy_servers: Vec<u32>,
    in_system: Vec<u32>,
}

impl Columns for StationSampleColumns {
    type Row = StationSample;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("t_h", DataType::Float64, false),
            Field::new("t_s", DataType::Float64, false),
            Field::new("queue_len", DataType::UInt32, false),
            Field::new("busy_servers", DataType::UInt32, false),
            Field::new("in_system", DataType::UInt32, false),
        ]))
    }

    fn push(&mut self, s: StationSample) {
        self.t_s.push(s.t_s);
        self.queue_len.push(s.queue_len);
        self.busy_servers.push(s.busy_servers);
        self.in_system.push(s.in_system);
    }

    fn len(&self) -> usize {
        self.t_s.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let c = std::mem::take(self);
        let t_h: Vec<f64> = c.t_s.iter().map(|t| t / 3600.0).collect();
        vec![
            Arc::new(Float64Array::from(t_h)),
            Arc::new(Float64Array::from(c.t_s)),
            Arc::new(UInt32Array::from(c.queue_len)),
            Arc::new(UInt32Array::from(c.busy_servers)),
            Arc::new(UInt32Array::from(c.in_system)),
        ]
    }
}

/// The trace directory of one replication.
pub fn trace_dir(out: &Path, point: u32, replication: u64) -> PathBuf {
    out.join("traces").join(format!("point={point}")).join(format!("rep={replication}"))
}
