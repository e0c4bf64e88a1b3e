//! Distributions described the way scenarios describe them.

use rand_distr::LogNormal;

/// The log-normal distribution with mean `mean` and coefficient of variation `cv`
/// (standard deviation over mean): sigma^2 = ln(1 + cv^2), mu = ln(mean) - sigma^2 / 2.
///
/// Callers validate `mean > 0` and `cv >= 0`, both finite; anything else is a broken
/// invariant and panics.
///
/// ```
/// use infersim_agents::distributions::lognormal_from_mean_cv;
/// use rand_distr::Distribution;
/// let d = lognormal_from_mean_cv(2.0, 0.0);
/// assert!((d.sample(&mut infersim_engine::derive_stream(1, 0, infersim_engine::StreamId(0))) - 2.0).abs() < 1e-12);
/// ```
pub fn lognormal_from_mean_cv(mean: f64, cv: f64) -> LogNormal<f64> {
    let sigma2 = cv.mul_add(cv, 1.0).ln();
    LogNormal::new(mean.ln() - sigma2 / 2.0, sigma2.sqrt())
        .unwrap_or_else(|e| panic!("log-normal with mean {mean} and cv {cv} was not validated: {e}"))
}
