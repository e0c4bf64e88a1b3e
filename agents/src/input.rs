//! Data a scenario names by file (request traces, carbon-intensity series, profiles),
//! as worlds see it: a [`DataTable`] of named columns, handed over by whoever reads
//! files ([`Inputs`], implemented by the experiments crate for CSV, Parquet and JSON
//! Lines). Worlds interpret the columns and report a bad row by its line or row.
//!
//! ```
//! use infersim_agents::input::{DataColumn, DataTable};
//! let table = DataTable::from_text_rows("t.csv", &["t_h", "kg_per_kwh"], vec![(2, vec!["0", "0.5"]), (3, vec!["1", "x"])]);
//! let col = table.require("kg_per_kwh").unwrap();
//! assert_eq!(table.number(col, 0), Ok(0.5));
//! assert_eq!(table.number(col, 1), Err("\"x\"".to_string()));
//! assert_eq!(table.at(1, "not a number").to_string(), "t.csv:3: not a number");
//! ```

use crate::error::ConfigError;

/// Reads the data files a scenario names. Agents never open files themselves.
pub trait Inputs {
    /// The table named `name` (a built-in data name or a path, relative to the
    /// scenario file) that the scenario gives at `key`.
    fn table(&self, key: &str, name: &str) -> Result<DataTable, ConfigError>;
}

/// Inputs for configurations built in code: every file is refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInputs;

impl Inputs for NoInputs {
    fn table(&self, key: &str, name: &str) -> Result<DataTable, ConfigError> {
        Err(ConfigError::invalid(key, name, "no data file here: this configuration was built in code"))
    }
}

/// One column's cells: numbers (from typed files) or text (from CSV, parsed when read).
#[derive(Clone, Debug, PartialEq)]
pub enum DataColumn {
    /// Numbers, `None` for nulls.
    Numbers(Vec<Option<f64>>),
    /// Text cells, `None` for nulls.
    Texts(Vec<Option<String>>),
}

impl DataColumn {
    fn len(&self) -> usize {
        match self {
            DataColumn::Numbers(v) => v.len(),
            DataColumn::Texts(v) => v.len(),
        }
    }
}

/// A table read from a data file: named columns of equal length.
#[derive(Clone, Debug, PartialEq)]
pub struct DataTable {
    file: String,
    names: Vec<String>,
    columns: Vec<DataColumn>,
    rows: usize,
    /// For text files, the line each row stands on (the header is line 1); `None`
    /// for columnar files, whose rows are numbered from 1.
    lines: Option<Vec<usize>>,
}

impl DataTable {
    /// A table from a columnar file (Parquet, JSON Lines): rows are named by number.
    pub fn from_columns(file: impl Into<String>, columns: Vec<(String, DataColumn)>) -> DataTable {
        let rows = columns.first().map_or(0, |(_, c)| c.len());
        assert!(columns.iter().all(|(_, c)| c.len() == rows), "columns of one table have one length");
        let (names, columns) = columns.into_iter().unzip();
        DataTable { file: file.into(), names, columns, rows, lines: None }
    }

    /// A table from a text file with a header: each row with the line it stands on.
    pub fn from_text_rows<S: AsRef<str>>(
        file: impl Into<String>,
        header: &[S],
        rows: Vec<(usize, Vec<S>)>,
    ) -> DataTable {
        let mut cells: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); header.len()];
        let mut lines = Vec::with_capacity(rows.len());
        for (line, row) in &rows {
            lines.push(*line);
            for (c, column) in cells.iter_mut().enumerate() {
                column.push(row.get(c).map(|s| s.as_ref().to_string()));
            }
        }
        DataTable {
            file: file.into(),
            names: header.iter().map(|s| s.as_ref().trim().to_string()).collect(),
            columns: cells.into_iter().map(DataColumn::Texts).collect(),
            rows: rows.len(),
            lines: Some(lines),
        }
    }

    /// The file as the scenario names it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The rows for which `keep` (given a row's index) holds, in order, as a table of
    /// the same file (row numbers and lines as in the whole table's errors).
    pub fn rows_where(&self, keep: impl Fn(usize) -> bool) -> DataTable {
        let kept: Vec<usize> = (0..self.rows).filter(|&r| keep(r)).collect();
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                DataColumn::Numbers(v) => DataColumn::Numbers(kept.iter().map(|&r| v[r]).collect()),
                DataColumn::Texts(v) => DataColumn::Texts(kept.iter().map(|&r| v[r].clone()).collect()),
            })
            .collect();
        DataTable {
            file: self.file.clone(),
            names: self.names.clone(),
            columns,
            rows: kept.len(),
            lines: self.lines.as_ref().map(|lines| kept.iter().map(|&r| lines[r]).collect()),
        }
    }

    /// Column names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The position of a column, if the table has it.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The position of the first of `names` the table has (for columns that go by
    /// several names in the files users bring).
    pub(crate) fn column_any(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|n| self.column(n))
    }

    /// The position of a column the world needs; the error lists the columns there are.
    pub fn require(&self, name: &str) -> Result<usize, ConfigError> {
        self.column(name).ok_or_else(|| self.missing(name))
    }

    /// The error for a missing column.
    pub fn missing(&self, name: &str) -> ConfigError {
        let message = format!("no {name} column (columns: {})", self.names.join(", "));
        match self.lines {
            Some(_) => ConfigError::Data { file: self.file.clone(), at: ":1".into(), message },
            None => ConfigError::data(self.file.clone(), message),
        }
    }

    /// The number in column `col` of row `row`; otherwise the cell as written (quoted
    /// text, or `null`) for the error message.
    pub fn number(&self, col: usize, row: usize) -> Result<f64, String> {
        match &self.columns[col] {
            DataColumn::Numbers(v) => v[row].ok_or_else(|| "null".to_string()),
            DataColumn::Texts(v) => match &v[row] {
                Some(text) => text.trim().parse::<f64>().map_err(|_| format!("{text:?}")),
                None => Err("(missing)".into()),
            },
        }
    }

    /// The text in column `col` of row `row` (numbers written as Rust prints them).
    pub fn text(&self, col: usize, row: usize) -> Option<String> {
        match &self.columns[col] {
            DataColumn::Numbers(v) => v[row].map(|x| x.to_string()),
            DataColumn::Texts(v) => v[row].as_ref().map(|s| s.trim().to_string()),
        }
    }

    /// An error about row `row` (from 0): names the file and the line (text files) or
    /// the row (from 1, columnar files).
    pub fn at(&self, row: usize, message: impl Into<String>) -> ConfigError {
        let at = match &self.lines {
            Some(lines) => format!(":{}", lines[row]),
            None => format!(": row {}", row + 1),
        };
        ConfigError::Data { file: self.file.clone(), at, message: message.into() }
    }

    /// An error about the whole file.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::data(self.file.clone(), message)
    }
}
