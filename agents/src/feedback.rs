//! User scores (the inference confidence score, ICS): a share of users rate an answer
//! from 1 to 5 by how good it seemed to them. Shared by every world that has users.
//!
//! A user who rates sees the answer's quality (0..1) through Gaussian noise and gives
//! `round(1 + 4 x (quality + noise_sd x N(0, 1)))`, kept within 1..5.
//!
//! ```
//! use infersim_agents::feedback::user_score;
//! let mut rng = infersim_engine::derive_stream(1, 0, infersim_engine::StreamId(0));
//! assert_eq!(user_score(1.0, 0.0, 1.0, &mut rng), Some(5.0));
//! assert_eq!(user_score(0.5, 0.0, 0.0, &mut rng), None, "nobody rates");
//! ```

use infersim_engine::SimRng;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

/// The score a user gives an answer of `quality`, if this user rates at all (with
/// probability `fraction`); draws from `rng` only when `fraction > 0`.
pub fn user_score(quality: f64, noise_sd: f64, fraction: f64, rng: &mut SimRng) -> Option<f64> {
    if fraction > 0.0 && rng.random::<f64>() < fraction {
        let noise: f64 = StandardNormal.sample(rng);
        Some((1.0 + 4.0 * (quality + noise_sd * noise)).round().clamp(1.0, 5.0))
    } else {
        None
    }
}
