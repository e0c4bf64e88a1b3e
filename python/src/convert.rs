//! Python values to scenario (TOML) values and back.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use toml::{Table, Value};

/// A Python value as a TOML value: bool, int, float, str, list/tuple (arrays) and
/// dict (tables). `key` names it in the message when it has no TOML form.
pub fn to_toml(key: &str, value: &Bound<'_, PyAny>) -> PyResult<Value> {
    // bool before int: Python's bool is an int.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Boolean(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        let n: i64 = value
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{key}: {value} does not fit a 64-bit integer")))?;
        return Ok(Value::Integer(n));
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(value.extract()?));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_string()));
    }
    if let Ok(d) = value.cast::<PyDict>() {
        return Ok(Value::Table(to_table(key, d)?));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let items = value.try_iter()?.map(|item| to_toml(key, &item?)).collect::<PyResult<Vec<_>>>()?;
        return Ok(Value::Array(items));
    }
    // os.PathLike (a trace file's path) is a string to a scenario.
    if let Ok(path) = value.call_method0("__fspath__") {
        return Ok(Value::String(path.extract()?));
    }
    // numpy scalars and the like: as float when they convert.
    if let Ok(x) = value.call_method0("__float__") {
        return Ok(Value::Float(x.extract()?));
    }
    Err(PyTypeError::new_err(format!(
        "{key}: {} has no scenario form (give a bool, int, float, str, list or dict)",
        value.get_type().name()?
    )))
}

/// A dict of string keys as a TOML table.
pub fn to_table(key: &str, dict: &Bound<'_, PyDict>) -> PyResult<Table> {
    let mut table = Table::new();
    for (k, v) in dict.iter() {
        let name: String = k.extract().map_err(|_| PyTypeError::new_err(format!("{key}: keys must be strings")))?;
        let path = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
        table.insert(name, to_toml(&path, &v)?);
    }
    Ok(table)
}

/// A TOML value as a Python value (dates as their text).
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Integer(n) => n.into_pyobject(py)?.into_any(),
        Value::Float(x) => x.into_pyobject(py)?.into_any(),
        Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Datetime(d) => d.to_string().into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let items = items.iter().map(|v| to_python(py, v)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Table(t) => {
            let dict = PyDict::new(py);
            for (k, v) in t {
                dict.set_item(k, to_python(py, v)?)?;
            }
            dict.into_any()
        }
    })
}
