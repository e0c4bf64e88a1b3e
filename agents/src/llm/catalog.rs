//! GPUs and model architectures: the numbers a roofline, a KV cache and a power model
//! need. Every built-in number's source is in data/README.md ("LLM catalogues").

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, check};

/// A GPU as the step-time, memory and power models see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Name scenarios use (`serving.gpu`).
    pub name: String,
    /// Peak dense bf16 tensor throughput (TFLOP/s).
    pub peak_bf16_tflops: f64,
    /// Peak memory bandwidth (GB/s, 1e9 bytes).
    pub memory_gb_per_s: f64,
    /// Memory capacity (GB, 1e9 bytes).
    pub memory_gb: f64,
    /// Share of peak bandwidth that streaming the weights reaches, in (0, 1].
    pub bandwidth_efficiency: f64,
    /// Share of peak bandwidth that attention's reads of the paged KV cache reach, in
    /// (0, 1]; `bandwidth_efficiency` when not given.
    #[serde(default)]
    pub kv_bandwidth_efficiency: Option<f64>,
    /// Time per decoder layer and step that no batch hides (µs): the launch and tail
    /// latencies of the layer's kernels. 0 where `bandwidth_efficiency` was measured
    /// on whole decode steps and includes it.
    #[serde(default)]
    pub layer_latency_us: f64,
    /// Share of peak FLOP/s that prefill (large matrix) work reaches, in (0, 1].
    pub prefill_mfu: f64,
    /// Share of peak FLOP/s that decode work reaches when it is compute-bound, in (0, 1].
    pub decode_mfu: f64,
    /// Board power limit (W): the most the GPU draws; above it, it lowers its clock.
    pub tdp_w: f64,
    /// Power with nothing to do (W).
    pub idle_w: f64,
    /// Power of a GPU in a running engine before what its steps do (W): leakage,
    /// clocks, fans and memory refresh, and the host's time between kernels.
    pub static_w: f64,
    /// Power added per unit of compute utilisation (W): at full clock, a step whose
    /// FLOPs at peak take all its time adds this much.
    pub compute_w: f64,
    /// Power added per unit of memory utilisation (W): a step that streams weights
    /// or KV cache for all its time adds this much.
    pub memory_w: f64,
    /// Power added per unit of link utilisation (W): a step whose all-reduces take
    /// all its time adds this much.
    pub link_w: f64,
    /// Link between the GPUs of a replica, for tensor-parallel all-reduce (GB/s).
    pub link_gb_per_s: f64,
    /// Latency of one all-reduce on that link (µs).
    pub link_latency_us: f64,
}

/// A decoder-only transformer's architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name scenarios use (`serving.model`).
    pub name: String,
    /// Decoder layers.
    pub layers: u32,
    /// Hidden size.
    pub hidden: u32,
    /// Attention (query) heads.
    pub heads: u32,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: u32,
    /// Size of one head.
    pub head_dim: u32,
    /// MLP inner size (gated: gate, up and down projections).
    pub intermediate: u32,
    /// Vocabulary.
    pub vocab: u32,
    /// Bytes per parameter and per KV element (2 for bf16).
    pub bytes_per_param: f64,
    /// Whether the output projection shares the embedding's weights.
    #[serde(default)]
    pub tied_embeddings: bool,
    /// The longest sequence (prompt plus output tokens) it takes: its
    /// `max_position_embeddings`, which vLLM takes as `max_model_len`; none when not
    /// given (no limit).
    #[serde(default)]
    pub context_tokens: Option<u32>,
}

impl ModelSpec {
    /// Parameters of one decoder layer (projections, MLP and two norms).
    pub(crate) fn layer_params(&self) -> f64 {
        let (h, q, kv, i) = (
            f64::from(self.hidden),
            f64::from(self.heads * self.head_dim),
            f64::from(self.kv_heads * self.head_dim),
            f64::from(self.intermediate),
        );
        h * q + 2.0 * h * kv + q * h + 3.0 * h * i + 2.0 * h
    }

    /// Parameters of the output projection (the LM head).
    pub(crate) fn head_params(&self) -> f64 {
        f64::from(self.hidden) * f64::from(self.vocab)
    }

    /// All parameters.
    pub fn params(&self) -> f64 {
        let embedding = if self.tied_embeddings { 0.0 } else { self.head_params() };
        f64::from(self.layers) * self.layer_params() + self.head_params() + embedding + f64::from(self.hidden)
    }

    /// Bytes of weights a step reads (every layer and the head; the embedding is a
    /// lookup of a few rows).
    pub(crate) fn weight_bytes_read(&self) -> f64 {
        (f64::from(self.layers) * self.layer_params() + self.head_params()) * self.bytes_per_param
    }

    /// Bytes of weights held in memory.
    pub(crate) fn weight_bytes(&self) -> f64 {
        self.params() * self.bytes_per_param
    }

    /// KV cache per token, all layers: 2 (K and V) x layers x KV heads x head dim x bytes.
    pub(crate) fn kv_bytes_per_token(&self) -> f64 {
        2.0 * f64::from(self.layers) * f64::from(self.kv_heads * self.head_dim) * self.bytes_per_param
    }

    /// FLOPs of the layers' matrix products per token (2 per multiply-add).
    pub(crate) fn linear_flops_per_token(&self) -> f64 {
        2.0 * f64::from(self.layers) * self.layer_params()
    }

    /// FLOPs of the LM head per sequence that emits logits.
    pub(crate) fn head_flops_per_sequence(&self) -> f64 {
        2.0 * self.head_params()
    }

    /// Attention FLOPs for one query token against one cached token, all layers
    /// (QK^T and PV: 2 products x 2 FLOPs x heads x head dim).
    pub(crate) fn attention_flops_per_pair(&self) -> f64 {
        4.0 * f64::from(self.layers) * f64::from(self.heads * self.head_dim)
    }

    /// Checks every value; keys are relative to the model's table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate", self.intermediate),
            ("vocab", self.vocab),
        ] {
            check((1..=1 << 20).contains(&v), key, v, "an integer from 1 to 1,048,576")?;
        }
        check(self.heads.is_multiple_of(self.kv_heads), "kv_heads", self.kv_heads, "a divisor of heads")?;
        check(
            self.bytes_per_param.is_finite() && (0.125..=8.0).contains(&self.bytes_per_param),
            "bytes_per_param",
            self.bytes_per_param,
            "a number of bytes from 0.125 to 8",
        )
    }
}

impl GpuSpec {
    /// Share of peak bandwidth that reads of the KV cache reach.
    pub fn kv_bandwidth_efficiency(&self) -> f64 {
        self.kv_bandwidth_efficiency.unwrap_or(self.bandwidth_efficiency)
    }

    /// Checks every value; keys are relative to the GPU's table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: f64| check(v.is_finite() && v > 0.0, key, v, "a finite number > 0");
        positive("peak_bf16_tflops", self.peak_bf16_tflops)?;
        positive("memory_gb_per_s", self.memory_gb_per_s)?;
        positive("memory_gb", self.memory_gb)?;
        positive("tdp_w", self.tdp_w)?;
        positive("link_gb_per_s", self.link_gb_per_s)?;
        check(
            self.layer_latency_us.is_finite() && (0.0..=10_000.0).contains(&self.layer_latency_us),
            "layer_latency_us",
            self.layer_latency_us,
            "microseconds from 0 to 10,000",
        )?;
        for (key, v) in [
            ("bandwidth_efficiency", self.bandwidth_efficiency),
            ("kv_bandwidth_efficiency", self.kv_bandwidth_efficiency()),
            ("prefill_mfu", self.prefill_mfu),
            ("decode_mfu", self.decode_mfu),
        ] {
            check(v.is_finite() && v > 0.0 && v <= 1.0, key, v, "a share in (0, 1]")?;
        }
        check(
            self.link_latency_us.is_finite() && self.link_latency_us >= 0.0,
            "link_latency_us",
            self.link_latency_us,
            "a finite number >= 0",
        )?;
        check(self.idle_w.is_finite() && self.idle_w >= 0.0, "idle_w", self.idle_w, "a finite number >= 0")?;
        check(
            self.static_w.is_finite() && self.static_w >= 0.0 && self.static_w < self.tdp_w,
            "static_w",
            self.static_w,
            "watts from 0 to below tdp_w",
        )?;
        for (key, v) in [("compute_w", self.compute_w), ("memory_w", self.memory_w), ("link_w", self.link_w)] {
            check(v.is_finite() && v >= 0.0, key, v, "a finite number of watts >= 0")?;
        }
        Ok(())
    }
}

/// Share of peak bandwidth that streaming a model's weights reaches on the H100 and
/// B200, and the time per layer and step no batch hides (µs): fitted with the
/// per-GPU KV-read efficiency and decode MFU to ML.ENERGY v3 by
/// scripts/fit-step-time.py (data/README.md).
const STREAMING_EFFICIENCY: f64 = 0.97;
const LAYER_LATENCY_US: f64 = 78.0;

/// What a step adds to a GPU's power per unit of compute, memory and link
/// utilisation, as shares of the board limit; and static power as a share of it, on
/// the H100 and the B200. Fitted once to ML.ENERGY v3 (every model, GPU and
/// tensor-parallel degree of data/llm-serving/energy/) by scripts/fit-power.py
/// (data/README.md "GPU power per step").
pub const POWER_SHARES: PowerShares =
    PowerShares { compute: 1.734, memory: 0.539, link: 0.0, h100_static: 0.271, b200_static: 0.378 };

/// See [`POWER_SHARES`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerShares {
    /// `compute_w` / `tdp_w`.
    pub compute: f64,
    /// `memory_w` / `tdp_w`.
    pub memory: f64,
    /// `link_w` / `tdp_w`.
    pub link: f64,
    /// The H100's `static_w` / `tdp_w` (also the GPUs without measurements of their own).
    pub h100_static: f64,
    /// The B200's `static_w` / `tdp_w`.
    pub b200_static: f64,
}

/// Built-in GPUs (sources: data/README.md).
pub fn builtin_gpus() -> Vec<GpuSpec> {
    // Power per unit of utilisation in shares of the board limit, the same for every
    // GPU; static power and idle power from the H100's shares where a GPU has no
    // measurements of its own (an assumption, said in data/README.md).
    let shares = POWER_SHARES;
    let h100_idle = 75.0 / 700.0;
    let scaled =
        |name: &str, tflops: f64, bw: f64, gb: f64, eff: f64, mfu: (f64, f64), tdp: f64, link: (f64, f64)| GpuSpec {
            name: name.into(),
            peak_bf16_tflops: tflops,
            memory_gb_per_s: bw,
            memory_gb: gb,
            bandwidth_efficiency: eff,
            kv_bandwidth_efficiency: None,
            layer_latency_us: 0.0,
            prefill_mfu: mfu.0,
            decode_mfu: mfu.1,
            tdp_w: tdp,
            idle_w: h100_idle * tdp,
            static_w: shares.h100_static * tdp,
            compute_w: shares.compute * tdp,
            memory_w: shares.memory * tdp,
            link_w: shares.link * tdp,
            link_gb_per_s: link.0,
            link_latency_us: link.1,
        };
    // H100 and B200: weights streamed near peak, the paged KV cache read at a lower
    // share, and a fixed time per layer; fitted together to ML.ENERGY v3's inter-token
    // latencies (every model and batch, data/README.md "Step time on H100 and B200").
    let decomposed = |g: GpuSpec, kv: f64| GpuSpec {
        bandwidth_efficiency: STREAMING_EFFICIENCY,
        kv_bandwidth_efficiency: Some(kv),
        layer_latency_us: LAYER_LATENCY_US,
        ..g
    };
    vec![
        decomposed(scaled("H100", 989.5, 3350.0, 80.0, 0.68, (0.45, 0.33), 700.0, (450.0, 5.0)), 0.52),
        GpuSpec {
            static_w: shares.b200_static * 1000.0,
            ..decomposed(scaled("B200", 2250.0, 8000.0, 180.0, 0.68, (0.45, 0.43), 1000.0, (900.0, 5.0)), 0.48)
        },
        GpuSpec { idle_w: 63.0, ..scaled("A100-80GB", 312.0, 2039.0, 80.0, 0.68, (0.38, 0.18), 400.0, (300.0, 5.0)) },
        scaled("RTX4090", 165.2, 1008.0, 24.0, 0.875, (0.60, 0.30), 450.0, (16.0, 20.0)),
        scaled("RTXPRO6000", 503.8, 1597.0, 96.0, 0.875, (0.60, 0.30), 600.0, (16.0, 20.0)),
    ]
}

/// Built-in models (sources: data/README.md, each model's Hugging Face config.json).
pub fn builtin_models() -> Vec<ModelSpec> {
    let m = |name: &str, layers, hidden, heads, kv_heads, intermediate, vocab, context| ModelSpec {
        name: String::from(name),
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim: 128,
        intermediate,
        vocab,
        bytes_per_param: 2.0,
        tied_embeddings: false,
        context_tokens: Some(context),
    };
    vec![
        m("Llama-3.1-8B", 32, 4096, 32, 8, 14336, 128_256, 131_072),
        m("Qwen3-8B", 36, 4096, 32, 8, 12288, 151_936, 40_960),
        m("Qwen3-14B", 40, 5120, 40, 8, 17408, 151_936, 40_960),
        m("Llama-3.1-70B", 80, 8192, 64, 8, 28672, 128_256, 131_072),
        m("Qwen3-32B", 64, 5120, 64, 8, 25600, 151_936, 40_960),
        m("Llama-2-7B", 32, 4096, 32, 32, 11008, 32000, 4096),
        m("Llama-2-70B", 80, 8192, 64, 8, 28672, 32000, 4096),
    ]
}

/// The built-in GPU of this name, or an error listing them.
pub fn gpu(key: &str, name: &str) -> Result<GpuSpec, ConfigError> {
    let all = builtin_gpus();
    all.iter().find(|g| g.name == name).cloned().ok_or_else(|| {
        let names: Vec<String> = all.into_iter().map(|g| g.name).collect();
        ConfigError::invalid(
            key,
            name,
            format!("one of the built-in GPUs ({}) or a [serving.gpu] table", names.join(", ")),
        )
    })
}

/// The built-in model of this name, or an error listing them.
pub fn model(key: &str, name: &str) -> Result<ModelSpec, ConfigError> {
    let all = builtin_models();
    all.iter().find(|m| m.name == name).cloned().ok_or_else(|| {
        let names: Vec<String> = all.into_iter().map(|m| m.name).collect();
        ConfigError::invalid(
            key,
            name,
            format!("one of the built-in models ({}) or a [serving.model] table", names.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_published_sizes() {
        let size = |name: &str| model("m", name).unwrap().params() / 1e9;
        // Published sizes (billions): 8.03, 8.19, 14.8, 70.6, 32.8, 6.74, 69.0.
        for (name, billions) in [
            ("Llama-3.1-8B", 8.03),
            ("Qwen3-8B", 8.19),
            ("Qwen3-14B", 14.8),
            ("Llama-3.1-70B", 70.6),
            ("Qwen3-32B", 32.8),
            ("Llama-2-7B", 6.74),
            ("Llama-2-70B", 69.0),
        ] {
            let got = size(name);
            assert!((got - billions).abs() / billions < 0.02, "{name}: {got} B parameters, published {billions} B");
        }
    }

    #[test]
    fn kv_bytes_per_token_match_the_arithmetic() {
        let kib = |name: &str| model("m", name).unwrap().kv_bytes_per_token() / 1024.0;
        assert_eq!(kib("Llama-3.1-8B"), 128.0);
        assert_eq!(kib("Llama-2-70B"), 320.0);
        assert_eq!(kib("Llama-2-7B"), 512.0);
    }

    #[test]
    fn builtins_are_valid_and_unknown_names_are_listed() {
        for g in builtin_gpus() {
            g.validate().unwrap();
        }
        for m in builtin_models() {
            m.validate().unwrap();
        }
        let e = gpu("serving.gpu", "TPU").unwrap_err().to_string();
        assert!(e.contains("serving.gpu") && e.contains("H100") && e.contains("RTXPRO6000"), "{e}");
    }
}
