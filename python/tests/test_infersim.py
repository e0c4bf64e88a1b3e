"""The infersim package as a notebook user drives it: every function, its errors,
Ctrl-C, the GIL, and equality with the command line."""

from __future__ import annotations

import _thread
import json
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import infersim

# A measured vLLM run built into the package, as into the binary.
OBSERVED = "llm-serving/vllm/RTXPRO6000-Llama-3.1-8B/requests.jsonl"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command line of the installed package (`python -m infersim`)."""
    return subprocess.run([sys.executable, "-m", "infersim", *args], capture_output=True, text=True, cwd=cwd)


def test_scenarios_lists_the_builtins_default_first():
    table = infersim.scenarios()
    assert table.columns == ["name", "world", "description"]
    names = table["name"].to_list()
    assert {"mmc", "llm-serving", "bloom-sd", "nineteen-contenders", "ipa-video"} <= set(names)
    listed = cli("list").stdout.splitlines()
    assert [line.split()[0] for line in listed] == names
    assert table.filter(name="mmc")["world"].item() == "station"


def test_a_scenario_from_a_name_a_path_text_and_a_dict_is_the_same(tmp_path):
    by_name = infersim.Scenario("mmc")
    path = tmp_path / "mmc.toml"
    path.write_text(by_name.to_toml())
    by_path = infersim.Scenario(path)
    by_text = infersim.Scenario.from_toml(by_name.to_toml())
    by_dict = infersim.Scenario(tomllib.loads(by_name.to_toml()))
    assert by_name == by_path == by_text == by_dict
    assert by_name.world == "station" and by_name.points == 1
    assert by_name.get("station.servers") == 4
    assert by_name.get("station.no_such_key") is None
    assert "M/M/c" in by_name.description


def test_set_returns_a_new_scenario_and_keeps_the_old():
    base = infersim.Scenario("mmc")
    more = base.set({"station.servers": 5, "station.arrival_rate_per_s": 4.0})
    assert more.get("station.servers") == 5 and more.get("station.arrival_rate_per_s") == 4.0
    assert base.get("station.servers") == 4
    validated = cli("validate", "mmc", "--set", "station.servers=5", "--set", "station.arrival_rate_per_s=4.0")
    assert validated.stdout.strip() == more.to_toml().strip()


def test_run_gives_the_same_replications_as_the_command_line(tmp_path):
    done = cli("run", "mmc", "--reps", "3", "--seed", "7", "--out", str(tmp_path / "cli"), "--quiet")
    assert done.returncode == 0, done.stderr
    batch = infersim.run("mmc", reps=3, seed=7, out=tmp_path / "py", progress=False, threads=1)
    assert (tmp_path / "cli" / "replications.parquet").read_bytes() == (
        tmp_path / "py" / "replications.parquet"
    ).read_bytes()
    assert_frame_equal(batch.replications, pl.read_parquet(tmp_path / "cli" / "replications.parquet"))
    assert_frame_equal(batch.summary, pl.read_parquet(tmp_path / "cli" / "summary.parquet"))
    assert batch.replications.height == 3
    assert batch.manifest["seed"] == 7 and batch.manifest["status"] == "complete"


def test_a_sweep_runs_every_point_in_the_order_a_sweep_table_gives(tmp_path):
    swept = infersim.Scenario("mmc").sweep({"station.servers": [4, 5], "station.arrival_rate_per_s": [3.0, 3.5]})
    assert swept.points == 4
    assert swept.sweep_keys == ["station.arrival_rate_per_s", "station.servers"]
    text = infersim.Scenario("mmc").to_toml() + (
        "\n[sweep]\n'station.servers' = [4, 5]\n'station.arrival_rate_per_s' = [3.0, 3.5]\n"
    )
    assert infersim.Scenario.from_toml(text) == swept
    batch = infersim.run(swept, reps=2, seed=1, progress=False)
    assert batch.replications.height == 8
    wait = batch.summary.filter(metric="wait_s").sort("point")
    assert wait.height == 4
    # More servers at the same load wait less: the sweep reached the model.
    by_point = dict(zip(wait["point"].to_list(), wait["mean"].to_list(), strict=True))
    assert by_point[1] < by_point[0] and by_point[3] < by_point[2]
    # Sweeping a key again replaces its values.
    assert swept.sweep({"station.servers": [6]}).points == 2


def test_traces_are_lazy_frames_over_every_replication():
    batch = infersim.run("mmc", reps=2, seed=3, trace="requests", progress=False)
    requests = batch.requests()
    assert isinstance(requests, pl.LazyFrame)
    frame = requests.collect()
    assert set(frame["rep"].unique().to_list()) == {0, 1}
    assert {"arrival_s", "finish_s", "outcome"} <= set(frame.columns)
    assert batch.timeseries().collect()["t_h"].min() >= 0
    untraced = infersim.run("mmc", reps=1, seed=3, progress=False)
    with pytest.raises(infersim.ScenarioError, match="trace='requests'"):
        untraced.requests()


def test_compare_pairs_replications_and_finds_the_effect():
    base = infersim.run("mmc", reps=5, seed=3, progress=False)
    candidate = infersim.run(infersim.Scenario("mmc").set({"station.servers": 5}), reps=5, seed=3, progress=False)
    table = infersim.compare(base, candidate)
    wait = table.filter(metric="wait_s").row(0, named=True)
    assert wait["pairs"] == 5 and wait["significant"]
    assert wait["ci_high"] < 0 < wait["base_mean"]
    assert wait["relative_change"] == pytest.approx((wait["candidate_mean"] - wait["base_mean"]) / wait["base_mean"])
    same = infersim.compare(base, base.out)
    assert not same["significant"].any()


def test_compare_of_sweeps_carries_the_swept_keys():
    swept = infersim.Scenario("mmc").sweep({"station.servers": [4, 5]})
    a = infersim.run(swept, reps=2, seed=1, progress=False)
    b = infersim.run(swept.set({"station.arrival_rate_per_s": 3.0}), reps=2, seed=1, progress=False)
    table = infersim.compare(a, b)
    assert table.columns[:3] == ["point", "station_servers", "metric"]
    servers = table.select("point", "station_servers").unique().sort("point")
    assert servers.rows() == [(0, 4), (1, 5)]


def test_correspond_and_calibrate_on_a_measured_run(tmp_path):
    batch = infersim.run("vllm-replay", reps=1, progress=False)
    table = infersim.correspond(batch, OBSERVED)
    row = table.filter(metric="ttft_mean_s").row(0, named=True)
    assert row["observed"] == pytest.approx(7.097157, rel=1e-5)
    assert row["relative_error"] == pytest.approx((row["simulated_mean"] - row["observed"]) / row["observed"])
    assert (batch.out / "correspondence.csv").is_file()

    seen = []
    fit = infersim.calibrate(
        "vllm-replay",
        OBSERVED,
        {"serving.engine.step_overhead_s": (0.0, 0.01)},
        target=["ttft_mean_s", "tpot_mean_s"],
        reps=1,
        budget=10,
        out=tmp_path / "fit",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert fit.fitted["param"].to_list() == ["serving.engine.step_overhead_s"]
    value = fit.fitted["value"].item()
    assert 0.0 <= value <= 0.01
    assert fit.scenario.get("serving.engine.step_overhead_s") == pytest.approx(value)
    assert 1 <= fit.evaluations.height <= 10
    assert seen and seen[-1][1] == 10
    assert (tmp_path / "fit" / "fitted.csv").is_file()


def test_bad_input_raises_scenario_error_with_the_key_and_what_it_allows(tmp_path):
    with pytest.raises(infersim.ScenarioError) as bad_value:
        infersim.Scenario("mmc").set({"station.servers": 0})
    assert isinstance(bad_value.value, ValueError)
    assert bad_value.value.key == "station.servers"
    assert "1 to" in bad_value.value.allowed
    # The same message as the command line's.
    said = cli("validate", "mmc", "--set", "station.servers=0")
    assert said.returncode == 2
    assert str(bad_value.value) in said.stderr

    with pytest.raises(infersim.ScenarioError) as typo:
        infersim.Scenario("mmc").set({"station.servres": 5})
    assert typo.value.key == "station.servres"
    assert "station.servers" in typo.value.allowed and "did you mean" in str(typo.value)

    with pytest.raises(infersim.ScenarioError, match="no scenario named"):
        infersim.Scenario("no-such-scenario")
    with pytest.raises(infersim.ScenarioError, match="trace"):
        infersim.run("mmc", reps=1, trace="everything", progress=False)
    with pytest.raises(infersim.ScenarioError, match="empty"):
        infersim.Scenario("mmc").sweep({"station.servers": []})
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("not a batch")
    with pytest.raises(infersim.ScenarioError, match="not empty"):
        infersim.run("mmc", reps=1, out=occupied, progress=False)
    assert sorted(p.name for p in occupied.iterdir()) == ["mine.txt"]
    with pytest.raises(TypeError):
        infersim.Scenario("mmc").set({"station.servers": object()})
    with pytest.raises(TypeError, match="built-in scenario's name, a path"):
        infersim.Scenario(42)
    with pytest.raises(TypeError, match="expected \\(low, high\\)"):
        infersim.calibrate("mmc", OBSERVED, {"station.servers": 3}, target="wait_s", progress=False)


def test_a_file_that_cannot_be_read_back_raises_run_error(tmp_path):
    batch = infersim.run("mmc", reps=1, seed=1, out=tmp_path / "b", progress=False)
    (tmp_path / "b" / "replications.parquet").write_bytes(b"not parquet")
    with pytest.raises(infersim.RunError, match="replications.parquet"):
        _ = batch.replications


def test_ctrl_c_raises_keyboard_interrupt_and_keeps_what_finished(tmp_path):
    out = tmp_path / "interrupted"

    def interrupt_after_the_first(done: int, total: int) -> None:
        # What Ctrl-C does: Python's own SIGINT handler, seen by the simulation's poll.
        if done >= 1:
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        infersim.run("mmc", reps=400, seed=5, threads=1, out=out, progress=interrupt_after_the_first)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert 1 <= manifest["completed"] < 400
    resumed = infersim.run("mmc", reps=400, seed=5, threads=2, out=out, resume=True, progress=False)
    assert resumed.manifest["status"] == "complete"
    whole = infersim.run("mmc", reps=400, seed=5, progress=False)
    assert_frame_equal(resumed.replications, whole.replications)


def test_other_threads_run_while_it_simulates():
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    seen_during_run = []
    counter.start()
    try:
        # The callback runs on the calling thread between polls: if the GIL were
        # held during the simulation, the counter could not move between two calls.
        infersim.run("mmc", reps=200, seed=2, threads=1, progress=lambda d, t: seen_during_run.append(ticks))
    finally:
        stop.set()
        counter.join()
    assert len(seen_during_run) >= 3
    assert seen_during_run[-1] > seen_during_run[0]


def test_progress_reaches_the_total():
    seen = []
    infersim.run("mmc", reps=6, seed=1, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_to_pandas_and_a_temporary_directory_that_goes_with_the_batch():
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    batch = infersim.run("mmc", reps=2, seed=1, progress=False)
    frame = batch.to_pandas()
    assert list(frame["replication"]) == [0, 1]
    out = batch.out
    assert out.is_dir()
    del batch
    import gc

    gc.collect()
    assert not out.exists()


def test_the_command_line_ships_with_the_package(tmp_path):
    assert cli("run", "--help").returncode == 0
    missing = cli("validate", "no-such-scenario")
    assert missing.returncode == 2 and "no scenario named" in missing.stderr
    assert cli("--version").stdout.strip().endswith(infersim.__version__)


def test_a_fleet_of_pools_and_models_has_their_tables(tmp_path):
    scenario = infersim.Scenario("hetero-fleet").set({"simulation.duration_h": 0.2, "simulation.warmup_s": 30})
    batch = infersim.run(scenario, reps=1, out=tmp_path / "fleet")
    pools, models = batch.pools, batch.models
    assert pools is not None and models is not None
    assert set(pools["pool"]) == {"chat-h100", "code-a100"}
    assert set(models["model"]) == {"Llama-3.1-8B", "Llama-3.1-70B"}
    fleet = batch.replications.group_by("point").agg(pl.col("served").sum()).sort("point")
    by_pool = pools.group_by("point").agg(pl.col("served").sum()).sort("point")
    assert fleet["served"].to_list() == by_pool["served"].to_list()
    # compare(by=) pairs each part's replications, as `compare --by`.
    table = infersim.compare(batch, batch, by="pool")
    assert table.columns == ["point", "serving_pools[1]_autoscale_target", "pool", *table.columns[3:]]
    assert set(table["pool"]) == {"chat-h100", "code-a100"}
    served = table.filter(point=0, pool="code-a100", metric="served").row(0, named=True)
    assert served["base_mean"] == pools.filter(point=0, pool="code-a100")["served"][0] and served["difference"] == 0
    with pytest.raises(infersim.ScenarioError, match="no gpus.parquet"):
        infersim.compare(batch, batch, by="gpu")
    assert infersim.run("mmc", reps=1).pools is None


def test_correspond_by_pool_compares_each_pool(tmp_path):
    scenario = infersim.Scenario("hetero-fleet").set({"simulation.duration_h": 0.05, "simulation.warmup_s": 10})
    batch = infersim.run(scenario, reps=2, trace="requests", out=tmp_path / "fleet", progress=False)
    observed = batch.out / "traces" / "point=0" / "rep=0" / "requests.parquet"
    table = infersim.correspond(batch, observed, by="pool")
    assert table.columns[0] == "pool"
    assert set(table["pool"]) == {"chat-h100", "code-a100"}
    requests = pl.read_parquet(observed).filter(pool="code-a100", warmup=False)
    row = table.filter(pool="code-a100", metric="ttft_mean_s").row(0, named=True)
    assert row["observed"] == pytest.approx(requests["ttft_s"].mean(), rel=1e-9)
