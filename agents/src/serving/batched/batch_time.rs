//! How long a GPU takes to serve a batch.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The time of one batch, as a function of its size and its tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchTime {
    /// `base_s + per_request_s x requests + per_token_s x tokens`.
    Affine {
        /// Fixed time of a batch (s).
        base_s: f64,
        /// Time per request (s).
        per_request_s: f64,
        /// Time per token, prompt plus output (s).
        per_token_s: f64,
    },
    /// A measured profile: batch latency at some batch sizes, linearly interpolated
    /// between them, plus `per_token_s x tokens`. Outside the measured sizes the
    /// nearest segment is extrapolated, and every such lookup is counted, because a
    /// profile used beyond what was measured is the commonest way for a simulation
    /// of this kind to go quietly wrong.
    Profile {
        /// Measured batch sizes, strictly increasing.
        batch_sizes: Vec<u32>,
        /// Batch latency at each size (s).
        batch_latency_s: Vec<f64>,
        /// Time per token, prompt plus output (s).
        per_token_s: f64,
    },
}

impl BatchTime {
    /// Checks every value; errors name the key (under `service.`) and the range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, allowed: &'static str| {
            Err(ConfigError::invalid(format!("service.{key}"), value, allowed))
        };
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        match self {
            BatchTime::Affine { base_s, per_request_s, per_token_s } => {
                for (key, v) in [("base_s", base_s), ("per_request_s", per_request_s), ("per_token_s", per_token_s)] {
                    if !nonneg(*v) {
                        return bad(key, v.to_string(), "a finite number >= 0");
                    }
                }
                if base_s + per_request_s + per_token_s <= 0.0 {
                    return bad(
                        "per_request_s",
                        per_request_s.to_string(),
                        "a batch that takes time: base_s + per_request_s + per_token_s > 0",
                    );
                }
            }
            BatchTime::Profile { batch_sizes, batch_latency_s, per_token_s } => {
                if batch_sizes.len() < 2 || batch_sizes.len() != batch_latency_s.len() {
                    return bad(
                        "batch_sizes",
                        format!("{} sizes, {} latencies", batch_sizes.len(), batch_latency_s.len()),
                        "at least two measured sizes, with as many batch_latency_s",
                    );
                }
                if batch_sizes[0] == 0 || batch_sizes.windows(2).any(|w| w[0] >= w[1]) {
                    return bad("batch_sizes", format!("{batch_sizes:?}"), "strictly increasing sizes >= 1");
                }
                if !batch_latency_s.iter().all(|l| l.is_finite() && *l > 0.0) {
                    return bad("batch_latency_s", format!("{batch_latency_s:?}"), "finite numbers of seconds > 0");
                }
                if !nonneg(*per_token_s) {
                    return bad("per_token_s", per_token_s.to_string(), "a finite number >= 0");
                }
            }
        }
        Ok(())
    }

    /// The time of a batch of `requests` requests with `tokens` tokens in all (s),
    /// and whether a profile had to be extrapolated to get it.
    pub fn seconds(&self, requests: usize, tokens: f64) -> (f64, bool) {
        match self {
            BatchTime::Affine { base_s, per_request_s, per_token_s } => {
                (base_s + per_request_s * requests as f64 + per_token_s * tokens, false)
            }
            BatchTime::Profile { batch_sizes, batch_latency_s, per_token_s } => {
                let b = requests as f64;
                let last = batch_sizes.len() - 1;
                let outside = b < f64::from(batch_sizes[0]) || b > f64::from(batch_sizes[last]);
                // The segment containing b, or the nearest one at either end.
                let i = batch_sizes.partition_point(|&s| f64::from(s) <= b).clamp(1, last);
                let (b0, b1) = (f64::from(batch_sizes[i - 1]), f64::from(batch_sizes[i]));
                let (l0, l1) = (batch_latency_s[i - 1], batch_latency_s[i]);
                let latency = (l0 + (l1 - l0) * (b - b0) / (b1 - b0)).max(0.0);
                (latency + per_token_s * tokens, outside)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> BatchTime {
        BatchTime::Profile {
            batch_sizes: vec![1, 2, 8, 32],
            batch_latency_s: vec![0.06, 0.09, 0.33, 0.64],
            per_token_s: 0.0,
        }
    }

    #[test]
    fn profiles_interpolate_inside_and_flag_outside() {
        let p = profile();
        assert_eq!(p.seconds(1, 0.0), (0.06, false));
        assert_eq!(p.seconds(32, 0.0), (0.64, false));
        let (t, out) = p.seconds(5, 0.0); // halfway between 2 and 8
        assert!((t - 0.21).abs() < 1e-12 && !out);
        let (t, out) = p.seconds(64, 0.0); // beyond 32: the last segment, extended
        assert!((t - (0.64 + 0.31 / 24.0 * 32.0)).abs() < 1e-12 && out);
        let tokens = BatchTime::Profile {
            batch_sizes: vec![1, 2, 8, 32],
            batch_latency_s: vec![0.06, 0.09, 0.33, 0.64],
            per_token_s: 0.001,
        };
        assert!((tokens.seconds(8, 100.0).0 - 0.43).abs() < 1e-12);
    }

    #[test]
    fn bad_profiles_name_their_key() {
        let mut p = profile();
        if let BatchTime::Profile { batch_sizes, .. } = &mut p {
            batch_sizes.swap(1, 2);
        }
        assert_eq!(p.validate().unwrap_err().key(), "service.batch_sizes");
        let p = BatchTime::Profile { batch_sizes: vec![1, 2], batch_latency_s: vec![0.1], per_token_s: 0.0 };
        assert_eq!(p.validate().unwrap_err().key(), "service.batch_sizes");
        let p = BatchTime::Profile { batch_sizes: vec![1, 2], batch_latency_s: vec![0.1, -1.0], per_token_s: 0.0 };
        assert_eq!(p.validate().unwrap_err().key(), "service.batch_latency_s");
        let a = BatchTime::Affine { base_s: 0.0, per_request_s: 0.0, per_token_s: 0.0 };
        assert_eq!(a.validate().unwrap_err().key(), "service.per_request_s");
    }
}
