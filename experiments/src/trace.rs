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
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use infersim_agents::network::{NetworkPeriod, NetworkQuery};
use infersim_agents::pipeline::{PipelineRequest, PipelineSample};
use infersim_agents::retraining::{RetrainingRequest, RetrainingSample};
use infersim_agents::serving::{RequestOutcome, RequestRecord, ServingSample};
use infersim_agents::station::{CustomerRecord, Outcome, StationSample};
use infersim_engine::Observer;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use crate::output::{OutputError, trace_writer_properties};

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

/// Where a sink's row groups go: written by the simulation's own thread while the
/// trace is small, handed to a writer thread once it has filled a row group.
enum Writer {
    Inline(Box<ArrowWriter<File>>),
    Threaded { batches: SyncSender<RecordBatch>, thread: JoinHandle<Result<(), String>> },
}

/// A trace file being written: rows are buffered and written a row group at a time
/// to a temporary file, which [`ParquetSink::finish`] renames into place. A trace that
/// outgrows one row group gets a writer thread, so the simulation goes on while a
/// group is encoded and compressed (at most two groups wait: memory stays bounded);
/// a smaller one is written at `finish`, without a thread, which is cheaper when many
/// replications already keep every core busy. A write error is kept and reported by
/// `finish` (observers cannot fail mid-run).
pub struct ParquetSink<C: Columns> {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<Writer>,
    columns: C,
    rows: u64,
    error: Option<OutputError>,
}

/// Writes every batch it receives, then closes the file. After a failure it keeps
/// receiving (so the simulation never blocks) and reports the first error.
fn write_batches(mut writer: ArrowWriter<File>, batches: Receiver<RecordBatch>) -> Result<(), String> {
    let mut result = Ok(());
    for batch in batches {
        if result.is_ok() {
            result = writer.write(&batch).map_err(|e| e.to_string());
        }
    }
    result.and_then(|()| writer.close().map(|_| ()).map_err(|e| e.to_string()))
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
        let schema = C::schema();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(trace_writer_properties(&schema)))
            .map_err(|e| OutputError::Format { path: tmp.clone(), message: e.to_string() })?;
        Ok(ParquetSink { path, tmp, writer: Some(Writer::Inline(Box::new(writer))), columns, rows: 0, error: None })
    }

    /// Hands the buffered rows on: to the writer thread (started on the first full row
    /// group), or, at `finish` of a small trace, to the inline writer.
    fn flush(&mut self, finishing: bool) {
        if self.columns.is_empty() || self.error.is_some() {
            return;
        }
        let batch = match RecordBatch::try_new(C::schema(), self.columns.take()) {
            Ok(batch) => batch,
            Err(e) => {
                self.error = Some(OutputError::Format { path: self.tmp.clone(), message: e.to_string() });
                return;
            }
        };
        if !finishing && let Some(Writer::Inline(_)) = self.writer {
            let Some(Writer::Inline(writer)) = self.writer.take() else { unreachable!("matched above") };
            let (batches, received) = sync_channel::<RecordBatch>(1);
            match std::thread::Builder::new()
                .name("trace-writer".into())
                .spawn(move || write_batches(*writer, received))
            {
                Ok(thread) => self.writer = Some(Writer::Threaded { batches, thread }),
                Err(error) => {
                    self.error = Some(OutputError::Io { path: self.tmp.clone(), error });
                    return;
                }
            }
        }
        let written = match self.writer.as_mut() {
            Some(Writer::Inline(writer)) => writer.write(&batch).map_err(|e| e.to_string()),
            Some(Writer::Threaded { batches, .. }) => {
                batches.send(batch).map_err(|_| "the trace writer stopped".to_string())
            }
            None => Ok(()),
        };
        if let Err(message) = written {
            self.error = Some(OutputError::Format { path: self.tmp.clone(), message });
        }
    }

    /// Writes what is buffered, closes the file and renames it into place; returns
    /// the number of rows.
    pub fn finish(mut self) -> Result<u64, OutputError> {
        self.flush(true);
        let written = match self.writer.take() {
            Some(Writer::Inline(writer)) => writer.close().map(|_| ()).map_err(|e| e.to_string()),
            Some(Writer::Threaded { batches, thread }) => {
                // Closing the channel ends the writer thread's loop.
                drop(batches);
                thread.join().unwrap_or_else(|_| Err("the trace writer panicked".to_string()))
            }
            None => Ok(()),
        };
        let result = match (self.error.take(), written) {
            (Some(e), _) => Err(e),
            (None, Err(message)) => Err(OutputError::Format { path: self.tmp.clone(), message }),
            (None, Ok(())) => {
                fs::rename(&self.tmp, &self.path).map_err(|error| OutputError::Io { path: self.path.clone(), error })
            }
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
            self.flush(false);
        }
    }
}

/// Defines a [`Columns`] type from one line per column: name, buffer element type,
/// Arrow array type, Arrow data type, nullability, and the value taken from a row.
macro_rules! columns {
    (
        $(#[$doc:meta])*
        $name:ident for $row:ty {
            $($col:ident: $ty:ty => $array:ident, $dtype:ident, $nullable:literal, |$r:ident| $value:expr;)+
        }
    ) => {
        $(#[$doc])*
        #[derive(Default)]
        pub struct $name {
            $($col: Vec<$ty>,)+
        }

        impl Columns for $name {
            type Row = $row;

            fn schema() -> SchemaRef {
                Arc::new(Schema::new(vec![$(Field::new(stringify!($col), DataType::$dtype, $nullable)),+]))
            }

            fn push(&mut self, row: $row) {
                $(self.$col.push({
                    let $r = &row;
                    $value
                });)+
            }

            fn len(&self) -> usize {
                [$(self.$col.len()),+][0]
            }

            fn take(&mut self) -> Vec<ArrayRef> {
                let c = std::mem::take(self);
                vec![$(Arc::new($array::from(c.$col)) as ArrayRef),+]
            }
        }
    };
}

columns! {
    /// Columns of `requests.parquet` for the station: one row per customer.
    StationRequestColumns for CustomerRecord {
        request_id: u64 => UInt64Array, UInt64, false, |r| r.customer;
        arrival_s: f64 => Float64Array, Float64, false, |r| r.arrival_s;
        start_s: Option<f64> => Float64Array, Float64, true, |r| r.start_s;
        finish_s: Option<f64> => Float64Array, Float64, true, |r| r.finish_s;
        server: Option<u32> => UInt32Array, UInt32, true, |r| r.server;
        wait_s: Option<f64> => Float64Array, Float64, true, |r| r.start_s.map(|s| s - r.arrival_s);
        latency_s: Option<f64> => Float64Array, Float64, true, |r| r.finish_s.map(|f| f - r.arrival_s);
        outcome: &'static str => StringArray, Utf8, false, |r| match r.outcome {
            Outcome::Served => "served",
            Outcome::Blocked => "rejected",
        };
        warmup: bool => BooleanArray, Boolean, false, |r| r.warmup;
    }
}

/// Columns of `requests.parquet` for the serving world: one row per request, whatever
/// became of it (`outcome`: served, rejected, timed_out).
#[derive(Default)]
pub struct ServingRequestColumns {
    task_names: Vec<String>,
    request_id: Vec<u64>,
    /// Task indices; names are looked up when a batch is built, not copied per row.
    task: Vec<u16>,
    tokens: Vec<u32>,
    truncated: Vec<bool>,
    history_tokens: Vec<u32>,
    quality: Vec<f64>,
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

/// The name at `index` (of a task or a class), or the index itself if the names do not
/// cover it.
fn task_name(names: &[String], index: u16) -> std::borrow::Cow<'_, str> {
    match names.get(usize::from(index)) {
        Some(name) => std::borrow::Cow::Borrowed(name.as_str()),
        None => std::borrow::Cow::Owned(index.to_string()),
    }
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
            Field::new("history_tokens", DataType::UInt32, false),
            Field::new("quality", DataType::Float64, false),
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
        let served = r.outcome == RequestOutcome::Served;
        self.request_id.push(r.request_id);
        self.task.push(r.task);
        self.tokens.push(r.tokens);
        self.truncated.push(r.truncated);
        self.history_tokens.push(r.history_tokens);
        self.quality.push(r.quality);
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
        let c = std::mem::replace(self, ServingRequestColumns::new(names.clone()));
        vec![
            Arc::new(UInt64Array::from(c.request_id)),
            Arc::new(StringArray::from_iter_values(c.task.iter().map(|&t| task_name(&names, t)))),
            Arc::new(UInt32Array::from(c.tokens)),
            Arc::new(BooleanArray::from(c.truncated)),
            Arc::new(UInt32Array::from(c.history_tokens)),
            Arc::new(Float64Array::from(c.quality)),
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

columns! {
    /// Columns of `timeseries.parquet` for the serving world.
    ServingSampleColumns for ServingSample {
        t_h: f64 => Float64Array, Float64, false, |s| s.t_s / 3600.0;
        t_s: f64 => Float64Array, Float64, false, |s| s.t_s;
        queue_len: u32 => UInt32Array, UInt32, false, |s| s.queue_len;
        busy_gpus: u32 => UInt32Array, UInt32, false, |s| s.busy_gpus;
        power_kw: f64 => Float64Array, Float64, false, |s| s.power_kw;
        energy_kwh: f64 => Float64Array, Float64, false, |s| s.energy_kwh;
        carbon_kg: f64 => Float64Array, Float64, false, |s| s.carbon_kg;
    }
}

columns! {
    /// Columns of `timeseries.parquet` for the station.
    StationSampleColumns for StationSample {
        t_h: f64 => Float64Array, Float64, false, |s| s.t_s / 3600.0;
        t_s: f64 => Float64Array, Float64, false, |s| s.t_s;
        queue_len: u32 => UInt32Array, UInt32, false, |s| s.queue_len;
        busy_servers: u32 => UInt32Array, UInt32, false, |s| s.busy_servers;
        in_system: u32 => UInt32Array, UInt32, false, |s| s.in_system;
    }
}

columns! {
    /// Columns of `timeseries.parquet` for the drift-and-retraining world: one row per
    /// monitor tick. The first six are the Vensim model's saved variables, by the same
    /// names as its reference trajectories.
    RetrainingSampleColumns for RetrainingSample {
        t_h: f64 => Float64Array, Float64, false, |s| s.t_h;
        loss: f64 => Float64Array, Float64, false, |s| s.loss;
        training_gpus: f64 => Float64Array, Float64, false, |s| s.training_gpus;
        processed_data: f64 => Float64Array, Float64, false, |s| s.processed_data;
        energy_kwh: f64 => Float64Array, Float64, false, |s| s.energy_kwh;
        requests: u64 => UInt64Array, UInt64, false, |s| s.requests;
        loss_monitoring: f64 => Float64Array, Float64, false, |s| s.loss_monitoring;
        quality: f64 => Float64Array, Float64, false, |s| s.quality;
        queue_len: u32 => UInt32Array, UInt32, false, |s| s.queue_len;
        carbon_kg: f64 => Float64Array, Float64, false, |s| s.carbon_kg;
        ics: Option<f64> => Float64Array, Float64, true, |s| s.ics;
    }
}

columns! {
    /// Columns of `requests.parquet` for the drift-and-retraining world.
    RetrainingRequestColumns for RetrainingRequest {
        request_id: u64 => UInt64Array, UInt64, false, |r| r.request_id;
        arrival_s: f64 => Float64Array, Float64, false, |r| r.arrival_s;
        start_s: f64 => Float64Array, Float64, false, |r| r.start_s;
        finish_s: f64 => Float64Array, Float64, false, |r| r.finish_s;
        gpu: Option<u32> => UInt32Array, UInt32, true, |r| r.gpu;
        latency_s: Option<f64> => Float64Array, Float64, true, |r| r.served.then_some(r.latency_s);
        loss: f64 => Float64Array, Float64, false, |r| r.loss;
        drift: f64 => Float64Array, Float64, false, |r| r.drift;
        energy_kwh: f64 => Float64Array, Float64, false, |r| r.energy_kwh;
        outcome: &'static str => StringArray, Utf8, false, |r| if r.served { "served" } else { "lost" };
    }
}

/// Columns of `requests.parquet` for the miner network: one row per finished query,
/// with the contender it ended with (the one that answered, or the last one tried).
#[derive(Default)]
pub struct NetworkQueryColumns {
    task_names: Vec<String>,
    class_names: Vec<String>,
    query_id: Vec<u64>,
    task: Vec<u16>,
    synthetic: Vec<bool>,
    arrival_s: Vec<f64>,
    finish_s: Vec<f64>,
    latency_s: Vec<Option<f64>>,
    attempts: Vec<u32>,
    node: Vec<Option<u32>>,
    class: Vec<Option<u16>>,
    outcome: Vec<&'static str>,
    quality: Vec<Option<f64>>,
    observed_quality: Vec<Option<f64>>,
}

impl NetworkQueryColumns {
    /// Buffers that write task and class names for their indices.
    pub fn new(task_names: Vec<String>, class_names: Vec<String>) -> Self {
        NetworkQueryColumns { task_names, class_names, ..Default::default() }
    }
}

impl Columns for NetworkQueryColumns {
    type Row = NetworkQuery;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("query_id", DataType::UInt64, false),
            Field::new("task", DataType::Utf8, false),
            Field::new("synthetic", DataType::Boolean, false),
            Field::new("arrival_s", DataType::Float64, false),
            Field::new("finish_s", DataType::Float64, false),
            Field::new("latency_s", DataType::Float64, true),
            Field::new("attempts", DataType::UInt32, false),
            Field::new("node", DataType::UInt32, true),
            Field::new("class", DataType::Utf8, true),
            Field::new("outcome", DataType::Utf8, false),
            Field::new("quality", DataType::Float64, true),
            Field::new("observed_quality", DataType::Float64, true),
        ]))
    }

    fn push(&mut self, q: NetworkQuery) {
        self.query_id.push(q.query_id);
        self.task.push(q.task);
        self.synthetic.push(q.synthetic);
        self.arrival_s.push(q.arrival_s);
        self.finish_s.push(q.finish_s);
        self.latency_s.push(q.quality.map(|_| q.finish_s - q.arrival_s));
        self.attempts.push(q.attempts);
        self.node.push(q.node);
        self.class.push(q.class);
        self.outcome.push(q.outcome.as_str());
        self.quality.push(q.quality);
        self.observed_quality.push(q.observed_quality);
    }

    fn len(&self) -> usize {
        self.query_id.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let (tasks, classes) = (std::mem::take(&mut self.task_names), std::mem::take(&mut self.class_names));
        let c = std::mem::replace(self, NetworkQueryColumns::new(tasks.clone(), classes.clone()));
        vec![
            Arc::new(UInt64Array::from(c.query_id)),
            Arc::new(StringArray::from_iter_values(c.task.iter().map(|&t| task_name(&tasks, t)))),
            Arc::new(BooleanArray::from(c.synthetic)),
            Arc::new(Float64Array::from(c.arrival_s)),
            Arc::new(Float64Array::from(c.finish_s)),
            Arc::new(Float64Array::from(c.latency_s)),
            Arc::new(UInt32Array::from(c.attempts)),
            Arc::new(UInt32Array::from(c.node)),
            Arc::new(StringArray::from_iter(c.class.iter().map(|k| k.map(|k| task_name(&classes, k))))),
            Arc::new(StringArray::from(c.outcome)),
            Arc::new(Float64Array::from(c.quality)),
            Arc::new(Float64Array::from(c.observed_quality)),
        ]
    }
}

/// Columns of `timeseries.parquet` for the miner network: one row per contender per
/// scoring period, t_h (the period's end) first.
#[derive(Default)]
pub struct NetworkPeriodColumns {
    task_names: Vec<String>,
    class_names: Vec<String>,
    rows: Vec<NetworkPeriod>,
}

impl NetworkPeriodColumns {
    /// Buffers that write task and class names for their indices.
    pub fn new(task_names: Vec<String>, class_names: Vec<String>) -> Self {
        NetworkPeriodColumns { task_names, class_names, rows: Vec::new() }
    }
}

impl Columns for NetworkPeriodColumns {
    type Row = NetworkPeriod;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("t_h", DataType::Float64, false),
            Field::new("node", DataType::UInt32, false),
            Field::new("class", DataType::Utf8, false),
            Field::new("task", DataType::Utf8, false),
            Field::new("requests", DataType::UInt64, false),
            Field::new("rate_limited", DataType::UInt64, false),
            Field::new("failed", DataType::UInt64, false),
            Field::new("consumed", DataType::Float64, false),
            Field::new("capacity", DataType::Float64, false),
            Field::new("period_score", DataType::Float64, true),
            Field::new("observed_quality", DataType::Float64, true),
            Field::new("score", DataType::Float64, true),
            Field::new("glob", DataType::Float64, false),
        ]))
    }

    fn push(&mut self, row: NetworkPeriod) {
        self.rows.push(row);
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let rows = std::mem::take(&mut self.rows);
        let (tasks, classes) = (&self.task_names, &self.class_names);
        let floats = |f: fn(&NetworkPeriod) -> f64| Arc::new(Float64Array::from_iter_values(rows.iter().map(f)));
        let options = |f: fn(&NetworkPeriod) -> Option<f64>| Arc::new(Float64Array::from_iter(rows.iter().map(f)));
        let counts = |f: fn(&NetworkPeriod) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)));
        vec![
            floats(|r| r.t_h),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.node))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| task_name(classes, r.class)))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| task_name(tasks, r.task)))),
            counts(|r| r.requests),
            counts(|r| r.rate_limited),
            counts(|r| r.failed),
            floats(|r| r.consumed),
            floats(|r| r.capacity),
            options(|r| r.period_score),
            options(|r| r.observed_quality),
            options(|r| r.score),
            floats(|r| r.glob),
        ]
    }
}

columns! {
    /// Columns of `timeseries.parquet` for the adaptive pipeline: one row per adapter
    /// interval.
    PipelineSampleColumns for PipelineSample {
        t_h: f64 => Float64Array, Float64, false, |s| s.t_h;
        observed_per_s: f64 => Float64Array, Float64, false, |s| s.observed_per_s;
        predicted_per_s: f64 => Float64Array, Float64, false, |s| s.predicted_per_s;
        plan: String => StringArray, Utf8, false, |s| s.plan.clone();
        feasible: bool => BooleanArray, Boolean, false, |s| s.feasible;
        queued: u32 => UInt32Array, UInt32, false, |s| s.queued;
        cores: f64 => Float64Array, Float64, false, |s| s.cores;
        ics: Option<f64> => Float64Array, Float64, true, |s| s.ics;
        energy_kwh: f64 => Float64Array, Float64, false, |s| s.energy_kwh;
    }
}

columns! {
    /// Columns of `requests.parquet` for the adaptive pipeline: one row per input.
    PipelineRequestColumns for PipelineRequest {
        arrival_s: f64 => Float64Array, Float64, false, |r| r.arrival_s;
        finish_s: f64 => Float64Array, Float64, false, |r| r.finish_s;
        latency_s: f64 => Float64Array, Float64, false, |r| r.finish_s - r.arrival_s;
        accuracy: f64 => Float64Array, Float64, false, |r| r.accuracy;
        score: Option<u32> => UInt32Array, UInt32, true, |r| r.score.map(u32::from);
    }
}

/// The trace directory of one replication.
pub fn trace_dir(out: &Path, point: u32, replication: u64) -> PathBuf {
    out.join("traces").join(format!("point={point}")).join(format!("rep={replication}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn sample(i: u32) -> StationSample {
        StationSample { t_s: f64::from(i), queue_len: i, busy_servers: i % 4, in_system: i + i % 4 }
    }

    fn written(rows: u32) -> (tempfile::TempDir, PathBuf, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeseries.parquet");
        let mut sink = ParquetSink::<StationSampleColumns>::create(path.clone()).unwrap();
        (0..rows).for_each(|i| sink.observe(sample(i)));
        let count = sink.finish().unwrap();
        (dir, path, count)
    }

    #[test]
    fn a_small_trace_is_one_row_group_written_at_finish() {
        let (dir, path, count) = written(1000);
        assert_eq!(count, 1000);
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }

    #[test]
    fn a_large_trace_streams_row_groups_in_order_through_the_writer_thread() {
        let rows = 3 * ROW_GROUP_ROWS as u32 + 17;
        let (dir, path, count) = written(rows);
        assert_eq!(count, u64::from(rows));
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        let full = ROW_GROUP_ROWS as i64;
        assert_eq!(groups, vec![full, full, full, 17]);
        // Every row, in order.
        let batches =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let mut next = 0u32;
        for batch in batches {
            let batch = batch.unwrap();
            let queue = batch.column_by_name("queue_len").unwrap().as_primitive::<arrow::datatypes::UInt32Type>();
            for value in queue.values() {
                assert_eq!(*value, next);
                next += 1;
            }
        }
        assert_eq!(next, rows);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
