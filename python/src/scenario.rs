//! `infersim.Scenario`: a validated scenario, built-in or from a file, TOML text or a
//! dict, that `.set()` and `.sweep()` derive new ones from.

use std::path::{Path, PathBuf};

use infersim::registry::Registry;
use infersim::scenario::Scenario as Core;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert::{to_python, to_table, to_toml};
use crate::errors::{from_scenario, scenario_error};

/// A scenario, validated: a built-in's name (see `infersim.scenarios()`) or a path to
/// a TOML file, or a dict of its tables (`Scenario.from_toml` takes text).
///
/// `set` and `sweep` return new scenarios; a scenario never changes.
///
/// >>> import infersim
/// >>> sc = infersim.Scenario("mmc").set({"station.servers": 3})
/// >>> sc.world
/// 'station'
#[pyclass(name = "Scenario", module = "infersim", frozen)]
#[derive(Clone)]
pub struct PyScenario {
    pub(crate) inner: Core,
}

/// The registry every scenario here is read with: infersim's built-in worlds.
pub fn registry() -> Registry {
    Registry::builtin()
}

#[pymethods]
impl PyScenario {
    #[new]
    fn new(source: &Bound<'_, PyAny>) -> PyResult<PyScenario> {
        if let Ok(dict) = source.cast::<PyDict>() {
            let table = to_table("", dict)?;
            let text = toml::to_string(&table).map_err(|e| scenario_error(format!("<dict>: {e}"), None, None))?;
            let cwd = std::env::current_dir().unwrap_or_default();
            return parse("<dict>", &text, &cwd);
        }
        let name: String = match source.cast::<PyString>() {
            Ok(s) => s.to_str()?.to_string(),
            Err(_) => match source.call_method0("__fspath__") {
                Ok(path) => path.extract()?,
                Err(_) => {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "Scenario() takes a built-in scenario's name, a path to a TOML file or a dict of tables, not {}",
                        source.get_type().name()?
                    )));
                }
            },
        };
        Core::load_with(&registry(), &name).map(|inner| PyScenario { inner }).map_err(|e| from_scenario(&e))
    }

    /// A scenario from TOML text. Relative paths in it (trace files) are read from
    /// `base_dir` (default: the current directory); `name` names it in messages.
    ///
    /// >>> sc = infersim.Scenario.from_toml(open("my.toml").read())
    #[staticmethod]
    #[pyo3(signature = (text, name = "<string>", base_dir = None))]
    fn from_toml(text: &str, name: &str, base_dir: Option<PathBuf>) -> PyResult<PyScenario> {
        let base_dir = base_dir.unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
        parse(name, text, &base_dir)
    }

    /// A new scenario with keys set, by their dotted paths, as `--set` does:
    /// `sc.set({"serving.arrivals.rate_per_s": 80.0, "node_classes[0].count": 3})`.
    /// Setting a swept key pins it to the value.
    fn set(&self, values: &Bound<'_, PyDict>) -> PyResult<PyScenario> {
        let mut overrides = Vec::new();
        for (key, value) in values.iter() {
            let key: String = key.extract()?;
            overrides.push(format!("{key}={}", to_toml(&key, &value)?));
        }
        let mut inner = self.inner.clone();
        inner.apply_overrides(&overrides).map_err(|e| from_scenario(&e))?;
        Ok(PyScenario { inner })
    }

    /// A new scenario that sweeps keys over lists of values, as a `[sweep]` table
    /// does: `sc.sweep({"serving.engine.max_num_seqs": [64, 128, 256]})`. Keys
    /// already swept take the new values; the points are the grid of all swept keys.
    fn sweep(&self, values: &Bound<'_, PyDict>) -> PyResult<PyScenario> {
        let mut entries = Vec::new();
        for (key, value) in values.iter() {
            let key: String = key.extract()?;
            let value = to_toml(&key, &value)?;
            entries.push((key, value));
        }
        let mut inner = self.inner.clone();
        inner.sweep_over(entries).map_err(|e| from_scenario(&e))?;
        Ok(PyScenario { inner })
    }

    /// The value of a dotted key, or None when the scenario does not set it.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner.value_at(key).map(|v| to_python(py, v)).transpose()
    }

    /// The resolved scenario as TOML text (sweep included): what `infersim validate`
    /// prints and a batch's scenario.toml holds.
    fn to_toml(&self) -> String {
        self.inner.to_toml()
    }

    /// The built-in name or the file it came from.
    #[getter]
    fn name(&self) -> String {
        self.inner.source_name.clone()
    }

    /// The world it describes (`station`, `serving`, `retraining`, ...).
    #[getter]
    fn world(&self) -> &'static str {
        self.inner.world
    }

    /// Its one-line description.
    #[getter]
    fn description(&self) -> String {
        self.inner.description.clone()
    }

    /// The swept keys, in the order of the points' parameters.
    #[getter]
    fn sweep_keys(&self) -> Vec<String> {
        self.inner.sweep_keys()
    }

    /// How many points it has (1 without a sweep).
    #[getter]
    fn points(&self) -> u32 {
        self.inner.point_count()
    }

    /// Replications per point unless `run` says otherwise.
    #[getter]
    fn replications(&self) -> u64 {
        self.inner.replications
    }

    /// Master seed unless `run` says otherwise.
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Warnings infersim prints before running it.
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    fn __repr__(&self) -> String {
        let sweep = match self.inner.point_count() {
            1 => String::new(),
            n => format!(", {n} points"),
        };
        format!("<infersim.Scenario {:?} ({} world{sweep})>", self.inner.source_name, self.inner.world)
    }

    fn __str__(&self) -> String {
        self.inner.to_toml()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyScenario>().is_ok_and(|o| o.get().inner.to_toml() == self.inner.to_toml())
    }
}

fn parse(name: &str, text: &str, base_dir: &Path) -> PyResult<PyScenario> {
    Core::parse_with(&registry(), name, text, base_dir).map(|inner| PyScenario { inner }).map_err(|e| from_scenario(&e))
}

/// A scenario argument: a `Scenario`, or anything `Scenario(...)` takes.
pub fn scenario_of(value: &Bound<'_, PyAny>) -> PyResult<Core> {
    match value.cast::<PyScenario>() {
        Ok(s) => Ok(s.get().inner.clone()),
        Err(_) => Ok(PyScenario::new(value)?.inner),
    }
}
