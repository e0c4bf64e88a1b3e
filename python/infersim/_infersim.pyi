"""Type stubs of the extension module behind the `infersim` package."""

from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

class ScenarioError(ValueError):
    """Bad input: the command line's message; nothing was written."""

    key: str | None
    """The dotted key at fault (or the data file a scenario names), if any."""
    allowed: str | None
    """What the key allows: a range, the choices, or the table's keys."""

class RunError(RuntimeError):
    """A run that failed although its input was good."""

class ArrowTable:
    """An Arrow table (Arrow PyCapsule stream protocol): pass it to polars.DataFrame
    or pyarrow.table."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    @property
    def num_rows(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...

class Scenario:
    """A validated scenario: a built-in's name or a TOML file's path, or a dict of
    its tables. `set` and `sweep` return new scenarios.

    >>> sc = Scenario("mmc").set({"station.servers": 3})
    """

    def __init__(self, source: str | PathLike[str] | Mapping[str, Any]) -> None: ...
    @staticmethod
    def from_toml(text: str, name: str = "<string>", base_dir: str | PathLike[str] | None = None) -> Scenario:
        """A scenario from TOML text; relative paths in it are read from base_dir."""
    def set(self, values: Mapping[str, Any]) -> Scenario:
        """Keys set by their dotted paths, as `--set`: {"serving.arrivals.rate_per_s": 80.0}."""
    def sweep(self, values: Mapping[str, list[Any]]) -> Scenario:
        """Keys swept over lists of values, as a [sweep] table."""
    def get(self, key: str) -> Any:
        """The value of a dotted key, or None."""
    def to_toml(self) -> str:
        """The resolved scenario as TOML, sweep included."""
    def warnings(self) -> list[str]:
        """What infersim warns about before running it."""
    @property
    def name(self) -> str:
        """The built-in name or the file it came from."""
    @property
    def world(self) -> str:
        """The world it describes."""
    @property
    def description(self) -> str:
        """Its one-line description."""
    @property
    def sweep_keys(self) -> list[str]:
        """The swept keys, in the order of the points' parameters."""
    @property
    def points(self) -> int:
        """How many points (1 without a sweep)."""
    @property
    def replications(self) -> int:
        """Replications per point unless run() says otherwise."""
    @property
    def seed(self) -> int:
        """Master seed unless run() says otherwise."""

def scenarios() -> ArrowTable: ...
def default_scenario() -> str | None: ...
def run_batch(
    scenario: Scenario | str | PathLike[str] | Mapping[str, Any],
    out: str | PathLike[str],
    reps: int | None = None,
    seed: int | None = None,
    threads: int | None = None,
    trace: str | None = None,
    confidence: float = 0.95,
    resume: bool = False,
    progress: Callable[[int, int], Any] | None = None,
) -> str: ...
def read_parquet(path: str | PathLike[str]) -> ArrowTable: ...
def compare(base: str | PathLike[str], candidate: str | PathLike[str], confidence: float = 0.95) -> ArrowTable: ...
def correspond(out: str | PathLike[str], observed: str, confidence: float = 0.95) -> ArrowTable: ...
def calibrate(
    scenario: Scenario | str | PathLike[str] | Mapping[str, Any],
    observed: list[str],
    params: list[str],
    out: str | PathLike[str],
    log: list[str] = ...,
    target: list[str] = ...,
    distribution: list[str] = ...,
    series: list[str] = ...,
    reps: int = 3,
    seed: int | None = None,
    budget: int = 60,
    interval_reps: int = 40,
    confidence: float = 0.9,
    resume: bool = False,
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[bool, ArrowTable]: ...
def cli(argv: list[str]) -> int: ...
def version() -> str: ...
