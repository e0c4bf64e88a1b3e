//! A replica's engine iterations: a step starts on an idle replica that has work (its
//! shape planned by the replica, its time from the pool's step-time model, its power
//! from what it asks of the GPUs, within a cap) and ends one event later, handing back
//! only first and last tokens.
//!
//! Steps are coalesced (`serving.coalesce_steps`, on by default): a replica in steady
//! decode (its running sequences all decoding, nothing waiting) plans the steps up to
//! its next token event and posts one event at the end of the last. Anything that
//! reads or changes the replica before then runs the planned steps begun by then, at
//! their own times, with the same outcome as their own events
//! ([`LlmServing::materialise`]); a request
//! queued there also ends the run at the step in flight ([`LlmServing::cut_run`]),
//! and a failure stops it ([`LlmServing::stop_steps`]). The results are those of one
//! event per step; the `events` metric counts the coalesced steps as the events they
//! stand for.

use infersim_engine::{Context, Observer, ScheduleError, SimDuration, SimTime};

use super::PoolStep;
use super::{LlmEvent, LlmServing, Mode};
use crate::llm::{StepTokens, TokenEvent};
use crate::requests::{RequestOutcome, RequestRecord};
use crate::serving::ServingSample;

/// The most steps planned ahead in one run: enough that a replica in steady decode
/// runs from one token event to the next on one event, few enough that a run cut
/// short wastes little planning (each planned step is timed when planned and again
/// when run).
const MAX_RUN_STEPS: usize = 16;

/// The steps planned after the one in flight on a replica, in a run of steady decode:
/// how many, and when the next begins (the end of the one in flight). Their shapes
/// follow from the replica's state ([`crate::llm::Replica::step_steady`]) and their
/// times from the pool's model, so that only these two numbers are kept: a replica
/// visited reads nothing more than its own state.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Run {
    pub left: u32,
    next_start: SimTime,
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Starts a step on an idle replica that has work.
    pub(super) fn kick(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        if self.life.is_down(r) || self.replicas[r].step.is_some() {
            return Ok(());
        }
        let now = ctx.now();
        let pool = self.pool(r);
        let idle_w = pool.gpu.idle_w * f64::from(pool.tp);
        let scheduled = self.replicas[r].engine.schedule();
        let Some(shape) = scheduled else {
            if matches!(self.replicas[r].mode, Mode::Serving | Mode::Draining | Mode::ToTrain) {
                self.set_power(now, r, idle_w);
            }
            self.off_if_drained(r, now);
            if self.replicas[r].mode == Mode::ToTrain
                && self.replicas[r].engine.waiting() + self.replicas[r].engine.running() == 0
            {
                self.train(r, ctx)?;
            }
            return Ok(());
        };
        let step = pool.step(&shape);
        self.begin_step(r, now, (shape.prefill_tokens, shape.tokens()), step);
        let pool = Some(usize::from(self.replicas[r].pool));
        let mut admitted = std::mem::take(&mut self.admitted);
        admitted.extend_from_slice(self.replicas[r].engine.first_admitted());
        for &(key, cached_tokens) in &admitted {
            let request = &mut self.requests[key];
            if request.first_scheduled.is_none() {
                request.first_scheduled = Some(now);
                request.cached_tokens = Some(cached_tokens);
                if let Some(t) = request.timeout.take() {
                    ctx.cancel(t);
                }
                if request.arrival >= self.warmup {
                    let (prompt, model) = (u64::from(request.prompt), Some(usize::from(request.model)));
                    self.tally(true, pool, model, |s| {
                        s.admitted_prompt_tokens += prompt;
                        s.admitted_cached_tokens += u64::from(cached_tokens);
                    });
                }
            }
        }
        admitted.clear();
        self.admitted = admitted;
        let at = now.checked_add(SimDuration::from_secs_f64(step.step_s)?).ok_or(ScheduleError::Overflow)?;
        let at = self.plan_run(r, at)?;
        self.replicas[r].step = Some(ctx.schedule(at, LlmEvent::StepDone(r as u32))?);
        Ok(())
    }

    /// Accounts for a step that starts on replica `r` at `now` with `(prompt tokens,
    /// tokens)`: its power, its energy for the sequences in it to share, and the
    /// per-step statistics.
    fn begin_step(&mut self, r: usize, now: SimTime, (prompt_tokens, tokens): (u32, u32), step: PoolStep) {
        let PoolStep { step_s, power_w, throttled, outside_table: outside } = step;
        self.set_power(now, r, power_w);
        self.replicas[r].engine.set_step_energy(power_w * step_s, tokens);
        let (running, kv) = (self.replicas[r].engine.running() as u64, self.replicas[r].engine.kv());
        let usage = kv.usage();
        let usage_fixed = fixed_share(kv.usable_blocks() - kv.free_blocks(), kv.usable_blocks());
        // A step's statistics are its pool's; the fleet's are gathered from the pools
        // ([`Stats::add_steps`]).
        let stats = &mut self.group_stats[usize::from(self.replicas[r].pool)];
        stats.steps += 1;
        stats.steps_outside_table += u64::from(outside);
        stats.steps_throttled += u64::from(throttled);
        stats.prompt_tokens += u64::from(prompt_tokens);
        stats.batch_tokens_sum += u64::from(tokens);
        stats.running_sum += running;
        stats.kv_usage_sum += usage_fixed;
        stats.kv_usage_max = stats.kv_usage_max.max(usage);
    }

    /// The end of the run of steps that begins with the one just started on replica
    /// `r`, which ends at `first_end`: with steps coalesced, the steady-decode steps
    /// that follow it up to the next token event ([`Replica::steady_shapes`]) are
    /// planned here, each timed by the pool's model, and run only when something
    /// reaches the replica or the run ends ([`Self::materialise`], which times each
    /// again the same way rather than keep the times).
    fn plan_run(&mut self, r: usize, first_end: SimTime) -> Result<SimTime, ScheduleError> {
        if !self.config.coalesce_steps {
            return Ok(first_end);
        }
        let mut shapes = std::mem::take(&mut self.run_shapes);
        shapes.clear();
        self.replicas[r].engine.steady_shapes(MAX_RUN_STEPS, &mut shapes);
        let pool = self.pool(r);
        let mut end = first_end;
        for shape in &shapes {
            end =
                end.checked_add(SimDuration::from_secs_f64(pool.step(shape).step_s)?).ok_or(ScheduleError::Overflow)?;
        }
        self.replicas[r].run = Run { left: shapes.len() as u32, next_start: first_end };
        self.run_shapes = shapes;
        Ok(end)
    }

    /// Runs replica `r`'s planned steps that began by `until`, each at its own time
    /// (the one in flight ends, the next starts): [`Replica::step_steady`] for the
    /// scheduler's part, which does what `complete_step` then `schedule` would, and
    /// the same timing and accounting as a step event's, so that the replica and the
    /// statistics are what they would be if every step had had its own event.
    pub(super) fn materialise(&mut self, r: usize, until: SimTime) {
        while let Run { left: 1.., next_start: start } = self.replicas[r].run
            && start <= until
        {
            // What complete_step then schedule would do, in steady decode.
            let (produced, shape) = self.replicas[r].engine.step_steady(start.as_nanos());
            self.count_tokens(r, produced);
            let step = self.pool(r).step(&shape);
            self.begin_step(r, start, (0, shape.decodes), step);
            let run = &mut self.replicas[r].run;
            run.left -= 1;
            // The sum plan_run took without overflow.
            run.next_start = start + SimDuration::from_secs_f64(step.step_s).expect("timed when planned");
            self.coalesced_steps += 1;
        }
    }

    /// Materialises every replica's planned steps that began by `until`.
    pub(super) fn materialise_all(&mut self, until: SimTime) {
        for r in 0..self.replicas.len() {
            self.materialise(r, until);
        }
    }

    /// Ends replica `r`'s run of planned steps at the step in flight now, before a
    /// request is queued there (the only change a run's steps would not take as they
    /// are: a run's steps admit nothing, so a new batch limit, say, waits for the
    /// request that cuts the run): that step keeps its end, as an event of its own,
    /// and the steps planned after it are dropped (they are planned again from the
    /// new state).
    pub(super) fn cut_run(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        self.materialise(r, ctx.now());
        let state = &mut self.replicas[r];
        let Run { left: 1.., next_start: end } = state.run else { return Ok(()) };
        state.run.left = 0;
        if let Some(event) = state.step.take() {
            ctx.cancel(event);
        }
        self.replicas[r].step = Some(ctx.schedule(end, LlmEvent::StepDone(r as u32))?);
        Ok(())
    }

    /// Stops replica `r`'s steps now (it failed or left): the steps begun by now are
    /// run, the step in flight is left as it is for the caller to drain, and the rest
    /// of the plan and the step's event are dropped.
    pub(super) fn stop_steps(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) {
        self.materialise(r, ctx.now());
        self.replicas[r].run.left = 0;
        if let Some(step) = self.replicas[r].step.take() {
            ctx.cancel(step);
        }
    }

    /// Counts the tokens a step of replica `r` produced, and their inter-token
    /// latencies.
    fn count_tokens(&mut self, r: usize, produced: StepTokens) {
        let engine = &self.replicas[r].engine;
        let stats = &mut self.group_stats[usize::from(self.replicas[r].pool)];
        stats.output_tokens += u64::from(produced.tokens);
        stats.counted_output_tokens += u64::from(produced.measured_tokens);
        for &(itl_ns, n) in engine.step_itls() {
            stats.itl.record_n(SimDuration::from_nanos(itl_ns), u64::from(n));
        }
    }

    pub(super) fn on_step_done(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        // A run's steps before its last, then the last, whose end this is.
        self.materialise(r, now);
        debug_assert_eq!(self.replicas[r].run.left, 0, "a run ends with its last step");
        debug_assert!(
            !self.config.coalesce_steps || self.replicas[r].run.next_start == now,
            "whose end is this event's time, timed again as planned"
        );
        self.replicas[r].step = None;
        let mut events = std::mem::take(&mut self.token_events);
        let engine = &mut self.replicas[r].engine;
        let produced =
            engine.complete_step(now.as_nanos(), |seq, e| events.push((seq.key, e, seq.preemptions, seq.energy_j)));
        self.count_tokens(r, produced);
        self.refresh_load(r);
        // Only first and last tokens reach a request's record: the others are counted
        // above, so a step's cost here does not grow with the sequences it ran.
        for &(id, event, preemptions, energy_j) in &events {
            let request = &mut self.requests[id];
            if request.first_token.is_none() {
                request.first_token = Some(now);
                let ttft = now - request.arrival;
                self.note_ttft(r, ttft.as_secs_f64());
                if let Some(rt) = self.retrainer.as_mut()
                    && self.requests[id].arrival >= self.warmup
                {
                    rt.note_ttft(now, ttft);
                }
            }
            let request = &mut self.requests[id];
            request.preemptions = preemptions;
            if event == TokenEvent::Finished {
                // Its sequence leaves this replica with its share of the steps here.
                request.energy_j += energy_j;
                if self.replicas[r].prefill && self.requests[id].output > 1 {
                    self.send_kv(id, ctx)?;
                } else {
                    self.finish(id, RequestOutcome::Served, ctx)?;
                }
            }
        }
        events.clear();
        self.token_events = events;
        self.kick(r, ctx)
    }
}

/// `part / whole` in units of 2^-64 (0 for an empty whole): a share that adds up
/// exactly, whatever the order.
fn fixed_share(part: u32, whole: u32) -> u128 {
    if whole == 0 { 0 } else { (u128::from(part) << 64) / u128::from(whole) }
}

/// The mean of a per-step sum over `steps` steps (`None` before the first), shares
/// given in units of 2^-64 with `scale`.
pub(super) fn step_mean(sum: u128, steps: u64, scale: f64) -> Option<f64> {
    (steps > 0).then(|| sum as f64 * scale / steps as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_shares_add_up_in_any_order_and_average_to_the_share() {
        let shares = [(1, 3), (2, 3), (5, 7), (0, 9), (9, 9)];
        let forward: u128 = shares.iter().map(|&(p, w)| fixed_share(p, w)).sum();
        let backward: u128 = shares.iter().rev().map(|&(p, w)| fixed_share(p, w)).sum();
        assert_eq!(forward, backward);
        let mean = step_mean(forward, 5, 2f64.powi(-64)).unwrap();
        let exact = (1.0 / 3.0 + 2.0 / 3.0 + 5.0 / 7.0 + 0.0 + 1.0) / 5.0;
        assert!((mean - exact).abs() < 1e-15, "{mean} vs {exact}");
        assert_eq!(fixed_share(3, 0), 0);
        assert_eq!(step_mean(0, 0, 1.0), None);
    }
}
