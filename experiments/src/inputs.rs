//! Data files a scenario names (request traces, carbon-intensity series, profiles),
//! read for the worlds as [`DataTable`]s: CSV (with the `csv` crate, so byte-order
//! marks, quoted fields and CRLF lines read as pandas and spreadsheets write them),
//! Parquet (by extension) and JSON Lines (`.jsonl`). A name that is one of the built-in
//! data files is read from the binary; anything else is a path relative to the
//! scenario file's directory.

use std::path::{Path, PathBuf};

use infersim_agents::input::{DataColumn, DataTable, Inputs};
use infersim_agents::world::ConfigError;

/// Reads data files relative to a scenario's directory, or the worlds' built-in data
/// files by name.
#[derive(Clone, Debug)]
pub struct FileInputs {
    base_dir: PathBuf,
    builtin: Vec<(&'static str, &'static str)>,
}

impl FileInputs {
    /// Files named relative to `base_dir`, or one of `builtin` (name, text) by name
    /// (a registry's [`crate::registry::Registry::data`]).
    pub fn new(base_dir: &Path, builtin: Vec<(&'static str, &'static str)>) -> Self {
        FileInputs { base_dir: base_dir.to_path_buf(), builtin }
    }
}

impl Inputs for FileInputs {
    fn table(&self, key: &str, name: &str) -> Result<DataTable, ConfigError> {
        if let Some((_, text)) = self.builtin.iter().find(|(n, _)| *n == name) {
            let shown = format!("built-in {name}");
            return if name.ends_with(".jsonl") {
                read_json_lines(&shown, text)
            } else {
                read_csv(&shown, text.as_bytes())
            };
        }
        let path = self.base_dir.join(name);
        if !path.is_file() {
            let names: Vec<&str> = self.builtin.iter().map(|(n, _)| *n).filter(|n| !n.contains('/')).collect();
            let mut folders: Vec<&str> =
                self.builtin.iter().filter_map(|(n, _)| n.split_once('/')).map(|(folder, _)| folder).collect();
            folders.dedup();
            let under = match folders.is_empty() {
                true => String::new(),
                false => format!(", or a file under {}/ of the project's data/", folders.join("/, ")),
            };
            return Err(ConfigError::invalid(
                key,
                name,
                format!(
                    "a built-in profile or data name ({}{under}) or a file (CSV, Parquet or JSON Lines)",
                    names.join(", ")
                ),
            ));
        }
        let shown = path.display().to_string();
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("parquet") => read_parquet(&shown),
            Some("jsonl" | "ndjson") => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::data(&shown, e.to_string()))?;
                read_json_lines(&shown, &text)
            }
            _ => {
                let bytes = std::fs::read(&path).map_err(|e| ConfigError::data(&shown, format!("cannot read: {e}")))?;
                read_csv(&shown, &bytes)
            }
        }
    }
}

/// A CSV file with a header: every cell kept as text, each row with its line.
pub fn read_csv(shown: &str, bytes: &[u8]) -> Result<DataTable, ConfigError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ConfigError::data(shown, format!("unreadable header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(ConfigError::Data {
            file: shown.into(),
            at: ":1".into(),
            message: "the file is empty; expected a header".into(),
        });
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let at = e.position().map(|p| format!(":{}", p.line())).unwrap_or_default();
            ConfigError::Data { file: shown.into(), at, message: e.to_string() }
        })?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record.position().map_or(rows.len() + 2, |p| p.line() as usize);
        rows.push((line, record.iter().map(str::to_string).collect::<Vec<_>>()));
    }
    Ok(DataTable::from_text_rows(shown, &header, rows))
}

/// A JSON Lines file: one object per line; columns are the keys in order of first
/// appearance, numbers where every value is a number.
pub fn read_json_lines(shown: &str, text: &str) -> Result<DataTable, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| ConfigError::Data {
            file: shown.into(),
            at: format!(":{}", i + 1),
            message: e.to_string(),
        })?;
        let serde_json::Value::Object(object) = value else {
            return Err(ConfigError::Data {
                file: shown.into(),
                at: format!(":{}", i + 1),
                message: "not a JSON object".into(),
            });
        };
        for key in object.keys() {
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
        rows.push(object);
    }
    let columns = names
        .into_iter()
        .map(|name| {
            let cells: Vec<Option<&serde_json::Value>> =
                rows.iter().map(|r| r.get(&name).filter(|v| !v.is_null())).collect();
            let column = if cells.iter().all(|c| c.is_none_or(serde_json::Value::is_number)) {
                DataColumn::Numbers(cells.iter().map(|c| c.and_then(serde_json::Value::as_f64)).collect())
            } else {
                DataColumn::Texts(
                    cells.iter().map(|c| c.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
                )
            };
            (name, column)
        })
        .collect();
    Ok(DataTable::from_columns(shown, columns))
}

/// A Parquet file: numeric and boolean columns as numbers, everything else as text.
/// Read with arrow-rs, row group by row group.
pub fn read_parquet(shown: &str) -> Result<DataTable, ConfigError> {
    use arrow::array::{Array, Float64Array, RecordBatchReader as _, StringArray};
    use arrow::datatypes::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |e: &dyn std::fmt::Display| ConfigError::data(shown, format!("cannot read as Parquet: {e}"));
    let file = std::fs::File::open(shown).map_err(|e| ConfigError::data(shown, format!("cannot read: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?.build().map_err(|e| bad(&e))?;
    let schema = reader.schema();
    let numeric: Vec<bool> =
        schema.fields().iter().map(|f| f.data_type().is_numeric() || f.data_type() == &DataType::Boolean).collect();
    let mut columns: Vec<DataColumn> = numeric
        .iter()
        .map(|&n| if n { DataColumn::Numbers(Vec::new()) } else { DataColumn::Texts(Vec::new()) })
        .collect();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        for (i, column) in columns.iter_mut().enumerate() {
            let array = batch.column(i);
            match column {
                DataColumn::Numbers(values) => {
                    let floats = arrow::compute::cast(array, &DataType::Float64).map_err(|e| bad(&e))?;
                    let floats = floats.as_any().downcast_ref::<Float64Array>().expect("cast to Float64");
                    values.extend((0..floats.len()).map(|r| floats.is_valid(r).then(|| floats.value(r))));
                }
                DataColumn::Texts(values) => {
                    let texts = arrow::compute::cast(array, &DataType::Utf8).map_err(|e| bad(&e))?;
                    let texts = texts.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
                    values.extend((0..texts.len()).map(|r| texts.is_valid(r).then(|| texts.value(r).to_string())));
                }
            }
        }
    }
    let named = schema.fields().iter().map(|f| f.name().clone()).zip(columns).collect();
    Ok(DataTable::from_columns(shown, named))
}

#[cfg(test)]
mod tests {
    use super::*;
    use infersim_agents::arrivals::{ReplayedRequest, read_requests};

    fn read(text: &str) -> Result<Vec<ReplayedRequest>, String> {
        let table = read_csv("t.csv", text.as_bytes()).map_err(|e| e.to_string())?;
        read_requests(&table, &["chat", "code"]).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_what_is_there_and_ignores_other_columns() {
        let r = read("user,timestamp_s,task,prompt_tokens\nu1,0.5,code,120\nu2,0.5,chat,30\nu3,2.25,chat,7\n").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], ReplayedRequest { time_s: 0.5, task: Some(1), prompt_tokens: Some(120), output_tokens: None });
        assert_eq!(r[2].time_s, 2.25);
    }

    #[test]
    fn csv_as_pandas_and_spreadsheets_write_it() {
        // A byte-order mark, quoted header and fields, CRLF line ends.
        let text = "\u{feff}\"timestamp_s\",\"task\"\r\n\"0.5\",\"code\"\r\n1.5,chat\r\n";
        let r = read(text).unwrap();
        assert_eq!((r.len(), r[0].task, r[1].time_s), (2, Some(1), 1.5));
    }

    #[test]
    fn llm_traces_are_read_with_their_own_column_names() {
        // The ShareGPT-derived workload: nanoseconds, input_toks, output_toks.
        let r = read("arrival_time_ns,input_toks,output_toks\n46926808,2358,531\n347938951,1034,769\n").unwrap();
        assert_eq!((r[1].time_s, r[1].prompt_tokens, r[1].output_tokens), (0.347938951, Some(1034), Some(769)));
        // The Azure LLM inference traces: a date and time, counted from the first row.
        let azure = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,4808,10\n\
                     2023-11-16 18:15:50.9951690,3180,8\n2023-11-17 00:00:00,10,1\n";
        let r = read(azure).unwrap();
        assert_eq!((r[0].time_s, r[1].prompt_tokens, r[1].output_tokens), (0.0, Some(3180), Some(8)));
        assert!((r[1].time_s - 4.314579).abs() < 1e-6, "{}", r[1].time_s);
        assert!((r[2].time_s - (5.0 * 3600.0 + 44.0 * 60.0 + 13.31941)).abs() < 1e-3, "{}", r[2].time_s);
        // vLLM's per-request records: the engine's clock, counted from the first request.
        let jsonl = "{\"queued_ts\": 479748.34, \"input_toks\": 5, \"output_toks\": 2}\n\
                     {\"queued_ts\": 479749.84, \"input_toks\": 6, \"output_toks\": 3}\n";
        let r = read_requests(&read_json_lines("r.jsonl", jsonl).unwrap(), &[]).unwrap();
        assert!((r[1].time_s - 1.5).abs() < 1e-9 && r[0].time_s == 0.0);
        let none = read("t,input_toks\n1,2\n").unwrap_err();
        assert!(none.contains("no arrival time column") && none.contains("arrival_time_ns"), "{none}");
    }

    #[test]
    fn bad_rows_name_the_line_and_the_problem() {
        assert_eq!(
            read("timestamp_s\n1.0\n0.5\n").unwrap_err(),
            "t.csv:3: timestamp_s = 0.5 s goes back in time (the previous row has 1 s)"
        );
        assert_eq!(
            read("timestamp_s\n1.0\nsoon\n").unwrap_err(),
            "t.csv:3: timestamp_s = \"soon\" is not a finite number of seconds >= 0"
        );
        assert!(read("time\n1.0\n").unwrap_err().contains("no arrival time column"));
        assert!(
            read("timestamp_s,task\n1.0,poetry\n")
                .unwrap_err()
                .contains("task \"poetry\" is not one of the scenario's tasks")
        );
        assert!(read("timestamp_s,prompt_tokens\n1.0,0\n").unwrap_err().contains("prompt_tokens = \"0\""));
        assert!(read("").unwrap_err().contains("empty"));
        assert!(read("timestamp_s\n").unwrap_err().contains("no requests"));
    }

    /// Writes `frame` as Parquet and reads it back as a trace.
    fn read_parquet_trace(mut frame: polars::prelude::DataFrame) -> Result<Vec<ReplayedRequest>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        crate::analysis::write_frame_parquet(&path, &mut frame).unwrap();
        let table =
            FileInputs::new(dir.path(), Vec::new()).table("arrivals.path", "t.parquet").map_err(|e| e.to_string())?;
        read_requests(&table, &["chat", "code"])
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "t.parquet"))
    }

    #[test]
    fn parquet_and_json_lines_traces_read_like_csv_ones() {
        use polars::prelude::*;
        let frame = df!(
            "user" => ["u1", "u2", "u3"],
            "timestamp_s" => [0.5, 0.5, 2.25],
            "task" => ["code", "chat", "chat"],
            "prompt_tokens" => [120i64, 30, 7],
        )
        .unwrap();
        let csv = read("user,timestamp_s,task,prompt_tokens\nu1,0.5,code,120\nu2,0.5,chat,30\nu3,2.25,chat,7\n");
        assert_eq!(read_parquet_trace(frame).unwrap(), csv.clone().unwrap());
        let jsonl = "{\"user\": \"u1\", \"timestamp_s\": 0.5, \"task\": \"code\", \"prompt_tokens\": 120}\n\
                     {\"user\": \"u2\", \"timestamp_s\": 0.5, \"task\": \"chat\", \"prompt_tokens\": 30}\n\
                     {\"user\": \"u3\", \"timestamp_s\": 2.25, \"task\": \"chat\", \"prompt_tokens\": 7}\n";
        let table = read_json_lines("t.jsonl", jsonl).unwrap();
        assert_eq!(read_requests(&table, &["chat", "code"]).unwrap(), csv.unwrap());
        // Integer timestamps and 32-bit token counts are accepted as their values.
        let frame = df!("timestamp_s" => [1i64, 2], "output_tokens" => [5i32, 6]).unwrap();
        assert_eq!(read_parquet_trace(frame).unwrap()[1].output_tokens, Some(6));
        let back = df!("timestamp_s" => [1.0, 0.5]).unwrap();
        assert_eq!(
            read_parquet_trace(back).unwrap_err(),
            "t.parquet: row 2: timestamp_s = 0.5 s goes back in time (the previous row has 1 s)"
        );
        let no_time = df!("arrival_s" => [1.0]).unwrap();
        assert_eq!(
            read_parquet_trace(no_time).unwrap_err(),
            "t.parquet: no arrival time column (one of timestamp_s, timestamp, arrival_time_s, arrival_time_ns, queued_ts, TIMESTAMP; columns: arrival_s)"
        );
        let poetry = df!("timestamp_s" => [1.0], "task" => ["poetry"]).unwrap();
        assert!(read_parquet_trace(poetry).unwrap_err().contains("row 1: task \"poetry\" is not one of"));
        let zero = df!("timestamp_s" => [1.0], "prompt_tokens" => [0i64]).unwrap();
        assert!(read_parquet_trace(zero).unwrap_err().contains("row 1: prompt_tokens = \"0\""));
    }
}
