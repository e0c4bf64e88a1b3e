"""fleet-adaptation's controller over the day: the load, and the GPUs each variant
holds under the accuracy-only (ipa) and the energy-aware controller: the README's
chart.

Runs the built-in through the Python package (install it first: pip install ./python),
one replication, timeseries traced; writes docs/img/fleet-adaptation-gpus.png.

    python scripts/plot-fleet-adaptation.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

import infersim

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ["ipa", "energy_aware"]
POOLS = {"llama-8b": 1, "llama-70b": 4}  # GPUs per replica

scenario = infersim.Scenario("fleet-adaptation").sweep({"serving.adaptation.policy": POLICIES})
batch = infersim.run(scenario, reps=1, seed=7, trace="timeseries", progress=False)
fig, axes = plt.subplots(1, len(POLICIES), figsize=(10, 3.4), sharey=True)
for point, (policy, ax) in enumerate(zip(POLICIES, axes)):
    series = pl.read_parquet(batch.out / "traces" / f"point={point}" / "rep=0" / "timeseries.parquet")
    for pool, tp in POOLS.items():
        part = series.filter(pl.col("part") == pool)
        ax.step(part["t_h"], part["replicas"] * tp, where="post", label=f"{pool} GPUs", linewidth=1.2)
    fleet = series.filter(pl.col("part").is_null())
    load = ax.twinx()
    load.plot(fleet["t_h"], fleet["generation_tokens_per_s"], color="grey", alpha=0.5, linewidth=0.8)
    load.set_ylabel("output tokens/s" if point == len(POLICIES) - 1 else "")
    ax.set_title(policy, fontsize=10)
    ax.set_xlabel("hour")
axes[0].set_ylabel("GPUs provisioned")
axes[0].legend(fontsize=8, loc="upper left")
fig.suptitle("fleet-adaptation: which variant holds the GPUs (grey: tokens/s served)", fontsize=11)
fig.tight_layout()
out = ROOT / "docs" / "img" / "fleet-adaptation-gpus.png"
fig.savefig(out, dpi=110)
print(out)
