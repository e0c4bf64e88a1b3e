"""How close any per-step power model can come to ML.ENERGY v3: a lower bound.

Issue 26 asks for every configuration within 10% in GPU power (at most two named
measurement anomalies per file). This script shows that no set of coefficients can
give that, not only the fitted one: it takes the steady state of the closed loop in
closed form (scripts/fit-step-time.py, its step-time constants fitted again for
each prompt length tried; with the closed loop's 70-token prompts they are the
catalogue's) and a power model richer than the simulator's,

    static_w(GPU) + (compute_w x compute_s + weights_w x weights_s + kv_w x kv_s
                     + host_w x host_s + link_w x link_s) / step_s

(every coefficient a share of the board limit, the same for every GPU; static power
per GPU; weights and KV reads with powers of their own; the host's time per
sequence allowed to draw power too), and finds the coefficients that minimise the
largest relative error over the configurations, as a mixed-integer linear programme
that may also leave out up to two more configurations per file than the ones
data/ml-energy-anomalies.csv names as anomalies (each coefficient between 0 and 5 times the board
limit: none reaches 5, and 50 gives the same optimum). Its optimum is a lower bound on
the largest error of any model of this form on the closed form's steps, which stand in for the
simulator's closely enough (fitting the simulator's own model to them gives the
simulator fit's median error, 6.7%, and each file's mean error within 3.1 points).
Run from the repository's root:

    python3 scripts/power-bound.py      # needs numpy and scipy (>= 1.9, for milp)

It prints the bound for several mean prompt lengths (the closed loop uses 70 tokens;
ML.ENERGY's multi-turn prompts may be longer) and the configurations that set it.
"""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, least_squares, milp

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fit_step_time", ROOT / "scripts/fit-step-time.py")
steps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(steps)

TDP_W = {"H100": 700.0, "B200": 1000.0}
# The configurations left out as measurement anomalies, with their evidence:
# data/ml-energy-anomalies.csv (model names as fit-step-time.py gives them).
ANOMALIES = {
    (row["model_id"].split("/")[1], row["gpu"], int(row["max_num_seqs"]))
    for row in csv.DictReader(open(ROOT / "data/ml-energy-anomalies.csv"))
}
EXTRA_EXCLUSIONS_PER_FILE = 2


def measured_power():
    power = {}
    for path in sorted((ROOT / "data/llm-serving/energy").glob("*.json")):
        data = json.load(open(path))
        model = data["model_id"].split("/")[1]
        for c in data["configurations"]:
            power[(model, c["gpu_model"], c["num_gpus"], c["max_num_seqs"])] = c["avg_power_watts"] / c["num_gpus"]
    return power


def step_constants(rows):
    """The step-time constants fitted to these steps' ITLs as scripts/fit-step-time.py
    fits them (with the closed loop's prompts, the catalogue's values)."""
    c = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    fit = least_squares(
        lambda p: steps.step_s(p, c) / c["itl_s"] - 1,
        x0=[0.9, 0.5, 0.5, 0.4, 0.4, 50e-6, 30e-6],
        bounds=([0.3, 0.05, 0.05, 0.05, 0.05, 0, 0], [1, 1, 1, 1, 1, 500e-6, 200e-6]),
        loss="soft_l1",
        f_scale=0.05,
    )
    streaming, kv_h100, kv_b200, mfu_h100, mfu_b200, layer_s, host_s = fit.x
    return streaming, {"H100": kv_h100, "B200": kv_b200}, {"H100": mfu_h100, "B200": mfu_b200}, layer_s, host_s


def features(prompt_tokens):
    """Each regular configuration's response to each coefficient (W per unit share)."""
    steps.PROMPT_TOKENS = prompt_tokens
    power = measured_power()
    every = list(steps.configurations())
    streaming, kv_share, decode_mfu, layer_s, host_per_seq_s = step_constants(every)
    rows = [r for r in every if (r["model"], r["gpu"], r["seqs"]) not in ANOMALIES]
    out = []
    for r in rows:
        weights_s = r["weights_s"] / streaming
        kv_s = r["kv_s"] / kv_share[r["gpu"]]
        compute_bound_s = r["decode_s"] / decode_mfu[r["gpu"]] + r["prefill_s"]
        compute_s = r["decode_s"] + r["prefill_s"] * steps.PREFILL_MFU  # FLOPs at peak
        host_s = r["batch"] * host_per_seq_s
        step_s = max(weights_s + kv_s, compute_bound_s) + r["layers"] * layer_s + host_s + r["all_reduce_s"]
        tdp = TDP_W[r["gpu"]]
        shares = [compute_s, weights_s, kv_s, host_s, r["all_reduce_s"]]
        static = [float(r["gpu"] == "H100"), float(r["gpu"] == "B200")]
        response = np.array([s / step_s * tdp for s in shares] + [s * tdp for s in static])
        out.append((r, response, power[(r["model"], r["gpu"], r["tp"], r["seqs"])]))
    return out


def bound(prompt_tokens):
    """The least largest |relative error| any coefficients reach, and where."""
    rows = features(prompt_tokens)
    n_rows, n_coef = len(rows), len(rows[0][1])
    relative = np.array([response / measured for _, response, measured in rows])
    files = sorted({r["model"] for r, _, _ in rows})
    # Variables: coefficients, the bound t, one binary per configuration (left out).
    n = n_coef + 1 + n_rows
    big = 10.0
    a, low, high = [], [], []
    for i in range(n_rows):
        for sign in (1.0, -1.0):
            row = np.zeros(n)
            row[:n_coef] = sign * relative[i]
            row[n_coef] = -1.0
            row[n_coef + 1 + i] = -big
            a.append(row)
            low.append(-np.inf)
            high.append(sign * 1.0)
    for f in files:
        row = np.zeros(n)
        for i, (r, _, _) in enumerate(rows):
            if r["model"] == f:
                row[n_coef + 1 + i] = 1.0
        a.append(row)
        low.append(0.0)
        high.append(EXTRA_EXCLUSIONS_PER_FILE)
    cost = np.zeros(n)
    cost[n_coef] = 1.0
    integrality = np.r_[np.zeros(n_coef + 1), np.ones(n_rows)]
    bounds = Bounds(np.zeros(n), np.r_[np.full(n_coef, 5.0), 1.0, np.ones(n_rows)])
    result = milp(cost, constraints=LinearConstraint(np.array(a), low, high), integrality=integrality, bounds=bounds)
    if not result.success:
        raise SystemExit(f"milp failed: {result.message}")
    x = result.x
    coefficients, t, left_out = x[:n_coef], x[n_coef], x[n_coef + 1 :] > 0.5
    error = relative @ coefficients - 1.0
    binding = [
        (r["model"], r["gpu"], r["tp"], r["seqs"], e)
        for (r, _, _), e, out in zip(rows, error, left_out)
        if not out and abs(e) > t - 0.005
    ]
    dropped = [(r["model"], r["gpu"], r["tp"], r["seqs"]) for (r, _, _), out in zip(rows, left_out) if out]
    return t, coefficients, binding, dropped


def simulator_form(prompt_tokens):
    """The simulator's own form fitted to the closed form as scripts/fit-power.py fits
    it (one power for weight and KV traffic, none for host time): the median |error|
    and each file's and GPU's mean signed error, to set beside data/README.md's table."""
    rows = features(prompt_tokens)
    relative = np.array([response / measured for _, response, measured in rows])
    # compute, memory (weights and KV), link, static H100, static B200.
    basis = np.stack(
        [relative[:, 0], relative[:, 1] + relative[:, 2], relative[:, 4], relative[:, 5], relative[:, 6]], 1
    )
    fit = least_squares(
        lambda k: basis @ k - 1, x0=[1.0, 0.5, 0.3, 0.3, 0.4], bounds=(0, 5), loss="soft_l1", f_scale=0.05
    )
    error = (basis @ fit.x - 1) * 100
    groups = {}
    for (r, _, _), e in zip(rows, error):
        groups.setdefault((r["model"], r["gpu"], r["tp"]), []).append(e)
    return np.median(np.abs(error)), {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def main():
    median, by_file = simulator_form(steps.PROMPT_TOKENS)
    print(f"the simulator's form fitted to the closed form: median |power error| {median:.1f}%; mean signed error:")
    for (model, gpu, tp), e in by_file.items():
        print(f"  {model} {gpu} x{tp}: {e:+.1f}%")
    names = "compute, weights, kv, host, link, static H100, static B200"
    for prompt in (70.0, 150.0, 250.0, 400.0):
        t, coefficients, binding, dropped = bound(prompt)
        print(f"prompt {prompt:.0f} tokens: no coefficients bring every configuration within {t * 100:.1f}%")
        print(f"  at ({names}) = ({', '.join(f'{c:.3f}' for c in coefficients)})")
        print(f"  left out besides the named anomalies: {dropped}")
        for model, gpu, tp, seqs, e in binding:
            print(f"  at the bound: {model} {gpu} x{tp} max_num_seqs {seqs}: {e * 100:+.1f}%")


if __name__ == "__main__":
    main()
