//! Power drawn over time, integrated into energy and carbon: shared by every world
//! that accounts power (GPUs, nodes, replicas).
//!
//! Power is piecewise constant between the instants a world reports it, so energy is
//! the sum of power x duration and carbon the sum of power x the integral of the grid's
//! intensity over the same interval (exact for a daily cycle or a recorded series,
//! whatever the events in between).
//!
//! ```
//! use infersim_agents::grid::CarbonIntensity;
//! use infersim_agents::power::PowerMeter;
//! use infersim_engine::SimTime;
//! let grid = CarbonIntensity::Constant { kg_per_kwh: 0.5 };
//! let mut meter = PowerMeter::default();
//! meter.hold(SimTime::from_secs_f64(3600.0)?, 1000.0, &grid); // 1 kW for an hour
//! let two_h = SimTime::from_secs_f64(7200.0)?;
//! assert_eq!(meter.energy_kwh_at(two_h, 500.0), 1.5); // then 0.5 kW for an hour
//! assert_eq!(meter.carbon_kg_at(two_h, 500.0, &grid), 0.75);
//! # Ok::<(), infersim_engine::ScheduleError>(())
//! ```

use infersim_engine::SimTime;

use crate::error::hours;
use crate::grid::CarbonIntensity;

/// Joules in a kilowatt-hour.
pub(crate) const J_PER_KWH: f64 = 3.6e6;

/// Energy and carbon of a power level that changes at known instants.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PowerMeter {
    /// The instant up to which energy is integrated.
    since: SimTime,
    /// Energy up to `since` (J).
    energy_j: f64,
    /// Carbon up to `since` (g: W x h x kg/kWh).
    carbon_g: f64,
}

impl PowerMeter {
    /// Integrates `power_w`, the power held since the last call, up to `now`.
    pub fn hold(&mut self, now: SimTime, power_w: f64, grid: &CarbonIntensity) {
        self.energy_j += power_w * (now - self.since).as_secs_f64();
        self.carbon_g += power_w * grid.integral(hours(self.since), hours(now));
        self.since = now;
    }

    /// Adds `power_w` drawn over [`from`, `to`] on top of what is held (a batch's
    /// power above idle, say).
    pub fn add(&mut self, from: SimTime, to: SimTime, power_w: f64, grid: &CarbonIntensity) {
        self.energy_j += power_w * (to - from).as_secs_f64();
        self.carbon_g += power_w * grid.integral(hours(from), hours(to));
    }

    /// Energy up to `t` (J), `power_w` being held since the last call.
    pub(crate) fn energy_j_at(&self, t: SimTime, power_w: f64) -> f64 {
        self.energy_j + power_w * (t - self.since).as_secs_f64()
    }

    /// Energy up to `t` (kWh), `power_w` being held since the last call.
    pub fn energy_kwh_at(&self, t: SimTime, power_w: f64) -> f64 {
        self.energy_j_at(t, power_w) / J_PER_KWH
    }

    /// Carbon up to `t` (kg CO2e), `power_w` being held since the last call.
    pub fn carbon_kg_at(&self, t: SimTime, power_w: f64, grid: &CarbonIntensity) -> f64 {
        (self.carbon_g + power_w * grid.integral(hours(self.since), hours(t))) / 1000.0
    }

    /// The instant up to which energy is integrated.
    pub fn since(&self) -> SimTime {
        self.since
    }
}
