//! Step time from measured per-layer kernel timings, laid out as LLMServingSim's
//! profiler writes them (one model on one GPU type at one tensor-parallel degree):
//!
//! - `dense.csv` (`layer,tokens,time_us`): the non-attention operations of one decoder
//!   layer by tokens in the step; `embedding` and `final_layernorm` run once per step,
//!   `layernorm` twice per layer (before attention and before the MLP), every other
//!   operation once per layer.
//! - `attention.csv` (`prefill_chunk,kv_prefill,n_decode,kv_decode,time_us`): one
//!   layer's attention for a step's prefill tokens (and the tokens they already have
//!   cached) plus `n_decode` decodes of `kv_decode` cached tokens each.
//! - `per_sequence.csv` (`layer,sequences,time_us`): the LM head and sampler, once per
//!   step, by sequences scheduled (every scheduled sequence computes logits).
//!
//! Lookups interpolate linearly along every axis (the kernels are close to linear in
//! each: decode attention is a read of `n_decode x kv_decode` cached tokens), clamp
//! below a table's smallest point and extrapolate linearly above its largest; a step
//! that needed extrapolation is reported as outside the table. A step's prefills are
//! aggregated as the profiler's users do: chunks summed, their cached tokens summed;
//! decodes at their mean cached length. Profiles hold no communication: with tensor
//! parallelism each layer adds two all-reduces of the step's activations over the
//! replica's link.

use super::catalog::ModelSpec;
use super::step_time::{StepShape, StepTime};
use crate::error::ConfigError;
use crate::input::{DataTable, Inputs};

/// Sorted (x, y) points with linear interpolation.
#[derive(Clone, Debug, Default, PartialEq)]
struct Curve {
    points: Vec<(f64, f64)>,
}

impl Curve {
    /// The interpolated value and whether `x` lay beyond the last point.
    fn at(&self, x: f64) -> (f64, bool) {
        interpolate(&self.points, x, |&(_, y)| (y, false))
    }
}

/// Linear interpolation over `(key, item)` pairs sorted by key, `value` giving each
/// item's value (and whether it was itself outside its table).
fn interpolate<T>(points: &[(f64, T)], x: f64, value: impl Fn(&(f64, T)) -> (f64, bool)) -> (f64, bool) {
    match points {
        [] => (0.0, true),
        [only] => {
            let (v, outside) = value(only);
            (v, outside || x > only.0)
        }
        _ => {
            let upper = points.partition_point(|p| p.0 < x);
            if upper == 0 {
                return value(&points[0]);
            }
            let (lo, hi) =
                if upper >= points.len() { (points.len() - 2, points.len() - 1) } else { (upper - 1, upper) };
            let ((x0, _), (x1, _)) = (&points[lo], &points[hi]);
            let ((y0, o0), (y1, o1)) = (value(&points[lo]), value(&points[hi]));
            let t = (x - x0) / (x1 - x0);
            (y0 + t * (y1 - y0), o0 || o1 || x > *x1)
        }
    }
}

type KvCurve = Vec<(f64, Curve)>; // kv_prefill -> kv_decode curve
type DecodeGrid = Vec<(f64, KvCurve)>; // n_decode -> ...
type AttentionGrid = Vec<(f64, DecodeGrid)>; // prefill_chunk -> ...

/// Per-layer kernel timings of one model on one GPU type at one tensor-parallel degree.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Where it was read from.
    pub source: String,
    /// Per-layer operations (name, times per layer, curve by tokens).
    layer_ops: Vec<(String, f64, Curve)>,
    /// Once-per-step operations by tokens.
    step_ops: Vec<(String, Curve)>,
    /// Once-per-step operations by sequences.
    sequence_ops: Vec<(String, Curve)>,
    attention: AttentionGrid,
    layers: f64,
    /// Two all-reduces per layer: seconds per token and fixed seconds per step.
    all_reduce_s_per_token: f64,
    all_reduce_s_fixed: f64,
}

impl Profile {
    /// Reads `{dir}/dense.csv`, `{dir}/attention.csv` and `{dir}/per_sequence.csv`.
    /// `link` is the replica's link (GB/s, µs), used when `tp` > 1.
    pub fn load(
        key: &str,
        dir: &str,
        inputs: &dyn Inputs,
        model: &ModelSpec,
        tp: u32,
        link: (f64, f64),
    ) -> Result<Profile, ConfigError> {
        let within = |dir: &str, name: &str| {
            if dir.is_empty() { name.to_string() } else { format!("{}/{name}", dir.trim_end_matches('/')) }
        };
        // A model's directory holds one directory per tensor-parallel size: take
        // `tp<tp>` when `dir` is the model's rather than a profile's.
        let (dir, dense) = match inputs.table(key, &within(dir, "dense.csv")) {
            Ok(dense) => (dir.to_string(), dense),
            Err(ConfigError::Invalid { .. }) => {
                let nested = within(dir, &format!("tp{tp}"));
                match inputs.table(key, &within(&nested, "dense.csv")) {
                    Ok(dense) => (nested, dense),
                    Err(ConfigError::Invalid { .. }) => {
                        return Err(ConfigError::invalid(
                            key,
                            dir,
                            format!(
                                "a directory of per-layer profiles (dense.csv, attention.csv, per_sequence.csv), or a \
                                 model's directory with tp{tp}/ in it (serving.tp = {tp})"
                            ),
                        ));
                    }
                    Err(other) => return Err(other),
                }
            }
            Err(other) => return Err(other),
        };
        let file = |name: &str| inputs.table(key, &within(&dir, name));
        let attention = file("attention.csv")?;
        let per_sequence = file("per_sequence.csv")?;
        let mut layer_ops = Vec::new();
        let mut step_ops = Vec::new();
        for (name, curve) in curves(&dense, "tokens")? {
            match name.as_str() {
                "embedding" | "final_layernorm" => step_ops.push((name, curve)),
                "layernorm" => layer_ops.push((name, 2.0, curve)),
                _ => layer_ops.push((name, 1.0, curve)),
            }
        }
        if layer_ops.is_empty() {
            return Err(dense.error("no per-layer operations (rows other than embedding and final_layernorm)"));
        }
        let sequence_ops = curves(&per_sequence, "sequences")?;
        let (tp_f, hidden) = (f64::from(tp), f64::from(model.hidden));
        let per_all_reduce_token = 2.0 * (tp_f - 1.0) / tp_f * hidden * model.bytes_per_param / (link.0 * 1e9);
        let layers = f64::from(model.layers);
        Ok(Profile {
            source: dir.clone(),
            layer_ops,
            step_ops,
            sequence_ops,
            attention: attention_grid(&attention)?,
            layers,
            all_reduce_s_per_token: if tp > 1 { 2.0 * layers * per_all_reduce_token } else { 0.0 },
            all_reduce_s_fixed: if tp > 1 { 2.0 * layers * link.1 * 1e-6 } else { 0.0 },
        })
    }

    fn attention_us(&self, s: &StepShape) -> (f64, bool) {
        let pc = f64::from(s.prefill_tokens);
        let kp = s.prefill_kv as f64;
        let nd = f64::from(s.decodes);
        let kd = if s.decodes > 0 { s.decode_kv as f64 / nd } else { 0.0 };
        interpolate(&self.attention, pc, |(_, by_decodes)| {
            interpolate(by_decodes, nd, |(_, by_kp)| interpolate(by_kp, kp, |(_, curve)| curve.at(kd)))
        })
    }

    /// The step's time (s) and whether a lookup left the table.
    pub fn lookup(&self, s: &StepShape) -> (f64, bool) {
        let tokens = f64::from(s.tokens().max(1));
        let mut outside = false;
        let mut add = |(us, out): (f64, bool)| {
            outside |= out;
            us
        };
        let mut per_layer_us: f64 = self.layer_ops.iter().map(|(_, times, c)| times * add(c.at(tokens))).sum();
        if s.tokens() > 0 {
            per_layer_us += add(self.attention_us(s));
        }
        let per_step_us: f64 = self.step_ops.iter().map(|(_, c)| add(c.at(tokens))).sum::<f64>()
            + self.sequence_ops.iter().map(|(_, c)| add(c.at(f64::from(s.sequences().max(1))))).sum::<f64>();
        let communication_s = self.all_reduce_s_fixed + self.all_reduce_s_per_token * f64::from(s.tokens());
        ((self.layers * per_layer_us + per_step_us) * 1e-6 + communication_s, outside)
    }
}

impl StepTime for Profile {
    fn timed(&self, shape: &StepShape) -> (f64, bool) {
        self.lookup(shape)
    }
}

fn number(table: &DataTable, col: usize, row: usize) -> Result<f64, ConfigError> {
    table
        .number(col, row)
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| table.at(row, format!("{} is not a number >= 0", table.names()[col])))
}

/// Curves by operation name from a `layer,<x>,time_us` table.
fn curves(table: &DataTable, x_name: &str) -> Result<Vec<(String, Curve)>, ConfigError> {
    let (name_col, x_col, t_col) = (table.require("layer")?, table.require(x_name)?, table.require("time_us")?);
    let mut out: Vec<(String, Curve)> = Vec::new();
    for row in 0..table.rows() {
        let name = table.text(name_col, row).unwrap_or_default();
        let point = (number(table, x_col, row)?, number(table, t_col, row)?);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => c.points.push(point),
            None => out.push((name, Curve { points: vec![point] })),
        }
    }
    for (_, c) in &mut out {
        c.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        c.points.dedup_by(|later, earlier| later.0 == earlier.0);
    }
    if out.is_empty() {
        return Err(table.error("the table has no rows"));
    }
    Ok(out)
}

fn attention_grid(table: &DataTable) -> Result<AttentionGrid, ConfigError> {
    let cols = ["prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"]
        .map(|name| table.require(name))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::with_capacity(table.rows());
    for row in 0..table.rows() {
        let v = cols.iter().map(|&c| number(table, c, row)).collect::<Result<Vec<_>, _>>()?;
        rows.push((v[0], v[2], v[1], v[3], v[4]));
    }
    if rows.is_empty() {
        return Err(table.error("the table has no rows"));
    }
    rows.sort_by(|a, b| {
        a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.total_cmp(&b.2)).then(a.3.total_cmp(&b.3))
    });
    let mut grid: AttentionGrid = Vec::new();
    for (pc, nd, kp, kd, t) in rows {
        if grid.last().is_none_or(|(x, _)| *x != pc) {
            grid.push((pc, Vec::new()));
        }
        let by_nd = &mut grid.last_mut().expect("pushed").1;
        if by_nd.last().is_none_or(|(x, _)| *x != nd) {
            by_nd.push((nd, Vec::new()));
        }
        let by_kp = &mut by_nd.last_mut().expect("pushed").1;
        if by_kp.last().is_none_or(|(x, _)| *x != kp) {
            by_kp.push((kp, Curve::default()));
        }
        let curve = &mut by_kp.last_mut().expect("pushed").1;
        if curve.points.last().is_none_or(|(x, _)| *x != kd) {
            curve.points.push((kd, t));
        }
    }
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_is_linear_clamped_below_and_extrapolated_above() {
        let c = Curve { points: vec![(1.0, 10.0), (3.0, 30.0)] };
        assert_eq!(c.at(2.0), (20.0, false));
        assert_eq!(c.at(0.0), (10.0, false));
        assert_eq!(c.at(5.0), (50.0, true));
    }
}
