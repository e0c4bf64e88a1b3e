//! Model-variant profiles: accuracy, and latency per batch as a fitted quadratic.

/// l(b) = c2 b^2 + c1 b + c0: a batch's latency (s) as a function of its size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quadratic {
    /// Coefficient of b^2.
    pub c2: f64,
    /// Coefficient of b.
    pub c1: f64,
    /// Constant term.
    pub c0: f64,
}

impl Quadratic {
    /// The latency of a batch of `batch` inputs (s).
    pub fn at(&self, batch: f64) -> f64 {
        (self.c2 * batch + self.c1).mul_add(batch, self.c0)
    }
}

/// Least-squares fit of a quadratic to (batch, latency) points, by the normal
/// equations (three unknowns: solved by Gaussian elimination with partial pivoting).
/// Needs at least three distinct batch sizes.
///
/// ```
/// use infersim_agents::adaptation::fit_quadratic;
/// let q = fit_quadratic(&[(1.0, 3.0), (2.0, 6.0), (3.0, 11.0), (4.0, 18.0)]).unwrap();
/// // Exactly b^2 + 2: the fit recovers it.
/// assert!((q.c2 - 1.0).abs() < 1e-9 && q.c1.abs() < 1e-9 && (q.c0 - 2.0).abs() < 1e-9);
/// ```
pub fn fit_quadratic(points: &[(f64, f64)]) -> Option<Quadratic> {
    let mut distinct: Vec<f64> = points.iter().map(|p| p.0).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 || points.iter().any(|(b, l)| !b.is_finite() || !l.is_finite()) {
        return None;
    }
    // Rows [b^2, b, 1 | l]; scale b to keep the system well conditioned.
    let scale = distinct.iter().fold(0.0f64, |m, b| m.max(b.abs())).max(1.0);
    let mut m = [[0.0f64; 4]; 3];
    for &(b, l) in points {
        let x = [b * b / (scale * scale), b / scale, 1.0];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += x[i] * x[j];
            }
            m[i][3] += x[i] * l;
        }
    }
    for col in 0..3 {
        let pivot = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        m.swap(col, pivot);
        if m[col][col].abs() < 1e-300 {
            return None;
        }
        let pivot_row = m[col];
        for (row, values) in m.iter_mut().enumerate() {
            if row != col {
                let f = values[col] / pivot_row[col];
                for (v, p) in values.iter_mut().zip(pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let solve = |i: usize| m[i][3] / m[i][i];
    Some(Quadratic { c2: solve(0) / (scale * scale), c1: solve(1) / scale, c0: solve(2) })
}

/// One model variant of a stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// Name, e.g. `yolov5n`.
    pub name: String,
    /// Published accuracy (any scale: only the order matters to the adapter).
    pub accuracy: f64,
    /// Measured or derived (batch, latency s) points.
    pub points: Vec<(f64, f64)>,
    /// What one replica of it costs and how many it may have, where variants differ (a
    /// fleet's variant pools: GPUs and power per replica, and the pool's slots); none:
    /// the planner's [`Limits`](super::Limits).
    pub replica: Option<ReplicaCost>,
}

/// Cores (or GPUs) and busy power of one replica of a variant, and its most replicas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplicaCost {
    /// Cores or GPUs per replica (what the objective's beta weighs).
    pub cores: f64,
    /// Power of a busy replica (W).
    pub busy_w: f64,
    /// Most replicas of this variant (also bounded by the limits' `max_replicas`).
    pub max_replicas: u32,
}

/// A pipeline stage: its variants, with fitted latencies and normalised accuracies.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Name, e.g. `detector`.
    pub name: String,
    /// The variants, in profile order.
    pub variants: Vec<Variant>,
    /// Fitted latency of each variant.
    pub latency: Vec<Quadratic>,
    /// rank / (n - 1) of each variant's accuracy (0 the least accurate, 1 the most).
    pub normalised_accuracy: Vec<f64>,
}

/// rank / (n - 1) by ascending accuracy; ties share the lower rank; a single variant
/// scores 1.
pub fn normalised_accuracies(accuracy: &[f64]) -> Vec<f64> {
    let n = accuracy.len();
    if n <= 1 {
        return vec![1.0; n];
    }
    accuracy.iter().map(|a| accuracy.iter().filter(|b| *b < a).count() as f64 / (n - 1) as f64).collect()
}

impl Stage {
    /// Fits every variant's latency; `None` names the first variant that cannot be fitted.
    pub fn new(name: impl Into<String>, variants: Vec<Variant>) -> Result<Stage, String> {
        let latency = variants
            .iter()
            .map(|v| fit_quadratic(&v.points).ok_or_else(|| v.name.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let normalised_accuracy = normalised_accuracies(&variants.iter().map(|v| v.accuracy).collect::<Vec<_>>());
        Ok(Stage { name: name.into(), variants, latency, normalised_accuracy })
    }

    /// Latency of a batch of `batch` on variant `v` (s), never below a microsecond.
    pub fn latency_s(&self, v: usize, batch: f64) -> f64 {
        self.latency[v].at(batch).max(1e-6)
    }

    /// Inputs per second one replica of variant `v` serves at batch size `batch`.
    pub fn throughput_per_s(&self, v: usize, batch: f64) -> f64 {
        batch / self.latency_s(v, batch)
    }
}

/// A profile that cannot be read: the 1-based line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ProfileError {
    /// Line in the text (1 is the header).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a profile table: CSV text with a header naming `variant`, `accuracy`,
/// `batch` and `latency_s` (other columns, such as `stage`, `gflops` or `source`, are
/// ignored), one row per (variant, batch) point, a variant's rows together. Variants
/// keep their order of first appearance.
pub fn parse_profile_csv(text: &str) -> Result<Vec<Variant>, ProfileError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l));
    let err = |line: usize, message: String| ProfileError { line, message };
    let (_, header) =
        lines.next().ok_or_else(|| err(1, "empty; expected a header with variant,accuracy,batch,latency_s".into()))?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| err(1, format!("no {name} column (columns: {})", columns.join(", "))))
    };
    let (v_col, a_col, b_col, l_col) =
        (column("variant")?, column("accuracy")?, column("batch")?, column("latency_s")?);
    let mut variants: Vec<Variant> = Vec::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |col: usize| fields.get(col).copied().unwrap_or("");
        let number_at = |col: usize, name: &str, ok: fn(f64) -> bool| {
            let raw = field(col);
            raw.parse::<f64>()
                .ok()
                .filter(|x| ok(*x))
                .ok_or_else(|| err(number, format!("{name} = {raw:?} is not valid")))
        };
        let name = field(v_col);
        if name.is_empty() {
            return Err(err(number, "empty variant".into()));
        }
        let accuracy = number_at(a_col, "accuracy", f64::is_finite)?;
        let batch = number_at(b_col, "batch", |b| b >= 1.0 && b.fract() == 0.0)?;
        let latency_s = number_at(l_col, "latency_s", |l| l.is_finite() && l > 0.0)?;
        let seen_before = variants.iter().rev().skip(1).any(|v| v.name == name);
        match variants.last_mut() {
            _ if seen_before => return Err(err(number, format!("{name}'s rows are not together"))),
            Some(v) if v.name == name => {
                if v.accuracy != accuracy {
                    return Err(err(
                        number,
                        format!("accuracy {accuracy} differs from {} on {name}'s earlier rows", v.accuracy),
                    ));
                }
                v.points.push((batch, latency_s));
            }
            _ => {
                variants.push(Variant { name: name.into(), accuracy, points: vec![(batch, latency_s)], replica: None })
            }
        }
    }
    if variants.is_empty() {
        return Err(err(2, "no rows after the header".into()));
    }
    Ok(variants)
}

/// The variants of a profile table (as [`parse_profile_csv`] reads it), from any
/// data file; an error names the file and the line or row.
pub fn read_profile(table: &crate::input::DataTable) -> Result<Vec<Variant>, crate::error::ConfigError> {
    let (v_col, a_col, b_col, l_col) =
        (table.require("variant")?, table.require("accuracy")?, table.require("batch")?, table.require("latency_s")?);
    let mut variants: Vec<Variant> = Vec::new();
    for row in 0..table.rows() {
        let number_at = |col: usize, name: &str, ok: fn(f64) -> bool| {
            table.number(col, row).ok().filter(|x| ok(*x)).ok_or_else(|| {
                table.at(row, format!("{name} = {:?} is not valid", table.text(col, row).unwrap_or_default()))
            })
        };
        let name = table.text(v_col, row).unwrap_or_default();
        if name.is_empty() {
            return Err(table.at(row, "empty variant"));
        }
        let accuracy = number_at(a_col, "accuracy", f64::is_finite)?;
        let batch = number_at(b_col, "batch", |b| (1.0..=65_536.0).contains(&b) && b.fract() == 0.0)?;
        let latency_s = number_at(l_col, "latency_s", |l| l.is_finite() && l > 0.0)?;
        let seen_before = variants.iter().rev().skip(1).any(|v| v.name == name);
        match variants.last_mut() {
            _ if seen_before => return Err(table.at(row, format!("{name}'s rows are not together"))),
            Some(v) if v.name == name => {
                if v.accuracy != accuracy {
                    return Err(table
                        .at(row, format!("accuracy {accuracy} differs from {} on {name}'s earlier rows", v.accuracy)));
                }
                v.points.push((batch, latency_s));
            }
            _ => variants.push(Variant { name, accuracy, points: vec![(batch, latency_s)], replica: None }),
        }
    }
    if variants.is_empty() {
        return Err(table.error("no rows after the header"));
    }
    Ok(variants)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCHES: [f64; 5] = [1.0, 2.0, 8.0, 32.0, 64.0];
    const YOLOV5N: [f64; 5] = [0.059, 0.088, 0.328, 0.639, 0.776];
    const RESNET18: [f64; 5] = [0.037, 0.052, 0.188, 0.309, 0.510];

    fn points(latency: &[f64]) -> Vec<(f64, f64)> {
        BATCHES.iter().copied().zip(latency.iter().copied()).collect()
    }

    #[test]
    fn profiles_parse_and_bad_rows_are_named_by_line() {
        let v = parse_profile_csv("stage,variant,accuracy,batch,latency_s\nd,a,1,1,0.1\nd,a,1,2,0.15\nd,b,2,1,0.2\n")
            .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].points, vec![(1.0, 0.1), (2.0, 0.15)]);
        let e = parse_profile_csv("variant,accuracy,batch,latency_s\na,1,1,0.1\na,1,0,0.2\n").unwrap_err();
        assert_eq!(e, ProfileError { line: 3, message: "batch = \"0\" is not valid".into() });
        let e = parse_profile_csv("variant,accuracy,batch\n").unwrap_err();
        assert!(e.message.contains("no latency_s column"), "{e}");
        let e = parse_profile_csv("variant,accuracy,batch,latency_s\na,1,1,0.1\nb,1,1,0.1\na,1,2,0.2\n").unwrap_err();
        assert_eq!(e.line, 4);
    }

    #[test]
    fn normalised_accuracy_is_rank_over_n_minus_1() {
        let yolo = normalised_accuracies(&[45.7, 56.8, 64.1, 67.3, 68.9]);
        assert_eq!(yolo, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let resnet = normalised_accuracies(&[69.75, 73.31, 76.13, 77.37, 78.31]);
        assert_eq!(resnet, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        // Order in the profile does not matter, only the ranks.
        assert_eq!(normalised_accuracies(&[3.0, 1.0, 2.0]), vec![1.0, 0.0, 0.5]);
        assert_eq!(normalised_accuracies(&[5.0]), vec![1.0]);
    }

    #[test]
    fn the_fit_is_the_least_squares_quadratic() {
        for latency in [YOLOV5N, RESNET18] {
            let q = fit_quadratic(&points(&latency)).unwrap();
            // The residuals are orthogonal to each regressor (normal equations).
            let r: Vec<f64> = BATCHES.iter().zip(latency).map(|(b, l)| l - q.at(*b)).collect();
            for power in 0..3 {
                let dot: f64 = BATCHES.iter().zip(&r).map(|(b, r)| b.powi(power) * r).sum();
                assert!(dot.abs() < 1e-9, "power {power}: {dot}");
            }
            // And it is close to the data (the published curves are smooth).
            assert!(r.iter().all(|r| r.abs() < 0.08), "{r:?}");
        }
        assert!(fit_quadratic(&[(1.0, 1.0), (1.0, 2.0), (2.0, 3.0)]).is_none(), "two distinct sizes");
    }
}
