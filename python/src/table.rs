//! Tables handed to Python as Arrow, through the PyCapsule stream protocol
//! (`__arrow_c_stream__`): polars, pyarrow and DuckDB import them without a copy
//! through files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, RecordBatchIterator, StringArray, UInt64Array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::errors::run_error;

/// An Arrow table from infersim: pass it to `polars.DataFrame(...)` or
/// `pyarrow.table(...)` (it implements the Arrow PyCapsule stream protocol).
#[pyclass(module = "infersim._infersim", frozen)]
pub struct ArrowTable {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

#[pymethods]
impl ArrowTable {
    /// The table as an Arrow C stream in a capsule named "arrow_array_stream". Each
    /// call makes a new stream over the same buffers.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // The protocol lets a consumer ask for a schema; the producer may ignore it
        // (the consumer then casts), which is what we do.
        let _ = requested_schema;
        let reader = RecordBatchIterator::new(self.batches.clone().into_iter().map(Ok), self.schema.clone());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    /// Rows in all.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    fn __repr__(&self) -> String {
        format!("<infersim ArrowTable: {} rows x {} columns>", self.num_rows(), self.schema.fields().len())
    }
}

impl ArrowTable {
    /// Every row group of a Parquet file.
    pub fn read_parquet(path: &Path) -> PyResult<ArrowTable> {
        let fail = |e: &dyn std::fmt::Display| run_error(format!("{}: cannot read: {e}", path.display()));
        let file = File::open(path).map_err(|e| fail(&e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
        let schema = builder.schema().clone();
        let reader = builder.build().map_err(|e| fail(&e))?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| fail(&e))?;
        Ok(ArrowTable { schema, batches })
    }

    /// A table of the given columns (all of one length).
    pub fn from_columns(columns: Vec<(&str, Column)>) -> ArrowTable {
        let fields: Vec<Field> = columns.iter().map(|(name, c)| Field::new(*name, c.data_type(), true)).collect();
        let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, c)| c.into_array()).collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays).expect("columns of one length and their own types");
        ArrowTable { schema, batches: vec![batch] }
    }
}

/// A column of a small table built here (comparisons, fits).
pub enum Column {
    /// Text.
    Text(Vec<String>),
    /// Counts and indices.
    Count(Vec<u64>),
    /// Numbers, missing where there is none.
    Number(Vec<Option<f64>>),
    /// Yes/no, missing where it says nothing.
    Flag(Vec<Option<bool>>),
}

impl Column {
    fn data_type(&self) -> arrow::datatypes::DataType {
        use arrow::datatypes::DataType;
        match self {
            Column::Text(_) => DataType::Utf8,
            Column::Count(_) => DataType::UInt64,
            Column::Number(_) => DataType::Float64,
            Column::Flag(_) => DataType::Boolean,
        }
    }

    fn into_array(self) -> ArrayRef {
        match self {
            Column::Text(v) => Arc::new(StringArray::from(v)),
            Column::Count(v) => Arc::new(UInt64Array::from(v)),
            Column::Number(v) => Arc::new(Float64Array::from(v)),
            Column::Flag(v) => Arc::new(BooleanArray::from(v)),
        }
    }
}
