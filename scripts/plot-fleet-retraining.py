"""The loss of fleet-retraining's drifting model over its month, one line per monitor
policy (retraining on the dedicated pool), with the monitor's band: the README's chart.

Runs the built-in through the Python package (install it first: pip install ./python),
one replication, timeseries traced; writes docs/img/fleet-retraining-loss.png.

    python scripts/plot-fleet-retraining.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

import infersim

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ["none", "hysteresis", "periodic", "carbon_aware"]

scenario = infersim.Scenario("fleet-retraining").sweep({"serving.monitor.policy": POLICIES, "serving.training.pool": ["dedicated"]})
batch = infersim.run(scenario, reps=1, seed=42, trace="timeseries", progress=False)
fig, ax = plt.subplots(figsize=(8, 3.6))
for point, policy in enumerate(POLICIES):
    series = pl.read_parquet(batch.out / "traces" / f"point={point}" / "rep=0" / "timeseries.parquet")
    series = series.filter(pl.col("part").is_null()) if "part" in series.columns else series
    ax.plot(series["t_h"] / 24.0, series["loss"], label=policy, linewidth=1.2)
ax.axhspan(1.9, 2.0, color="grey", alpha=0.15, label="band [1.9, 2.0]")
ax.set_xlabel("day")
ax.set_ylabel("loss of the served model")
ax.set_title("fleet-retraining: the loss under each monitor policy (dedicated training pool)")
ax.legend(loc="upper left", fontsize=8)
fig.tight_layout()
out = ROOT / "docs" / "img" / "fleet-retraining-loss.png"
fig.savefig(out, dpi=110)
print(out)
