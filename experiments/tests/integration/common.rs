//! Helpers shared by the end-to-end tests: running the binary and reading its Parquet
//! outputs back with polars. Each test file uses some of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;

/// The energy and cost accounting every serving scenario states (values of no
/// consequence where it is used).
pub const ACCOUNTING: &str = "[serving.power]\nnode_baseline_w = 0.0\npue = 1.0\n[serving.grid]\nkind = \"constant\"\nkg_per_kwh = 0.4\n[serving.prices]\nenergy_usd_per_kwh = 0.12\ngpu_usd_per_hour = 2.0\n";

/// Runs the binary and asserts that it succeeded, showing its stderr if not.
pub fn infersim_ok(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_infersim")).args(args).output().expect("the binary runs");
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Runs the binary and asserts that it refused its input (exit 2); returns its stderr.
pub fn infersim_fails(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_infersim")).args(args).output().expect("the binary runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    stderr
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A Parquet file as a frame.
pub fn read(path: PathBuf) -> DataFrame {
    let text = path.to_string_lossy().into_owned();
    LazyFrame::scan_parquet(PlRefPath::new(text.as_str()), ScanArgsParquet::default()).unwrap().collect().unwrap()
}

/// A numeric column as f64, nulls as `None`.
pub fn optional_floats(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    let values = df.column(name).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().clone();
    (0..values.len()).map(|i| values.get(i)).collect()
}

/// A numeric column without nulls as f64.
pub fn floats(df: &DataFrame, name: &str) -> Vec<f64> {
    optional_floats(df, name).into_iter().map(|v| v.unwrap_or_else(|| panic!("{name} has a null"))).collect()
}

/// A text column, nulls as `None`.
pub fn strings(df: &DataFrame, name: &str) -> Vec<Option<String>> {
    let values = df.column(name).unwrap().str().unwrap().clone();
    (0..values.len()).map(|i| values.get(i).map(String::from)).collect()
}

/// A boolean column, nulls as `None`.
pub fn bools(df: &DataFrame, name: &str) -> Vec<Option<bool>> {
    let values = df.column(name).unwrap().bool().unwrap().clone();
    (0..values.len()).map(|i| values.get(i)).collect()
}
