//! How long one engine iteration takes: one trait, [`StepTime`], and three models:
//! measured per-layer [`Profile`] tables, a [`Roofline`] from
//! GPU and model specifications, and an [`Affine`] formula for quick studies.

use serde::{Deserialize, Serialize};

use super::catalog::{GpuSpec, ModelSpec};
use super::profile::Profile;
use crate::error::{ConfigError, check};

/// What one step computes: the scheduler's batch, aggregated.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepShape {
    /// Prompt (or recomputed) tokens computed this step, all prefilling sequences.
    pub prefill_tokens: u32,
    /// Tokens already in the KV cache of the prefilling sequences, summed.
    pub prefill_kv: u64,
    /// Sequences prefilling this step.
    pub prefills: u32,
    /// Sum over prefilling sequences of chunk x (cached + (chunk + 1) / 2): the
    /// query-key pairs their attention computes.
    pub prefill_pairs: f64,
    /// Sequences decoding one token this step.
    pub decodes: u32,
    /// Tokens in the KV cache of the decoding sequences, summed.
    pub decode_kv: u64,
}

impl StepShape {
    /// Tokens the step computes.
    pub fn tokens(&self) -> u32 {
        self.prefill_tokens + self.decodes
    }

    /// Sequences scheduled (each computes logits, partial prefills included).
    pub fn sequences(&self) -> u32 {
        self.prefills + self.decodes
    }
}

/// A step-time model: seconds of GPU work for a step of this shape on one replica
/// (tensor-parallel communication included; host overhead is added by the replica).
pub trait StepTime {
    /// GPU time of the step (s).
    fn step_s(&self, shape: &StepShape) -> f64 {
        self.timed(shape).0
    }
    /// GPU time of the step (s), and whether the model had to go beyond what it was
    /// measured on (a profile's extrapolation) to give it.
    fn timed(&self, shape: &StepShape) -> (f64, bool);
}

/// A step time from first principles: the larger of the time to do the step's FLOPs
/// and the time to move its bytes, each at an achievable share of the GPU's peak, plus
/// two all-reduces per layer across the replica's GPUs.
#[derive(Clone, Debug, PartialEq)]
pub struct Roofline {
    /// The GPU.
    pub gpu: GpuSpec,
    /// The model.
    pub model: ModelSpec,
    /// GPUs per replica (tensor parallel).
    pub tp: u32,
}

impl Roofline {
    /// Bytes one GPU reads in the step: its share of the weights and of the KV cache
    /// read, plus the new KV it writes.
    pub(crate) fn bytes_per_gpu(&self, s: &StepShape) -> f64 {
        let (weights, kv) = self.bytes_per_gpu_split(s);
        weights + kv
    }

    /// [`Roofline::bytes_per_gpu`] as (weights, KV cache read and written).
    fn bytes_per_gpu_split(&self, s: &StepShape) -> (f64, f64) {
        let kv = self.model.kv_bytes_per_token();
        let tp = f64::from(self.tp);
        let kv_bytes = kv * ((s.prefill_kv + s.decode_kv) as f64 + f64::from(s.tokens()));
        (self.model.weight_bytes_read() / tp, kv_bytes / tp)
    }

    /// The least time the step can take: its bytes at the GPU's peak bandwidth.
    pub fn memory_floor_s(&self, s: &StepShape) -> f64 {
        self.bytes_per_gpu(s) / (self.gpu.memory_gb_per_s * 1e9)
    }

    /// Its constants, worked out once ([`RooflineTerms`]).
    pub fn terms(&self) -> RooflineTerms {
        let (m, g) = (&self.model, &self.gpu);
        let tp = f64::from(self.tp);
        let peak = g.peak_bf16_tflops * 1e12 * tp;
        let bandwidth = g.memory_gb_per_s * 1e9;
        RooflineTerms {
            peak_flops_per_s: peak,
            prefill_flops_per_s: peak * g.prefill_mfu,
            decode_flops_per_s: peak * g.decode_mfu,
            linear_flops_per_token: m.linear_flops_per_token(),
            attention_flops_per_pair: m.attention_flops_per_pair(),
            head_flops_per_sequence: m.head_flops_per_sequence(),
            weights_s: m.weight_bytes_read() / tp / (bandwidth * g.bandwidth_efficiency),
            kv_bytes_per_token: m.kv_bytes_per_token(),
            tp,
            kv_bytes_per_s: bandwidth * g.kv_bandwidth_efficiency(),
            latency_s: f64::from(m.layers) * g.layer_latency_us * 1e-6,
            all_reduce: (self.tp > 1).then(|| AllReduce {
                hidden: f64::from(m.hidden),
                bytes_per_param: m.bytes_per_param,
                latency_s: g.link_latency_us * 1e-6,
                crossing_share: 2.0 * (tp - 1.0) / tp,
                link_bytes_per_s: g.link_gb_per_s * 1e9,
                per_step: 2.0 * f64::from(m.layers),
            }),
        }
    }
}

/// A roofline's constants, worked out once: everything [`Roofline::demand`] needs
/// beyond the step's shape, so that a pool that times every step of a run does not
/// work out the model's parameter counts and the GPU's rates each time. Its
/// [`RooflineTerms::demand`] is the roofline's, to the bit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RooflineTerms {
    peak_flops_per_s: f64,
    prefill_flops_per_s: f64,
    decode_flops_per_s: f64,
    linear_flops_per_token: f64,
    attention_flops_per_pair: f64,
    head_flops_per_sequence: f64,
    /// The weights' share of a GPU, read at the bandwidth the kernels reach (s).
    weights_s: f64,
    kv_bytes_per_token: f64,
    tp: f64,
    kv_bytes_per_s: f64,
    latency_s: f64,
    /// Tensor parallel only.
    all_reduce: Option<AllReduce>,
}

/// The constants of a step's all-reduces (two per layer, a ring over the link: 2 (tp -
/// 1) / tp of the activations' bytes cross each GPU's link).
#[derive(Clone, Copy, Debug, PartialEq)]
struct AllReduce {
    hidden: f64,
    bytes_per_param: f64,
    latency_s: f64,
    crossing_share: f64,
    link_bytes_per_s: f64,
    per_step: f64,
}

impl RooflineTerms {
    /// Time of the step's all-reduces over the link.
    fn all_reduce_s(&self, tokens: u32) -> f64 {
        let Some(a) = &self.all_reduce else { return 0.0 };
        let bytes = f64::from(tokens) * a.hidden * a.bytes_per_param;
        a.per_step * (a.latency_s + a.crossing_share * bytes / a.link_bytes_per_s)
    }

    /// What the step asks of each GPU of the replica (see [`Roofline::demand`]).
    pub fn demand(&self, s: &StepShape) -> Demand {
        // A step without prefill work skips its terms, and one GPU the split: the
        // rates are positive (validated), and 0 x a, 0 / a, 0 + a and a / 1 are exact,
        // so the result is the same to the bit, with two divisions fewer on the
        // steps a run of decode times twice.
        let prefill = s.prefill_tokens > 0 || s.prefill_pairs != 0.0;
        let (prefill_flops, prefill_s) = if prefill {
            let flops = self.linear_flops_per_token * f64::from(s.prefill_tokens)
                + self.attention_flops_per_pair * s.prefill_pairs;
            (flops, flops / self.prefill_flops_per_s)
        } else {
            (0.0, 0.0)
        };
        let decode_flops =
            self.linear_flops_per_token * f64::from(s.decodes) + self.attention_flops_per_pair * s.decode_kv as f64;
        let head_flops = self.head_flops_per_sequence * f64::from(s.sequences());
        let kv = self.kv_bytes_per_token * ((s.prefill_kv + s.decode_kv) as f64 + f64::from(s.tokens()));
        let kv = if self.tp == 1.0 { kv } else { kv / self.tp };
        Demand {
            compute_s: (prefill_flops + decode_flops + head_flops) / self.peak_flops_per_s,
            compute_bound_s: prefill_s + (decode_flops + head_flops) / self.decode_flops_per_s,
            memory_s: self.weights_s + kv / self.kv_bytes_per_s,
            link_s: self.all_reduce_s(s.tokens()),
            latency_s: self.latency_s,
        }
    }
}

impl Roofline {
    /// What the step asks of each GPU of the replica: the roofline's parts before
    /// they are combined into a time. Power follows it (see
    /// [`GpuSpec::step_power_w`]), and so does the stretch of a step under a power cap.
    pub fn demand(&self, s: &StepShape) -> Demand {
        self.terms().demand(s)
    }
}

/// What a step asks of each GPU of a replica, in seconds, from the roofline of the
/// step (see [`Roofline::demand`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    /// Its FLOPs at the GPU's peak: over the step's time, the share of the tensor
    /// cores' capacity the step uses.
    pub compute_s: f64,
    /// Its FLOPs at the shares of peak that prefill and decode kernels reach: how
    /// long the step would be compute-bound for.
    pub compute_bound_s: f64,
    /// Its weight reads and KV-cache traffic at the bandwidths the kernels reach: how
    /// long the step would be memory-bound for.
    pub memory_s: f64,
    /// Its tensor-parallel all-reduces on the link.
    pub link_s: f64,
    /// The per-layer kernel latencies no batch hides.
    pub latency_s: f64,
}

impl Demand {
    /// The step's GPU time by the roofline: compute or memory, whichever is longer,
    /// plus the layers' latencies and the all-reduces.
    pub fn roofline_s(&self) -> f64 {
        self.compute_bound_s.max(self.memory_s) + self.latency_s + self.link_s
    }

    /// How much longer the step's kernels take at `clock`, a share of the GPU's full
    /// clock in (0, 1]: compute-bound work stretches as 1 / clock, memory traffic
    /// (on the memory's own clock) does not.
    pub fn stretch_s(&self, clock: f64) -> f64 {
        let full = self.compute_bound_s.max(self.memory_s);
        (self.compute_bound_s / clock).max(self.memory_s) - full
    }
}

impl StepTime for Roofline {
    fn timed(&self, s: &StepShape) -> (f64, bool) {
        (self.demand(s).roofline_s(), false)
    }
}

/// `base_s + per_token_s x tokens + per_sequence_s x sequences + per_kv_token_s x cached
/// tokens read`: a fitted line (DistServe's form) or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affine {
    /// Fixed time per step (s).
    pub base_s: f64,
    /// Per token computed (s).
    #[serde(default)]
    pub per_token_s: f64,
    /// Per sequence scheduled (s).
    #[serde(default)]
    pub per_sequence_s: f64,
    /// Per cached token the step's attention reads (s).
    #[serde(default)]
    pub per_kv_token_s: f64,
}

impl Affine {
    /// Checks every value; keys are relative to the step-time table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("base_s", self.base_s),
            ("per_token_s", self.per_token_s),
            ("per_sequence_s", self.per_sequence_s),
            ("per_kv_token_s", self.per_kv_token_s),
        ] {
            check(v.is_finite() && (0.0..=3600.0).contains(&v), key, v, "seconds from 0 to 3600")?;
        }
        check(
            self.base_s + self.per_token_s + self.per_sequence_s > 0.0,
            "base_s",
            self.base_s,
            "a step time > 0 (base_s, per_token_s or per_sequence_s above 0)",
        )
    }
}

impl StepTime for Affine {
    fn timed(&self, s: &StepShape) -> (f64, bool) {
        let seconds = self.base_s
            + self.per_token_s * f64::from(s.tokens())
            + self.per_sequence_s * f64::from(s.sequences())
            + self.per_kv_token_s * (s.prefill_kv + s.decode_kv) as f64;
        (seconds, false)
    }
}

/// The step-time model a replica runs: one of the three.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "one per pool, built once: boxing buys nothing")]
pub enum StepModel {
    /// Measured per-layer tables.
    Profile(Box<Profile>),
    /// From specifications.
    Roofline(Roofline),
    /// A formula.
    Affine(Affine),
}

impl StepTime for StepModel {
    fn timed(&self, shape: &StepShape) -> (f64, bool) {
        match self {
            StepModel::Profile(p) => p.timed(shape),
            StepModel::Roofline(r) => r.timed(shape),
            StepModel::Affine(a) => a.timed(shape),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::catalog::{gpu, model};

    fn roofline(g: &str, m: &str, tp: u32) -> Roofline {
        Roofline { gpu: gpu("g", g).unwrap(), model: model("m", m).unwrap(), tp }
    }

    #[test]
    fn the_decode_only_shortcut_gives_the_general_formula_to_the_bit() {
        // The formula with every term, written out here, against `demand` (which skips
        // the prefill terms of a decode-only step and the split over one GPU).
        for (g, m, tp) in [("H100", "Llama-3.1-8B", 1), ("A100-80GB", "Llama-3.1-70B", 4), ("B200", "Qwen3-8B", 2)] {
            let t = roofline(g, m, tp).terms();
            for (decodes, decode_kv, prefill_tokens) in [(1, 1, 0), (16, 11_337, 0), (255, 1_000_003, 0), (7, 900, 512)]
            {
                let s = StepShape {
                    decodes,
                    decode_kv,
                    prefill_tokens,
                    prefills: u32::from(prefill_tokens > 0),
                    prefill_kv: u64::from(prefill_tokens) / 2,
                    prefill_pairs: f64::from(prefill_tokens) * 300.5,
                };
                let pf = t.linear_flops_per_token * f64::from(s.prefill_tokens)
                    + t.attention_flops_per_pair * s.prefill_pairs;
                let df =
                    t.linear_flops_per_token * f64::from(s.decodes) + t.attention_flops_per_pair * s.decode_kv as f64;
                let hf = t.head_flops_per_sequence * f64::from(s.sequences());
                let kv = t.kv_bytes_per_token * ((s.prefill_kv + s.decode_kv) as f64 + f64::from(s.tokens())) / t.tp;
                let d = t.demand(&s);
                assert_eq!(d.compute_s.to_bits(), ((pf + df + hf) / t.peak_flops_per_s).to_bits(), "{g} {s:?}");
                let bound = pf / t.prefill_flops_per_s + (df + hf) / t.decode_flops_per_s;
                assert_eq!(d.compute_bound_s.to_bits(), bound.to_bits(), "{g} {s:?}");
                assert_eq!(d.memory_s.to_bits(), (t.weights_s + kv / t.kv_bytes_per_s).to_bits(), "{g} {s:?}");
            }
        }
    }

    #[test]
    fn batch_one_decode_matches_the_published_bandwidth_bounds() {
        // Llama-2-7B: 13.5 GB of bf16 weights; >= 6.6 ms on A100-80GB, >= 4.0 ms on H100
        // (a step reads all but the embedding table, 0.26 GB, of which it looks up rows).
        let one = StepShape { decodes: 1, decode_kv: 1, ..StepShape::default() };
        let a100 = roofline("A100-80GB", "Llama-2-7B", 1);
        let h100 = roofline("H100", "Llama-2-7B", 1);
        assert!((a100.memory_floor_s(&one) * 1e3 - 6.6).abs() < 0.2, "{}", a100.memory_floor_s(&one));
        assert!((h100.memory_floor_s(&one) * 1e3 - 4.0).abs() < 0.2, "{}", h100.memory_floor_s(&one));
        assert!(a100.step_s(&one) >= a100.memory_floor_s(&one));
    }

    #[test]
    fn prefill_is_compute_bound_and_grows_with_tokens() {
        let r = roofline("H100", "Llama-3.1-8B", 1);
        let prefill = |tokens: u32| StepShape {
            prefill_tokens: tokens,
            prefills: 1,
            prefill_pairs: f64::from(tokens) * (f64::from(tokens) + 1.0) / 2.0,
            ..StepShape::default()
        };
        let (small, large) = (r.step_s(&prefill(16)), r.step_s(&prefill(8192)));
        assert!(large > 20.0 * small, "{small} {large}");
        // 8192 tokens x 16 GFLOP at 45% of 989.5 TFLOP/s is about 0.3 s.
        assert!((0.25..0.4).contains(&large), "{large}");
    }

    #[test]
    fn tensor_parallel_splits_the_work_and_adds_all_reduce() {
        let one = roofline("H100", "Llama-3.1-70B", 1);
        let two = roofline("H100", "Llama-3.1-70B", 2);
        let s = StepShape { decodes: 64, decode_kv: 64 * 1000, ..StepShape::default() };
        assert!(two.step_s(&s) < one.step_s(&s) && two.step_s(&s) > one.step_s(&s) / 2.0);
        assert!(two.terms().all_reduce_s(64) > 0.0 && one.terms().all_reduce_s(64) == 0.0);
    }
}
