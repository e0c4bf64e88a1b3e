"""infersim: discrete-event simulation of AI inference fleets, from Python.

The same engine and the same results as the ``infersim`` command, returned as polars
DataFrames. Run a built-in scenario, change it, sweep it, compare and calibrate::

    >>> import infersim
    >>> sc = infersim.Scenario("llm-serving").set({"serving.arrivals.rate_per_s": 4.0})
    >>> batch = infersim.run(sc.sweep({"serving.engine.max_num_seqs": [64, 256]}), reps=5, seed=1)
    >>> batch.summary.filter(metric="ttft_p99_s")          # doctest: +SKIP

Functions: :func:`scenarios`, :func:`run`, :func:`compare`, :func:`correspond`,
:func:`calibrate`; classes :class:`Scenario`, :class:`Batch`, :class:`Fit`; errors
:class:`ScenarioError` (bad input, a ``ValueError``) and :class:`RunError`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import polars as pl

from . import _infersim
from ._infersim import RunError, Scenario, ScenarioError

__version__: str = _infersim.version()

# An error raised from Python (as Batch.open does) has no key: the class says None.
ScenarioError.key = None
ScenarioError.allowed = None

__all__ = [
    "Batch",
    "Fit",
    "RunError",
    "Scenario",
    "ScenarioError",
    "calibrate",
    "compare",
    "correspond",
    "main",
    "run",
    "scenarios",
]

ScenarioLike = Scenario | str | os.PathLike | Mapping[str, Any]
"""What functions take as a scenario: a Scenario, a built-in's name, a path or a dict."""

Progress = bool | Callable[[int, int], Any]
"""True for a progress bar (tqdm's when installed), False for none, or a function
called with (done, total)."""


def scenarios() -> pl.DataFrame:
    """The built-in scenarios, as ``infersim list``: name, world, description (the
    default first).

    >>> infersim.scenarios().filter(world="serving")["name"].to_list()  # doctest: +SKIP
    """
    return pl.DataFrame(_infersim.scenarios())


def _scenario(scenario: ScenarioLike | None) -> Scenario:
    if scenario is None:
        return Scenario(_infersim.default_scenario())
    if isinstance(scenario, Scenario):
        return scenario
    return Scenario(scenario)


class _Bar:
    """A progress bar: tqdm's (tqdm.auto draws a widget in notebooks) when tqdm is
    installed, else a line on sys.stderr (which notebooks show, unlike the process's
    own stderr)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.bar: Any = None
        self.text_shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.bar = False
            else:
                self.bar = tqdm(total=total, unit=self.unit, desc="infersim")
        if self.bar is False:
            sys.stderr.write(f"\rinfersim: {done}/{total} {self.unit}")
            sys.stderr.flush()
            self.text_shown = True
        else:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        elif self.text_shown:
            sys.stderr.write("\n")


def _progress(progress: Progress, unit: str) -> tuple[Callable[[int, int], Any] | None, Callable[[], None]]:
    if progress is True:
        bar = _Bar(unit)
        return bar, bar.close
    if progress is False or progress is None:
        return None, lambda: None
    if callable(progress):
        return progress, lambda: None
    raise TypeError(f"progress={progress!r}: expected True, False or a function of (done, total)")


def _into(
    out: str | os.PathLike | None,
    resume: bool,
    what: str,
    unit: str,
    progress: Progress,
    call: Callable[[str, Callable[[int, int], Any] | None], Any],
) -> tuple[Path, str | None, Any]:
    """Runs ``call(directory, progress_callback)`` into ``out``, or into a new
    temporary directory (returned, for the result to remove when it goes) that a
    failure or Ctrl-C removes at once."""
    temporary = None
    if out is None:
        if resume:
            raise ScenarioError(f"resume=True needs out=: the directory of the {what} to continue")
        temporary = tempfile.mkdtemp(prefix=f"infersim-{what}-")
        path = Path(temporary) / what
    else:
        path = Path(out)
    callback, close = _progress(progress, unit)
    try:
        result = call(str(path), callback)
    except BaseException:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        close()
    return path, temporary, result


def _read(path: Path) -> pl.DataFrame:
    return pl.DataFrame(_infersim.read_parquet(str(path)))


class Batch:
    """A finished Monte Carlo batch: its output directory and what it holds.

    ``replications`` and ``summary`` are polars DataFrames with the values of
    replications.parquet and summary.parquet (and, for fleets, ``pools`` and
    ``models`` those of pools.parquet and models.parquet); ``requests()`` and ``timeseries()``
    scan the traces lazily. A batch run without ``out=`` lives in a temporary
    directory that is removed when the Batch is garbage-collected: keep the Batch
    while you use frames scanned from it, or pass ``out=`` to keep the files.
    """

    def __init__(self, out: str | os.PathLike, scenario: Scenario | None = None, _temporary: str | None = None):
        self.out = Path(out)
        """The output directory (as ``infersim run --out``)."""
        manifest_path = self.out / "manifest.json"
        if not manifest_path.is_file():
            raise ScenarioError(f"{self.out}: not an infersim output (no manifest.json)")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        """manifest.json: tool version, resolved scenario, seeds, points, replications done."""
        self.scenario: Scenario = scenario or Scenario.from_toml(self.manifest["scenario_toml"], name=self.manifest["scenario"])
        """The scenario it ran."""
        self._cleanup = weakref.finalize(self, shutil.rmtree, _temporary, True) if _temporary else None

    @classmethod
    def open(cls, out: str | os.PathLike) -> Batch:
        """A batch written earlier (by ``run(..., out=)`` or the ``infersim`` command).

        >>> b = infersim.Batch.open("out/mmc")  # doctest: +SKIP
        """
        return cls(out)

    @cached_property
    def replications(self) -> pl.DataFrame:
        """A row per (point, replication): point, replication, seed, the swept keys and
        every per-run metric."""
        return _read(self.out / "replications.parquet")

    @cached_property
    def summary(self) -> pl.DataFrame:
        """A row per (point, metric): the swept keys, metric, n, mean, std, ci_low,
        ci_high, confidence."""
        return _read(self.out / "summary.parquet")

    @cached_property
    def pools(self) -> pl.DataFrame | None:
        """Fleets of several pools: a row per (point, replication, pool) with the
        fleet's metrics for that pool (pools.parquet); None otherwise."""
        path = self.out / "pools.parquet"
        return _read(path) if path.is_file() else None

    @cached_property
    def models(self) -> pl.DataFrame | None:
        """Fleets serving several models: a row per (point, replication, model)
        (models.parquet); None otherwise."""
        path = self.out / "models.parquet"
        return _read(path) if path.is_file() else None

    @property
    def metrics(self) -> list[str]:
        """The per-run metrics, in the order of replications.parquet."""
        return list(self.manifest["metrics"])

    def _traces(self, name: str, level: str) -> pl.LazyFrame:
        files = sorted(self.out.glob(f"traces/point=*/rep=*/{name}.parquet"))
        if not files:
            raise ScenarioError(
                f"{self.out}: no {name} traces: run with trace={level!r} (this batch has trace={self.manifest.get('trace', 'summary')!r})"
            )
        return pl.scan_parquet(files, hive_partitioning=True)

    def requests(self) -> pl.LazyFrame:
        """One row per request of every replication (run with ``trace="requests"``),
        with ``point`` and ``rep`` columns from the trace directories."""
        return self._traces("requests", "requests")

    def timeseries(self) -> pl.LazyFrame:
        """The sampled state of every replication (run with ``trace="timeseries"`` or
        ``"requests"``), with ``point`` and ``rep`` columns; t_h first."""
        return self._traces("timeseries", "timeseries")

    def to_pandas(self) -> Any:
        """The replications as a pandas DataFrame (needs pandas and pyarrow)."""
        return self.replications.to_pandas()

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"<infersim.Batch {m['scenario']!r}: {m.get('completed', '?')} replications"
            f" ({len(m.get('sweep_keys', [])) and 'swept, ' or ''}seed {m['seed']}) in {str(self.out)!r}>"
        )


def run(
    scenario: ScenarioLike | None = None,
    reps: int | None = None,
    seed: int | None = None,
    threads: int | None = None,
    out: str | os.PathLike | None = None,
    trace: Literal["summary", "timeseries", "requests"] | None = None,
    progress: Progress = True,
    confidence: float = 0.95,
    resume: bool = False,
) -> Batch:
    """Runs a Monte Carlo batch, as ``infersim run``: ``reps`` replications per point
    (default: the scenario's), master ``seed`` (default: the scenario's), on
    ``threads`` threads (default: all cores; results do not depend on it).

    ``out`` keeps the files there (it must be new or empty unless ``resume``);
    without it they go to a temporary directory. ``trace`` records sampled state
    ("timeseries") or also every request ("requests"). The GIL is released while the
    simulation runs. Ctrl-C raises KeyboardInterrupt; with ``out`` the finished
    replications are kept and ``resume=True`` completes the batch.

    >>> b = infersim.run("mmc", reps=3, seed=1, progress=False)
    >>> b.summary.filter(metric="sojourn_s")  # doctest: +SKIP
    """
    sc = _scenario(scenario)

    def call(path: str, callback: Callable[[int, int], Any] | None) -> None:
        _infersim.run_batch(
            sc,
            path,
            reps=reps,
            seed=seed,
            threads=threads,
            trace=trace,
            confidence=confidence,
            resume=resume,
            progress=callback,
        )

    path, temporary, _ = _into(out, resume, "batch", "replications", progress, call)
    return Batch(path, sc, _temporary=temporary)


def _dir(batch: Batch | str | os.PathLike) -> str:
    return str(batch.out if isinstance(batch, Batch) else Path(batch))


def _params(batch: Batch | str | os.PathLike) -> pl.DataFrame | None:
    """Per point, the swept keys' values (None without a sweep)."""
    b = batch if isinstance(batch, Batch) else Batch.open(batch)
    if not b.manifest.get("sweep_keys"):
        return None
    fixed = {"point", "replication", "seed", *b.metrics}
    columns = [c for c in b.replications.columns if c not in fixed]
    return b.replications.select("point", *columns).unique("point").sort("point")


def compare(
    base: Batch | str | os.PathLike,
    candidate: Batch | str | os.PathLike,
    confidence: float = 0.95,
    by: str | None = None,
) -> pl.DataFrame:
    """Pairs two batches by (point, replication), as ``infersim compare``: per point
    and metric the means, the mean difference candidate - base and its interval, the
    relative change and whether the interval excludes zero. With the same seed the
    pairs share their random numbers and the difference is precise. ``by="pool"`` or
    ``by="model"`` compares a fleet part by part (``compare --by``): a ``pool`` or
    ``model`` column names the part of each row.

    >>> infersim.compare(base, candidate).filter(significant=True)  # doctest: +SKIP
    >>> infersim.compare(base, candidate, by="pool")  # doctest: +SKIP
    """
    table = pl.DataFrame(_infersim.compare(_dir(base), _dir(candidate), confidence=confidence, by=by))
    params = _params(base)
    if params is not None:
        table = params.with_columns(pl.col("point").cast(pl.UInt64)).join(table, on="point", how="right")
        table = table.select("point", *[c for c in table.columns if c != "point"])
    return table


def correspond(
    batch: Batch | str | os.PathLike,
    observed: str | os.PathLike,
    confidence: float = 0.95,
    by: str | None = None,
) -> pl.DataFrame:
    """The sim-to-real table, as ``infersim correspond``: each observed metric beside
    the simulated mean, its interval, the relative error and whether the observed
    value lies within the replications (also written to correspondence.csv). With
    ``by="pool"`` (or ``"model"``) part by part: the observed file's column of that
    name groups its rows, and the table gains that column (written to
    correspondence_by_pool.csv, beside correspondence.csv).

    >>> infersim.correspond(batch, observed="run.jsonl")  # doctest: +SKIP
    """
    return pl.DataFrame(_infersim.correspond(_dir(batch), os.fspath(observed), confidence=confidence, by=by))


class Fit:
    """A calibration's result: ``scenario`` (the calibrated one, or the input when no
    parameter moved the objective), ``fitted`` (a row per parameter: value, bounds,
    interval), ``evaluations`` (every evaluation, as calibration.parquet) and ``out``."""

    def __init__(self, out: Path, scenario: Scenario, fitted: pl.DataFrame, _temporary: str | None = None):
        self.out = out
        self.scenario = scenario
        self.fitted = fitted
        self._cleanup = weakref.finalize(self, shutil.rmtree, _temporary, True) if _temporary else None

    @cached_property
    def evaluations(self) -> pl.DataFrame:
        """Every evaluation: the parameters' values, the objective and the errors."""
        return _read(self.out / "calibration.parquet")

    def __repr__(self) -> str:
        return f"<infersim.Fit of {self.scenario.name!r}: {self.fitted.height} parameter(s) in {str(self.out)!r}>"


def _names(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def calibrate(
    scenario: ScenarioLike,
    observed: str | os.PathLike | Iterable[str | os.PathLike],
    params: Mapping[str, tuple[float, float]],
    target: str | Iterable[str] | None = None,
    distribution: str | Iterable[str] | None = None,
    series: str | Iterable[str] | None = None,
    log: Iterable[str] = (),
    reps: int = 3,
    seed: int | None = None,
    budget: int = 60,
    interval_reps: int = 40,
    confidence: float = 0.9,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Progress = True,
) -> Fit:
    """Fits numeric keys of a scenario to measured files, as ``infersim calibrate``:
    ``params`` maps each key to its (low, high) bounds (keys in ``log`` are searched
    on a log scale); give exactly one of ``target`` (metrics, relative error),
    ``distribution`` (request columns, Kolmogorov-Smirnov) or ``series`` (time-series
    columns). ``budget`` caps the evaluations of ``reps`` replications each.

    >>> fit = infersim.calibrate("vllm-replay", observed="run.jsonl",
    ...     params={"serving.engine.step_overhead_s": (0, 0.01)},
    ...     target=["ttft_mean_s", "tpot_mean_s"])  # doctest: +SKIP
    >>> fit.fitted  # doctest: +SKIP
    """
    sc = _scenario(scenario)
    files = [os.fspath(observed)] if isinstance(observed, (str, os.PathLike)) else [os.fspath(o) for o in observed]
    param_args = []
    for key, bounds in params.items():
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise TypeError(f"params[{key!r}] = {bounds!r}: expected (low, high), two numbers") from None
        param_args.append(f"{key}={low!r}..{high!r}")

    def call(path: str, callback: Callable[[int, int], Any] | None) -> tuple[bool, Any]:
        return _infersim.calibrate(
            sc,
            files,
            param_args,
            path,
            log=list(log),
            target=_names(target),
            distribution=_names(distribution),
            series=_names(series),
            reps=reps,
            seed=seed,
            budget=budget,
            interval_reps=interval_reps,
            confidence=confidence,
            resume=resume,
            progress=callback,
        )

    path, temporary, (calibrated, fitted) = _into(out, resume, "calibration", "evaluations", progress, call)
    result = Scenario(path / "scenario.toml") if calibrated else sc
    return Fit(path, result, pl.DataFrame(fitted), _temporary=temporary)


def main() -> None:
    """The ``infersim`` command line (``python -m infersim``, or the ``infersim``
    script the package installs)."""
    sys.exit(_infersim.cli(["infersim", *sys.argv[1:]]))
