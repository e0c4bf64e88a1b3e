"""How close any per-step power model can come to ML.ENERGY v3: a lower bound.

Issue 26 asks for every configuration within 10% in GPU power (at most two named
measurement anomalies per file). This script shows that no set of coefficients can
give that, not only the fitted one: it takes the steady state of the closed loop in
closed form (scripts/fit-step-time.py, with the catalogue's fitted step-time
constants) and a power model richer than the simulator's,

    static_w(GPU) + (compute_w x compute_s + weights_w x weights_s + kv_w x kv_s
                     + host_w x host_s + link_w x link_s) / step_s

(every coefficient a share of the board limit, the same for every GPU; static power
per GPU; weights and KV reads with powers of their own; the host's time per
sequence allowed to draw power too), and finds the coefficients that minimise the
largest relative error over the configurations, as a mixed-integer linear programme
that may also leave out up to two more configurations per file than the ones
data/README.md names as anomalies. Its optimum is a lower bound on the largest error
of any model of this form; the simulator's own steps (prefills between decodes, the
distribution of lengths) differ from the closed form by about a percent (the
simulator's fit and this one give the same medians). Run from the repository's root:

    python3 scripts/power-bound.py      # needs numpy and scipy (>= 1.9, for milp)

It prints the bound for several mean prompt lengths (the closed loop uses 70 tokens;
ML.ENERGY's multi-turn prompts may be longer) and the configurations that set it.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fit_step_time", ROOT / "scripts/fit-step-time.py")
steps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(steps)

# The catalogue's step-time constants (agents/src/llm/catalog.rs, fitted by
# scripts/fit-step-time.py): weights' share of peak bandwidth, KV reads' and decode
# MFU per GPU, the layer latency and vLLM's host time per sequence.
STREAMING, LAYER_S, HOST_S = 0.97, 78e-6, 38e-6
KV_SHARE = {"H100": 0.52, "B200": 0.48}
DECODE_MFU = {"H100": 0.33, "B200": 0.43}
TDP_W = {"H100": 700.0, "B200": 1000.0}
# The anomalies named in data/README.md (and scripts/fit-power.py).
ANOMALIES = {
    ("Llama-3.1-8B-Instruct", "B200", 128),
    ("Llama-3.1-8B-Instruct", "B200", 256),
    ("Llama-3.1-8B-Instruct", "B200", 512),
    ("Llama-3.1-8B-Instruct", "B200", 1024),
    ("Qwen3-8B", "B200", 32),
    ("Qwen3-8B", "B200", 64),
    ("Qwen3-14B", "B200", 128),
    ("Qwen3-14B", "B200", 1024),
    ("Qwen3-14B", "B200", 2048),
    ("Qwen3-8B", "H100", 512),
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


def features(prompt_tokens):
    """Each regular configuration's response to each coefficient (W per unit share)."""
    steps.PROMPT_TOKENS = prompt_tokens
    power = measured_power()
    rows = [r for r in steps.configurations() if (r["model"], r["gpu"], r["seqs"]) not in ANOMALIES]
    out = []
    for r in rows:
        weights_s = r["weights_s"] / STREAMING
        kv_s = r["kv_s"] / KV_SHARE[r["gpu"]]
        compute_bound_s = r["decode_s"] / DECODE_MFU[r["gpu"]] + r["prefill_s"]
        compute_s = r["decode_s"] + r["prefill_s"] * steps.PREFILL_MFU  # FLOPs at peak
        host_s = r["batch"] * HOST_S
        step_s = max(weights_s + kv_s, compute_bound_s) + r["layers"] * LAYER_S + host_s + r["all_reduce_s"]
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


def main():
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
