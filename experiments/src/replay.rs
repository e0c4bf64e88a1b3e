//! Reading recorded request traces for replay.
//!
//! A trace is a CSV file with a header, or a Parquet file. `timestamp_s` (seconds from
//! the start of the run, non-decreasing) is required; `task` (a task name of the
//! scenario), `prompt_tokens` and `output_tokens` are optional and, when present,
//! replace what would otherwise be drawn. Other columns are ignored, so traces
//! exported from real systems (or infersim's own `requests.parquet`, whose `arrival_s`
//! can be renamed) can be used as they are.

use std::path::Path;

use infersim_agents::serving::ReplayedRequest;

use crate::scenario::ScenarioError;

/// A CSV file read whole: errors name it and a line numbered as an editor shows it.
struct CsvFile {
    shown: String,
    text: String,
}

/// The columns a CSV header names, for finding required ones.
struct Header<'a> {
    file: &'a CsvFile,
    columns: Vec<&'a str>,
}

impl CsvFile {
    fn read(path: &Path) -> Result<CsvFile, ScenarioError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|error| ScenarioError::Read { source_name: shown.clone(), error })?;
        Ok(CsvFile { shown, text })
    }

    fn error(&self, line: usize, message: String) -> ScenarioError {
        ScenarioError::Trace { path: self.shown.clone(), line, message }
    }

    /// The header, and the non-blank rows after it with their line numbers;
    /// `expected` says what the header should hold when the file is empty.
    fn rows(&self, expected: &str) -> Result<(Header<'_>, impl Iterator<Item = (usize, &str)>), ScenarioError> {
        let mut lines = self.text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l));
        let Some((_, header)) = lines.next() else {
            return Err(self.error(1, format!("the file is empty; expected a header with {expected}")));
        };
        Ok((Header { file: self, columns: header.split(',').map(str::trim).collect() }, lines))
    }
}

impl Header<'_> {
    fn iter(&self) -> impl Iterator<Item = &&str> {
        self.columns.iter()
    }

    /// The position of a required column.
    fn column(&self, name: &str) -> Result<usize, ScenarioError> {
        self.columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| self.file.error(1, format!("no {name} column (columns: {})", self.columns.join(", "))))
    }
}

/// Reads a trace, checking every row; an error names the file, the line and the column.
pub fn read_trace_csv(path: &Path, task_names: &[&str]) -> Result<Vec<ReplayedRequest>, ScenarioError> {
    let file = CsvFile::read(path)?;
    let bad = |line: usize, message: String| file.error(line, message);
    let (header, lines) = file.rows("timestamp_s")?;
    let find = |name: &str| header.iter().position(|c| *c == name);
    let time_col = header.column("timestamp_s")?;
    let (task_col, prompt_col, output_col) = (find("task"), find("prompt_tokens"), find("output_tokens"));
    let mut requests = Vec::new();
    let mut previous = 0.0_f64;
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |col: usize, name: &str| {
            fields
                .get(col)
                .copied()
                .ok_or_else(|| bad(number, format!("missing {name}: the row has {} fields", fields.len())))
        };
        let raw_time = field(time_col, "timestamp_s")?;
        let time_s: f64 =
            raw_time.parse().ok().filter(|t: &f64| t.is_finite() && *t >= 0.0).ok_or_else(|| {
                bad(number, format!("timestamp_s = {raw_time:?} is not a finite number of seconds >= 0"))
            })?;
        if time_s < previous {
            return Err(bad(
                number,
                format!("timestamp_s = {time_s} goes back in time (the previous row has {previous})"),
            ));
        }
        previous = time_s;
        let tokens = |col: Option<usize>, name: &str| -> Result<Option<u32>, ScenarioError> {
            let Some(col) = col else { return Ok(None) };
            let raw = field(col, name)?;
            raw.parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| bad(number, format!("{name} = {raw:?} is not a whole number of tokens >= 1")))
        };
        let task = match task_col {
            None => None,
            Some(col) => {
                let name = field(col, "task")?;
                let index = task_names.iter().position(|t| *t == name).ok_or_else(|| {
                    bad(number, format!("task {name:?} is not one of the scenario's tasks ({})", task_names.join(", ")))
                })?;
                Some(index as u16)
            }
        };
        requests.push(ReplayedRequest {
            time_s,
            task,
            prompt_tokens: tokens(prompt_col, "prompt_tokens")?,
            output_tokens: tokens(output_col, "output_tokens")?,
        });
    }
    if requests.is_empty() {
        return Err(bad(1, "the trace has a header but no requests".into()));
    }
    Ok(requests)
}

/// Reads a Parquet trace with the columns of [`read_trace_csv`], checking every row;
/// an error names the file, the row (from 1) and the column.
pub fn read_trace_parquet(path: &Path, task_names: &[&str]) -> Result<Vec<ReplayedRequest>, ScenarioError> {
    use polars::prelude::*;
    let shown = path.display().to_string();
    let bad = |row: usize, message: String| ScenarioError::TraceFile {
        path: shown.clone(),
        message: if row == 0 { message } else { format!("row {row}: {message}") },
    };
    let polars = |e: PolarsError| bad(0, format!("cannot read as Parquet: {e}"));
    let frame = LazyFrame::scan_parquet(PlRefPath::new(shown.as_str()), ScanArgsParquet::default()).map_err(polars)?;
    let schema = frame.clone().collect_schema().map_err(polars)?;
    let has = |name: &str| schema.get(name).is_some();
    if !has("timestamp_s") {
        let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
        return Err(bad(0, format!("no timestamp_s column (columns: {})", names.join(", "))));
    }
    let mut columns = vec![col("timestamp_s").cast(DataType::Float64)];
    for (name, dtype) in
        [("task", DataType::String), ("prompt_tokens", DataType::Int64), ("output_tokens", DataType::Int64)]
    {
        if has(name) {
            columns.push(col(name).strict_cast(dtype));
        }
    }
    let df = frame.select(columns).collect().map_err(|e| bad(0, format!("unreadable columns: {e}")))?;
    let floats = |name: &str| df.column(name).ok().and_then(|c| c.f64().ok().cloned());
    let ints = |name: &str| df.column(name).ok().and_then(|c| c.i64().ok().cloned());
    let times = floats("timestamp_s").expect("cast to Float64 above");
    let tasks = df.column("task").ok().and_then(|c| c.str().ok().cloned());
    let (prompts, outputs) = (ints("prompt_tokens"), ints("output_tokens"));
    let mut requests = Vec::with_capacity(df.height());
    let mut previous = 0.0_f64;
    for i in 0..df.height() {
        let row = i + 1;
        let time_s = times.get(i).filter(|t| t.is_finite() && *t >= 0.0).ok_or_else(|| {
            bad(row, format!("timestamp_s = {:?} is not a finite number of seconds >= 0", times.get(i)))
        })?;
        if time_s < previous {
            return Err(bad(
                row,
                format!("timestamp_s = {time_s} goes back in time (the previous row has {previous})"),
            ));
        }
        previous = time_s;
        let tokens = |column: &Option<Int64Chunked>, name: &str| -> Result<Option<u32>, ScenarioError> {
            let Some(column) = column else { return Ok(None) };
            let value = column.get(i);
            value
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| bad(row, format!("{name} = {value:?} is not a whole number of tokens >= 1")))
        };
        let task = match &tasks {
            None => None,
            Some(tasks) => {
                let name = tasks.get(i).unwrap_or("");
                let index = task_names.iter().position(|t| *t == name).ok_or_else(|| {
                    bad(row, format!("task {name:?} is not one of the scenario's tasks ({})", task_names.join(", ")))
                })?;
                Some(index as u16)
            }
        };
        requests.push(ReplayedRequest {
            time_s,
            task,
            prompt_tokens: tokens(&prompts, "prompt_tokens")?,
            output_tokens: tokens(&outputs, "output_tokens")?,
        });
    }
    if requests.is_empty() {
        return Err(bad(0, "the trace has no requests".into()));
    }
    Ok(requests)
}

/// Reads a carbon-intensity series: a CSV with a header naming `t_h` (hours from the
/// start of the run, strictly increasing) and `kg_per_kwh` (>= 0); other columns are
/// ignored. Each value holds until the next row's hour.
pub fn read_intensity_csv(path: &Path) -> Result<Vec<(f64, f64)>, ScenarioError> {
    let file = CsvFile::read(path)?;
    let bad = |line: usize, message: String| file.error(line, message);
    let (header, lines) = file.rows("t_h,kg_per_kwh")?;
    let (t_col, v_col) = (header.column("t_h")?, header.column("kg_per_kwh")?);
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let number_at = |col: usize, name: &str| -> Result<f64, ScenarioError> {
            let raw = fields.get(col).copied().unwrap_or("");
            raw.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(number, format!("{name} = {raw:?} is not a finite number")))
        };
        let (t_h, value) = (number_at(t_col, "t_h")?, number_at(v_col, "kg_per_kwh")?);
        if value < 0.0 {
            return Err(bad(number, format!("kg_per_kwh = {value} is negative")));
        }
        if let Some(&(previous, _)) = points.last()
            && t_h <= previous
        {
            return Err(bad(number, format!("t_h = {t_h} does not increase (the previous row has {previous})")));
        }
        points.push((t_h, value));
    }
    if points.is_empty() {
        return Err(bad(2, "no rows after the header".into()));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<ReplayedRequest>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, text).unwrap();
        read_trace_csv(&path, &["chat", "code"])
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "t.csv"))
    }

    #[test]
    fn reads_what_is_there_and_ignores_other_columns() {
        let r = read("user,timestamp_s,task,prompt_tokens\nu1,0.5,code,120\nu2,0.5,chat,30\nu3,2.25,chat,7\n").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], ReplayedRequest { time_s: 0.5, task: Some(1), prompt_tokens: Some(120), output_tokens: None });
        assert_eq!(r[2].time_s, 2.25);
    }

    #[test]
    fn bad_rows_name_the_line_and_the_problem() {
        assert_eq!(
            read("timestamp_s\n1.0\n0.5\n").unwrap_err(),
            "t.csv:3: timestamp_s = 0.5 goes back in time (the previous row has 1)"
        );
        assert_eq!(
            read("timestamp_s\n1.0\nsoon\n").unwrap_err(),
            "t.csv:3: timestamp_s = \"soon\" is not a finite number of seconds >= 0"
        );
        assert!(read("time\n1.0\n").unwrap_err().contains("no timestamp_s column"));
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
    fn read_parquet(mut frame: polars::prelude::DataFrame) -> Result<Vec<ReplayedRequest>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        crate::analysis::write_frame_parquet(&path, &mut frame).unwrap();
        read_trace_parquet(&path, &["chat", "code"])
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "t.parquet"))
    }

    #[test]
    fn parquet_traces_read_like_csv_ones() {
        use polars::prelude::*;
        let frame = df!(
            "user" => ["u1", "u2", "u3"],
            "timestamp_s" => [0.5, 0.5, 2.25],
            "task" => ["code", "chat", "chat"],
            "prompt_tokens" => [120i64, 30, 7],
        )
        .unwrap();
        let csv = read("user,timestamp_s,task,prompt_tokens\nu1,0.5,code,120\nu2,0.5,chat,30\nu3,2.25,chat,7\n");
        assert_eq!(read_parquet(frame).unwrap(), csv.unwrap());
        // Integer timestamps and 32-bit token counts are accepted as their values.
        let frame = df!("timestamp_s" => [1i64, 2], "output_tokens" => [5i32, 6]).unwrap();
        assert_eq!(read_parquet(frame).unwrap()[1].output_tokens, Some(6));
        let back = df!("timestamp_s" => [1.0, 0.5]).unwrap();
        assert_eq!(
            read_parquet(back).unwrap_err(),
            "t.parquet: row 2: timestamp_s = 0.5 goes back in time (the previous row has 1)"
        );
        let no_time = df!("arrival_s" => [1.0]).unwrap();
        assert_eq!(read_parquet(no_time).unwrap_err(), "t.parquet: no timestamp_s column (columns: arrival_s)");
        let poetry = df!("timestamp_s" => [1.0], "task" => ["poetry"]).unwrap();
        assert!(read_parquet(poetry).unwrap_err().contains("row 1: task \"poetry\" is not one of"));
        let zero = df!("timestamp_s" => [1.0], "prompt_tokens" => [0i64]).unwrap();
        assert!(read_parquet(zero).unwrap_err().contains("row 1: prompt_tokens = Some(0)"));
    }
}
