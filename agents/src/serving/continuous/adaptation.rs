//! IPA on the fleet: a controller over the pools that serve one name (variant pools,
//! each with an accuracy) that, every `interval_s`, plans which variant serves, on how
//! many replicas, at what `max_num_seqs`, for the load it observed, with the pipeline
//! world's objective and planner ([`crate::adaptation`]): maximise alpha x accuracy -
//! beta x GPUs - gamma x batch - delta x energy per request, subject to the request
//! latency objective `sla_s` and to the replicas carrying the load. `ipa` plans with
//! delta = 0 (accuracy and cost only), `energy_aware` with the delta given, `fixed`
//! applies one plan at the start and keeps it.
//!
//! A variant's profile for the planner comes from its pool's own step-time model: a
//! replica running `b` requests at once answers one in l(b) = b prefills of the
//! workload's mean prompt (in steady state the other requests are replaced about once
//! in a request's life, and their prefills share its steps) + (mean output - 1) decode
//! steps at batch b (mean context), fitted as the planner's quadratic over batches 1,
//! 2, 4, ... up to `batch_cap`. The load planned for is the last interval's arrival
//! rate times `load_margin` (1.25 unless given: replicas sized for 80% of what they
//! carry, an autoscaler's usual target, since the planner sizes them to carry the load
//! exactly and a queue grows at 100%). One
//! replica costs its GPUs (tp) and draws tp x the step power of a decode step at batch
//! 32 (or the cap, if smaller). The plan takes effect as the fleet's own machinery
//! allows: the chosen pool's `max_num_seqs` changes at once on all its replicas, its
//! missing replicas start (cold start) and extra ones drain; the other variants' replicas
//! drain once the chosen pool has its replicas serving (make before break: until then
//! both serve, behind the router).

use infersim_engine::{Context, Observer, ScheduleError, SimDuration, SimTime};
use serde::Deserialize;

use super::{LlmEvent, LlmPool, LlmServing, Mode, PoolRole};
use crate::adaptation::{Limits, Objective, ReplicaCost, Stage, Variant, solve};
use crate::error::ConfigError;
use crate::llm::StepShape;
use crate::requests::{RequestRecord, Task};
use crate::serving::{ServingSample, int_in};

/// `[serving.adaptation]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdaptationTable {
    policy: String,
    serves: Option<String>,
    interval_s: Option<f64>,
    sla_s: f64,
    batch_cap: Option<i64>,
    alpha: Option<f64>,
    beta: Option<f64>,
    gamma: Option<f64>,
    delta: Option<f64>,
    load_margin: Option<f64>,
    fixed: Option<FixedTable>,
}

/// `[serving.adaptation.fixed]`: the one plan of the `fixed` policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedTable {
    pool: String,
    replicas: i64,
    max_num_seqs: i64,
}

/// How the controller plans.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AdaptPolicy {
    /// Re-plan every interval with delta = 0 (IPA: accuracy against cost).
    Ipa,
    /// Re-plan every interval with the objective's delta (energy-aware IPA).
    EnergyAware,
    /// One plan from the start: pool (an index in the configuration's pools),
    /// replicas, max_num_seqs.
    Fixed(usize, u32, u32),
}

/// The variant controller of a fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetAdaptation {
    /// How it plans.
    pub policy: AdaptPolicy,
    /// The variant pools (indices in the configuration's pools), in the stage's order.
    pub pools: Vec<usize>,
    /// Served name whose requests they share.
    pub serves: String,
    /// The planner's stage: one variant per pool, its profile from the pool's step time.
    pub stage: Stage,
    /// Objective weights (delta as given; `ipa` plans with 0).
    pub objective: Objective,
    /// Time between plans (s).
    pub interval_s: f64,
    /// Latency objective of a request (s).
    pub sla_s: f64,
    /// Largest max_num_seqs (a power of two).
    pub batch_cap: u32,
    /// The load planned for is the observed rate times this.
    pub load_margin: f64,
}

impl AdaptationTable {
    /// The controller of `pools` for these tasks; errors name `serving.adaptation.*` or
    /// a pool's `accuracy`.
    pub(super) fn resolve(
        &self,
        pools: &[LlmPool],
        tasks: &[Task],
        names: &[&str],
    ) -> Result<FleetAdaptation, ConfigError> {
        let k = |name: &str| format!("serving.adaptation.{name}");
        let serves = self.serves.clone().unwrap_or_else(|| names.first().map_or(String::new(), |n| n.to_string()));
        let variant_pools: Vec<usize> = (0..pools.len())
            .filter(|&p| pools[p].serves_requests_for(&serves) && pools[p].role == PoolRole::Mixed)
            .collect();
        if variant_pools.is_empty() {
            return Err(ConfigError::invalid(
                k("serves"),
                &serves,
                format!("a name mixed pools serve: {}", names.join(", ")),
            ));
        }
        if let Some(&p) = variant_pools.iter().find(|&&p| pools[p].accuracy.is_none()) {
            return Err(ConfigError::invalid(
                format!("serving.pools[{p}].accuracy"),
                "(missing)",
                "a variant pool's accuracy (a published score)",
            ));
        }
        if let Some(&p) = variant_pools.iter().find(|&&p| pools[p].autoscale.is_some()) {
            return Err(ConfigError::invalid(
                format!("serving.pools[{p}].autoscale"),
                "(given)",
                "none on a variant pool: the controller sizes it",
            ));
        }
        let positive = |name: &str, v: f64, allowed: &'static str| {
            if v.is_finite() && v > 0.0 && v <= 1e9 { Ok(v) } else { Err(ConfigError::invalid(k(name), v, allowed)) }
        };
        let weight = |name: &str, v: Option<f64>, default: f64| {
            let v = v.unwrap_or(default);
            if v.is_finite() && (0.0..=1e9).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::invalid(k(name), v, "a weight from 0 to 1e9"))
            }
        };
        let interval_s = self.interval_s.unwrap_or(300.0);
        if !(interval_s.is_finite() && (1.0..=1e9).contains(&interval_s)) {
            return Err(ConfigError::invalid(k("interval_s"), interval_s, "seconds from 1 to 1e9"));
        }
        let sla_s = positive("sla_s", self.sla_s, "seconds > 0")?;
        let batch_cap = int_in(&k("batch_cap"), self.batch_cap.unwrap_or(256), 1, 65_536)?;
        let load_margin = self.load_margin.unwrap_or(1.25);
        if !(load_margin.is_finite() && (1.0..=100.0).contains(&load_margin)) {
            return Err(ConfigError::invalid(k("load_margin"), load_margin, "a factor from 1 to 100"));
        }
        let objective = Objective {
            alpha: weight("alpha", self.alpha, 1.0)?,
            beta: weight("beta", self.beta, 0.01)?,
            gamma: weight("gamma", self.gamma, 0.0)?,
            delta: weight("delta", self.delta, 0.0)?,
        };
        let policy = match self.policy.as_str() {
            "ipa" => AdaptPolicy::Ipa,
            "energy_aware" if objective.delta > 0.0 => AdaptPolicy::EnergyAware,
            "energy_aware" => {
                return Err(ConfigError::invalid(k("delta"), objective.delta, "> 0 with policy energy_aware"));
            }
            "fixed" => {
                let f = self.fixed.as_ref().ok_or_else(|| {
                    ConfigError::invalid(k("fixed"), "(missing)", "a table: pool, replicas, max_num_seqs")
                })?;
                let pool = variant_pools.iter().copied().find(|&p| pools[p].name == f.pool).ok_or_else(|| {
                    let names: Vec<&str> = variant_pools.iter().map(|&p| pools[p].name.as_str()).collect();
                    ConfigError::invalid(k("fixed.pool"), &f.pool, format!("a variant pool: {}", names.join(", ")))
                })?;
                let replicas = int_in(&k("fixed.replicas"), f.replicas, 1, i64::from(pools[pool].replicas))?;
                AdaptPolicy::Fixed(pool, replicas, int_in(&k("fixed.max_num_seqs"), f.max_num_seqs, 1, 65_536)?)
            }
            other => return Err(ConfigError::invalid(k("policy"), other, "\"ipa\", \"energy_aware\" or \"fixed\"")),
        };
        let (prompt, output) = workload(tasks, names, &serves);
        let variants = variant_pools
            .iter()
            .map(|&p| variant(&pools[p], prompt, output, batch_cap))
            .collect::<Result<Vec<_>, _>>()?;
        let stage = Stage::new(serves.clone(), variants).map_err(|v| {
            ConfigError::invalid(k("batch_cap"), batch_cap, format!("batches enough to fit {v}'s latency (at least 4)"))
        })?;
        Ok(FleetAdaptation {
            policy,
            pools: variant_pools,
            serves,
            stage,
            objective,
            interval_s,
            sla_s,
            batch_cap,
            load_margin,
        })
    }
}

/// The mean prompt (shared prefix included) and output of the requests for `serves`,
/// weighted by the tasks' weights.
fn workload(tasks: &[Task], names: &[&str], serves: &str) -> (f64, f64) {
    let mine = |t: &&Task| t.model.as_deref().map_or(names.first() == Some(&serves), |m| m == serves);
    let total: f64 = tasks.iter().filter(mine).map(|t| t.weight).sum();
    let mean =
        |f: &dyn Fn(&Task) -> f64| tasks.iter().filter(mine).map(|t| t.weight * f(t)).sum::<f64>() / total.max(1e-300);
    let prompt = mean(&|t| t.prompt_tokens.mean() + f64::from(t.shared_prefix_tokens.unwrap_or(0)));
    (prompt, mean(&|t| t.output_tokens.mean()))
}

/// Pool `pool` as one of the planner's variants.
fn variant(pool: &LlmPool, prompt: f64, output: f64, batch_cap: u32) -> Result<Variant, ConfigError> {
    let prompt_tokens = prompt.round().max(1.0) as u32;
    let prefill_s = pool
        .step(&StepShape {
            prefill_tokens: prompt_tokens,
            prefills: 1,
            prefill_pairs: f64::from(prompt_tokens) * (f64::from(prompt_tokens) + 1.0) / 2.0,
            ..StepShape::default()
        })
        .step_s;
    let context = prompt + output / 2.0;
    let decode = |b: u32| StepShape { decodes: b, decode_kv: (f64::from(b) * context) as u64, ..StepShape::default() };
    let points = crate::adaptation::planner::batch_sizes(batch_cap)
        .map(|b| (f64::from(b), f64::from(b) * prefill_s + (output - 1.0).max(0.0) * pool.step(&decode(b)).step_s))
        .collect();
    let busy_w = pool.step(&decode(batch_cap.min(32))).power_w;
    Ok(Variant {
        name: pool.name.clone(),
        accuracy: pool.accuracy.expect("checked: a variant pool has an accuracy"),
        points,
        replica: Some(ReplicaCost { cores: f64::from(pool.tp), busy_w, max_replicas: pool.replicas }),
    })
}

/// The controller's state in a run.
#[derive(Clone, Debug, Default)]
pub(super) struct Adapter {
    /// Requests for the name that had arrived at the last plan.
    arrived_at_plan: u64,
    /// The plan in force: pool, replicas, max_num_seqs.
    plan: Option<(usize, u32, u32)>,
    plans: u64,
    switches: u64,
    accuracy: infersim_engine::stats::Tally,
}

crate::metrics! {
    /// What a fleet's variant controller did.
    #[derive(Clone, Debug, PartialEq)]
    pub struct FleetAdaptationRun {
        /// Mean accuracy of the variants that answered the requests after warm-up.
        variant_accuracy_mean: Option<f64> = "score",
        /// Plans made (a fixed plan once).
        plans: u64 = "plans",
        /// Plans that changed the serving variant.
        variant_switches: u64 = "switches",
    }
}

impl Adapter {
    pub(super) fn results(&self) -> FleetAdaptationRun {
        FleetAdaptationRun {
            variant_accuracy_mean: self.accuracy.mean(),
            plans: self.plans,
            variant_switches: self.switches,
        }
    }
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Time zero: the first plan, from the arrival process's mean rate.
    pub(super) fn start_adapter(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        if self.config.adaptation.is_some() {
            ctx.schedule(SimTime::ZERO, LlmEvent::Adapt)?;
        }
        Ok(())
    }

    /// A served request's variant accuracy, counted after warm-up.
    pub(super) fn adapted_answer(&mut self, replica: Option<u32>, counted: bool) {
        let Some(adapter) = self.adapter.as_mut() else { return };
        let accuracy = replica.and_then(|r| self.config.pools[usize::from(self.replicas[r as usize].pool)].accuracy);
        if let (true, Some(a)) = (counted, accuracy) {
            adapter.accuracy.add(a);
        }
    }

    /// The controller plans for the load since its last plan and applies the plan.
    pub(super) fn on_adapt(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let a = self.config.adaptation.as_ref().expect("a controller");
        let model = self.served_names.iter().position(|n| *n == a.serves).expect("validated: a served name");
        let arrived = self.group_stats[self.config.pools.len() + model].arrivals;
        let adapter = self.adapter.as_mut().expect("a controller");
        let lambda = if now == SimTime::ZERO {
            self.config.arrivals.rate_per_s()
        } else {
            (arrived - adapter.arrived_at_plan) as f64 / a.interval_s
        };
        adapter.arrived_at_plan = arrived;
        let plan = match a.policy {
            AdaptPolicy::Fixed(pool, replicas, batch) => adapter.plan.unwrap_or((pool, replicas, batch)),
            policy => {
                let objective = Objective {
                    delta: if policy == AdaptPolicy::Ipa { 0.0 } else { a.objective.delta },
                    ..a.objective
                };
                // Every variant carries its own GPUs, power and slots (its ReplicaCost);
                // the limits' replica terms only bound them.
                let limits = Limits {
                    sla_s: a.sla_s,
                    batch_cap: a.batch_cap,
                    max_replicas: u32::MAX,
                    cores_per_replica: 1.0,
                    busy_w: 0.0,
                };
                let load = (lambda * a.load_margin).max(1e-9);
                let chosen = solve(std::slice::from_ref(&a.stage), load, &objective, &limits).stages[0];
                let pool = a.pools[chosen.variant];
                (pool, chosen.replicas, chosen.batch)
            }
        };
        // A fixed plan is made once; later intervals only finish applying it.
        if !matches!(a.policy, AdaptPolicy::Fixed(..)) || adapter.plan.is_none() {
            adapter.plans += 1;
        }
        if adapter.plan.is_some_and(|(p, _, _)| p != plan.0) {
            adapter.switches += 1;
        }
        adapter.plan = Some(plan);
        self.apply_plan(plan, ctx)?;
        let next = now.checked_add(SimDuration::from_secs_f64(a.interval_s)?).ok_or(ScheduleError::Overflow)?;
        if next < self.horizon {
            ctx.schedule(next, LlmEvent::Adapt)?;
        }
        Ok(())
    }

    /// Pool `pool` to `replicas` at `max_num_seqs`; the other variants drain once it
    /// has them serving.
    fn apply_plan(
        &mut self,
        (pool, replicas, batch): (usize, u32, u32),
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let a = self.config.adaptation.as_ref().expect("a controller");
        let pool_of: Vec<usize> = self.replicas.iter().map(|s| usize::from(s.pool)).collect();
        let slots = |p: usize| (0..pool_of.len()).filter(|&r| pool_of[r] == p).collect::<Vec<usize>>();
        let mine = slots(pool);
        // A replica's planned steps admit nothing, so they run as planned under the
        // new limit.
        for &r in &mine {
            self.replicas[r].engine.set_max_num_seqs(batch);
        }
        let up =
            |s: &Self, r: usize| matches!(s.replicas[r].mode, Mode::Serving | Mode::Starting(_)) && !s.life.is_down(r);
        let mut have = mine.iter().filter(|&&r| up(self, r)).count() as u32;
        // Draining replicas come back first; then slots that are off start.
        for &r in &mine {
            if have < replicas && self.replicas[r].mode == Mode::Draining && !self.life.is_down(r) {
                self.set_mode(r, Mode::Serving);
                have += 1;
            }
        }
        for &r in &mine {
            if have < replicas && self.replicas[r].mode == Mode::Off && !self.life.is_down(r) {
                self.cold_start(r, ctx)?;
                have += 1;
            }
        }
        // Extra replicas drain, the least loaded first.
        let serving: Vec<usize> = mine.iter().copied().filter(|&r| self.replicas[r].mode == Mode::Serving).collect();
        let extra = (serving.len() as u32).saturating_sub(replicas) as usize;
        self.drain_least_loaded(serving, extra, ctx)?;
        // Make before break: the other variants go once this one serves in full.
        let ready = mine.iter().filter(|&&r| self.accepting(r)).count() as u32 >= replicas;
        if ready {
            for &p in a.pools.iter().filter(|&&p| p != pool) {
                for r in slots(p) {
                    if self.replicas[r].mode == Mode::Serving {
                        self.set_mode(r, Mode::Draining);
                        self.kick(r, ctx)?;
                    } else {
                        self.cancel_start(r, ctx);
                    }
                }
            }
        }
        Ok(())
    }
}
