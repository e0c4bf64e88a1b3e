"""Where fleet-miners' validator sends its requests over the day: the tokens each class
of miners generates per second, one panel per router: the README's chart.

Runs the built-in through the Python package (install it first: pip install ./python),
one replication, timeseries traced (every 10 minutes); writes
docs/img/fleet-miners-classes.png.

    python scripts/plot-fleet-miners.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

import infersim

ROOT = Path(__file__).resolve().parent.parent
ROUTERS = ["decayed_score", "least_processed", "round_robin"]
CLASSES = ["fast_good", "slow_good", "fast_poor", "flaky"]

scenario = infersim.Scenario("fleet-miners").set({"simulation.sample_interval_s": 600.0})
batch = infersim.run(scenario, reps=1, seed=19, trace="timeseries", progress=False)
fig, axes = plt.subplots(1, len(ROUTERS), figsize=(11, 3.4), sharey=True)
for point, (router, ax) in enumerate(zip(ROUTERS, axes)):
    series = pl.read_parquet(batch.out / "traces" / f"point={point}" / "rep=0" / "timeseries.parquet")
    for name in CLASSES:
        part = series.filter(pl.col("part") == name)
        ax.plot(part["t_h"], part["generation_tokens_per_s"], label=name, linewidth=1.1)
    ax.set_title(router, fontsize=10)
    ax.set_xlabel("hour")
axes[0].set_ylabel("output tokens/s generated")
axes[0].legend(fontsize=8, loc="upper right")
fig.suptitle("fleet-miners: which miners answer, by router (one replication)", fontsize=11)
fig.tight_layout()
out = ROOT / "docs" / "img" / "fleet-miners-classes.png"
fig.savefig(out, dpi=110)
print(out)
