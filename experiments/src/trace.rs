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
        let schema = C::schema();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(trace_writer_properties(&schema)))
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

/// The trace directory of one replication.
pub fn trace_dir(out: &Path, point: u32, replication: u64) -> PathBuf {
    out.join("traces").join(format!("point={point}")).join(format!("rep={replication}"))
}
