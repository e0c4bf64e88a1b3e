"""Fits the roofline's decode factors for the H100 and B200 to ML.ENERGY v3.

Where the constants in agents/src/llm/catalog.rs (STREAMING_EFFICIENCY,
LAYER_LATENCY_US, the H100's and B200's kv_bandwidth_efficiency and decode_mfu) and
the scenarios' step_overhead_per_seq_s come from. Run from the repository's root:

    python3 scripts/fit-step-time.py      # needs numpy and scipy

The model is the roofline's step at a closed loop's steady state: every client has a
request in flight, so a step decodes `avg_batch_size` sequences whose cached context
is the prompt (70 tokens on average, LMSYS-Chat) plus the mean output so far
(`avg_output_len`, the mean of a distribution with cv 1: its time average is its
mean), and prefills `batch / avg_output_len` new prompts. Its time is

    max(decode and prefill FLOPs at decode_mfu / prefill_mfu,
        weights / (peak bandwidth x e) + KV read / (peak bandwidth x e_kv))
    + layers x layer latency + sequences x host time per sequence + all-reduces

One set of factors for all four models, both GPUs and both tensor-parallel degrees:
e and the layer latency are shared, e_kv and decode_mfu are the GPU's, the host time
is vLLM's. The loss is robust (soft L1 on the relative error, scale 5%) so that the
runs measured at a lower clock (power falling as ITL rises: data/README.md) do not
pull the fit. The simulator's own check is experiments/tests/integration/llm.rs.
"""

import glob
import json
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

ROOT = Path(__file__).resolve().parents[1]
# Architectures from each model's Hugging Face config.json: layers, hidden, heads,
# KV heads, MLP size, vocabulary (head size 128 throughout).
ARCH = {
    "meta-llama/Llama-3.1-8B-Instruct": (32, 4096, 32, 8, 14336, 128256),
    "Qwen/Qwen3-8B": (36, 4096, 32, 8, 12288, 151936),
    "Qwen/Qwen3-14B": (40, 5120, 40, 8, 17408, 151936),
    "Qwen/Qwen3-32B": (64, 5120, 64, 8, 25600, 151936),
}
# Peak dense bf16 FLOP/s, HBM bytes/s and NVLink bytes/s per direction (data/README.md).
GPUS = {"H100": (989.5e12, 3350e9, 450e9), "B200": (2250e12, 8000e9, 900e9)}
PROMPT_TOKENS = 70.0
PREFILL_MFU = 0.45
LINK_LATENCY_S = 5e-6


def configurations():
    for path in sorted(glob.glob(str(ROOT / "data/llm-serving/energy/*.json"))):
        data = json.load(open(path))
        layers, hidden, heads, kv_heads, mlp, vocab = ARCH[data["model_id"]]
        q, kv = heads * 128, kv_heads * 128
        layer = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * mlp + 2 * hidden
        weights = (layers * layer + hidden * vocab) * 2
        flops_per_token = 2 * layers * layer + 2 * hidden * vocab
        kv_per_token = 2 * layers * kv * 2
        attention_per_pair = 4 * layers * q
        for c in data["configurations"]:
            flops, bandwidth, link = GPUS[c["gpu_model"]]
            tp, batch, output = c["num_gpus"], c["avg_batch_size"], c["avg_output_len"]
            context = PROMPT_TOKENS + output
            all_reduce = 0.0
            if tp > 1:
                all_reduce = 2 * layers * (LINK_LATENCY_S + 2 * (tp - 1) / tp * batch * hidden * 2 / link)
            yield dict(
                model=data["model_id"].split("/")[1],
                gpu=c["gpu_model"],
                tp=tp,
                seqs=c["max_num_seqs"],
                b200=c["gpu_model"] == "B200",
                layers=layers,
                batch=batch,
                weights_s=weights / tp / bandwidth,
                kv_s=batch * context * kv_per_token / tp / bandwidth,
                decode_s=(batch * flops_per_token + batch * context * attention_per_pair) / tp / flops,
                prefill_s=batch / output * PROMPT_TOKENS * flops_per_token / tp / flops / PREFILL_MFU,
                all_reduce_s=all_reduce,
                itl_s=c["median_itl_ms"] / 1e3,
            )


def step_s(p, c):
    e, kv_h100, kv_b200, mfu_h100, mfu_b200, layer_s, host_s = p
    kv_eff = np.where(c["b200"], kv_b200, kv_h100)
    mfu = np.where(c["b200"], mfu_b200, mfu_h100)
    memory = c["weights_s"] / e + c["kv_s"] / kv_eff
    compute = c["decode_s"] / mfu + c["prefill_s"]
    return np.maximum(memory, compute) + c["layers"] * layer_s + c["batch"] * host_s + c["all_reduce_s"]


def main():
    rows = list(configurations())
    c = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    fit = least_squares(
        lambda p: step_s(p, c) / c["itl_s"] - 1,
        x0=[0.9, 0.5, 0.5, 0.4, 0.4, 50e-6, 30e-6],
        bounds=([0.3, 0.05, 0.05, 0.05, 0.05, 0, 0], [1, 1, 1, 1, 1, 500e-6, 200e-6]),
        loss="soft_l1",
        f_scale=0.05,
    )
    e, kv_h100, kv_b200, mfu_h100, mfu_b200, layer_s, host_s = fit.x
    print(f"weights streamed at {e:.3f} of peak bandwidth; layer latency {layer_s * 1e6:.1f} us; host {host_s * 1e6:.1f} us per sequence")
    print(f"H100: KV reads at {kv_h100:.3f}, decode MFU {mfu_h100:.3f}; B200: KV reads at {kv_b200:.3f}, decode MFU {mfu_b200:.3f}")
    error = (step_s(fit.x, c) / c["itl_s"] - 1) * 100
    print(f"median |ITL error| {np.median(np.abs(error)):.1f}% over {len(rows)} configurations")
    for r, err in zip(rows, error):
        if abs(err) > 15:
            print(f"  beyond 15%: {r['model']} {r['gpu']} x{r['tp']} max_num_seqs {r['seqs']}: {err:+.0f}%")


if __name__ == "__main__":
    main()
