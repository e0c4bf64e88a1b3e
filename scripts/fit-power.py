"""Fits the GPU power model's shares to ML.ENERGY v3, in the simulator itself.

Where POWER_SHARES in agents/src/llm/catalog.rs comes from. Run from the
repository's root with the Python package installed (`pip install ./python`, plus
numpy and scipy):

    python3 scripts/fit-power.py

A GPU's power during a step is

    static_w + (compute_w x compute_s + memory_w x memory_s + link_w x link_s) / step_s

where compute_s is the step's FLOPs at the GPU's peak, memory_s its weight and KV
traffic at the bandwidths the roofline's kernels reach, link_s its all-reduces, and
step_s its whole time, host included (agents/src/llm/mod.rs). A run's mean GPU power
is therefore linear in (static_w, compute_w, memory_w, link_w, idle_w): the script
runs each configuration once per coefficient, that coefficient at 1 W and the others
at 0 (a board limit too high to bind), which gives each configuration's response to
each coefficient with the simulator's own steps (batch, prefills, KV lengths, host
time). The measured per-GPU power is then fitted with compute_w, memory_w and
link_w as shares of the board limit, the same for every GPU, and static_w as a share
of it per GPU (H100, B200); idle_w stays the catalogue's. The loss is robust (soft L1
on the relative error, scale 5%), and the configurations named as measurement
anomalies (data/ml-energy-anomalies.csv, with their evidence) are left out.

Every configuration runs as the simulator's own test does: the closed-loop scenario
at a steady state (endless requests, 600 s), each configuration's model, GPU, GPU
count, max_num_seqs and mean output length.
"""

import csv
import glob
import json
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

import infersim

ROOT = Path(__file__).resolve().parents[1]
NAMES = {
    "meta-llama/Llama-3.1-8B-Instruct": "Llama-3.1-8B",
    "Qwen/Qwen3-8B": "Qwen3-8B",
    "Qwen/Qwen3-14B": "Qwen3-14B",
    "Qwen/Qwen3-32B": "Qwen3-32B",
}
TDP_W = {"H100": 700.0, "B200": 1000.0}
IDLE_W = {"H100": 75.0, "B200": 75.0 / 700.0 * 1000.0}
# The configurations the power fit leaves out, with their evidence:
# data/ml-energy-anomalies.csv.
ANOMALIES = {
    (NAMES[row["model_id"]], row["gpu"], int(row["max_num_seqs"]))
    for row in csv.DictReader(open(ROOT / "data/ml-energy-anomalies.csv"))
}
BASIS = ("static_w", "compute_w", "memory_w", "link_w", "idle_w")


def configurations():
    for path in sorted(glob.glob(str(ROOT / "data/llm-serving/energy/*.json"))):
        data = json.load(open(path))
        for c in data["configurations"]:
            yield NAMES[data["model_id"]], c


def simulate(model, c, gpu):
    """One configuration at a steady state: its replications row."""
    scenario = infersim.Scenario("closed-loop-h100").set(
        {
            "serving.model": model,
            "serving.gpu": gpu,
            "serving.tp": c["num_gpus"],
            "serving.engine.max_num_seqs": c["max_num_seqs"],
            "serving.tasks[0].output_tokens.mean": c["avg_output_len"],
            "serving.arrivals.requests": 1_000_000_000,
            "simulation.duration_s": 600.0,
        }
    )
    return infersim.run(scenario, reps=1, seed=42, threads=1, progress=False).replications.row(0, named=True)


def main():
    rows = []
    for model, c in configurations():
        gpu_name, tp = c["gpu_model"], c["num_gpus"]
        response = []
        for unit in BASIS:
            gpu = {"name": gpu_name, "tdp_w": 1e9, **{k: float(k == unit) for k in BASIS}}
            response.append(simulate(model, c, gpu)["gpu_power_mean_w"] / tp)
        rows.append(
            dict(
                model=model,
                gpu=gpu_name,
                tp=tp,
                seqs=c["max_num_seqs"],
                response=np.array(response),
                power_w=c["avg_power_watts"] / tp,
                anomaly=(model, gpu_name, c["max_num_seqs"]) in ANOMALIES,
            )
        )
    U = np.array([r["response"] for r in rows])
    tdp = np.array([TDP_W[r["gpu"]] for r in rows])
    idle = np.array([IDLE_W[r["gpu"]] for r in rows])
    b200 = np.array([r["gpu"] == "B200" for r in rows], dtype=float)
    measured = np.array([r["power_w"] for r in rows])
    regular = ~np.array([r["anomaly"] for r in rows])

    def predict(k):
        compute, memory, link, h100_static, b200_static = k
        static = np.where(b200 > 0, b200_static, h100_static) * tdp
        return static * U[:, 0] + (compute * U[:, 1] + memory * U[:, 2] + link * U[:, 3]) * tdp + idle * U[:, 4]

    fit = least_squares(
        lambda k: np.where(regular, predict(k) / measured - 1, 0.0),
        x0=[1.0, 0.5, 0.3, 0.14, 0.3],
        bounds=([0, 0, 0, 0, 0], [5, 5, 5, 1, 1]),
        loss="soft_l1",
        f_scale=0.05,
    )
    compute, memory, link, h100_static, b200_static = fit.x
    print(
        f"shares of the board limit: compute {compute:.3f}, memory {memory:.3f}, link {link:.3f}; "
        f"static: H100 {h100_static:.3f}, B200 {b200_static:.3f}"
    )
    error = (predict(fit.x) / measured - 1) * 100
    print(f"median |power error| {np.median(np.abs(error[regular])):.1f}% over {regular.sum()} configurations")
    for r, e in zip(rows, error):
        mark = " (anomaly)" if r["anomaly"] else ""
        if abs(e) > 10:
            print(f"  beyond 10%: {r['model']} {r['gpu']} x{r['tp']} max_num_seqs {r['seqs']}: {e:+.1f}%{mark}")


if __name__ == "__main__":
    main()
