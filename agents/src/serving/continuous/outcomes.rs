//! How a request leaves the fleet: served (its latencies and objectives counted, its
//! model's drift applied), timed out, rejected or lost; its record; a closed-loop
//! client's next request.

use infersim_engine::{Context, Id, Observer, ScheduleError, SimDuration, SimTime};

use super::{LlmEvent, LlmRequest, LlmServing};
use crate::arrivals::ArrivalProcess;
use crate::power::J_PER_KWH;
use crate::requests::{RequestOutcome, RequestRecord};
use crate::serving::ServingSample;

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Counts a served request's latencies and objectives (when after warm-up);
    /// returns whether it met its end-to-end objective.
    pub(super) fn count_served(&mut self, r: &LlmRequest, now: SimTime, counted: bool) -> Result<bool, ScheduleError> {
        let task = &self.config.tasks[usize::from(r.task)];
        let first = r.first_token.unwrap_or(now);
        let ttft = first - r.arrival;
        let e2e = now - r.arrival;
        let tpot_s = (r.output > 1).then(|| (now - first).as_secs_f64() / f64::from(r.output - 1));
        let slo_met = e2e.as_secs_f64() <= task.slo_s;
        let good = task.ttft_slo_s.is_none_or(|s| ttft.as_secs_f64() <= s)
            && task.tpot_slo_s.is_none_or(|s| tpot_s.is_none_or(|t| t <= s))
            && (task.ttft_slo_s.is_some() || task.tpot_slo_s.is_some() || slo_met);
        let tpot = tpot_s.map(SimDuration::from_secs_f64).transpose()?;
        let (output, model) = (u64::from(r.output), usize::from(r.model));
        // A model's tokens are counted as its requests finish (a pool's, as its steps
        // produce them).
        self.tally(false, None, Some(model), |s| {
            s.output_tokens += output;
            s.counted_output_tokens += if counted { output } else { 0 };
        });
        self.tally(true, self.pool_of(r.replica), Some(model), |s| {
            s.last_finish = s.last_finish.max(now);
            if counted {
                s.served += 1;
                s.slo_met += u64::from(slo_met);
                s.goodput += u64::from(good);
                s.ttft.record(ttft);
                s.ttft_mean.add(ttft);
                s.e2e.record(e2e);
                s.e2e_mean.add(e2e);
                if let (Some(t), Some(d)) = (tpot_s, tpot) {
                    s.tpot.record(d);
                    s.tpot_mean.add(t);
                }
            }
        });
        if counted && let Some(rt) = self.retrainer.as_mut() {
            rt.note_served(now, good, slo_met);
        }
        Ok(slo_met)
    }

    /// Records a request that left (served or not) and frees its slot; a closed-loop
    /// client then sends its next request.
    pub(super) fn finish(
        &mut self,
        id: Id<LlmRequest>,
        outcome: RequestOutcome,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let r = self.requests.remove(id);
        if let Some(t) = r.timeout {
            ctx.cancel(t);
        }
        self.forget_attempt(&r);
        let counted = r.arrival >= self.warmup;
        let (mut slo_met, mut quality, mut user_score) = (false, None, None);
        if outcome == RequestOutcome::Served {
            slo_met = self.count_served(&r, now, counted)?;
            (quality, user_score) = self.served_drifts(usize::from(r.model), r.output, counted, ctx);
            if quality.is_none() {
                quality = self.miner_answered(&r, slo_met, counted, ctx);
            }
            self.adapted_answer(r.replica, counted);
        } else if counted {
            self.tally(true, self.pool_of(r.replica), Some(usize::from(r.model)), |s| match outcome {
                RequestOutcome::TimedOut => s.timed_out += 1,
                RequestOutcome::Lost => s.lost += 1,
                RequestOutcome::Rejected => s.rejected += 1,
                RequestOutcome::Served => {}
            });
        }
        let (energy_j, preemptions) = (r.energy_j, u64::from(r.preemptions));
        self.tally(false, None, Some(usize::from(r.model)), |s| {
            s.requests_energy_j.add(energy_j);
            s.requests_preemptions += preemptions;
        });
        let secs = |t: Option<SimTime>| t.map(SimTime::as_secs_f64);
        self.observer.observe(RequestRecord {
            request_id: r.id,
            task: r.task,
            tokens: r.prompt + r.output,
            truncated: false,
            history_tokens: 0,
            quality,
            user_score,
            arrival_s: r.arrival.as_secs_f64(),
            start_s: secs(r.first_scheduled),
            finish_s: Some(now.as_secs_f64()),
            node: r.replica.map(|replica| self.replicas[replica as usize].node),
            gpu: None,
            batch_size: None,
            energy_kwh: r.energy_j / J_PER_KWH,
            outcome,
            slo_met,
            warmup: !counted,
            input_tokens: Some(r.prompt),
            output_tokens: Some(r.output),
            first_scheduled_s: secs(r.first_scheduled),
            first_token_s: secs(r.first_token),
            preemptions: Some(r.preemptions),
            cached_tokens: r.cached_tokens,
            replica: r.replica,
            pool: r.replica.map(|replica| self.replicas[replica as usize].pool),
        });
        if let Some(session) = r.session {
            self.turn_ended(session, &r, outcome, ctx)?;
        }
        if let Some(client) = r.client
            && let ArrivalProcess::Closed { requests, think_time_s, .. } = self.config.arrivals
            && self.sent < requests
        {
            let at = now.checked_add(SimDuration::from_secs_f64(think_time_s)?).ok_or(ScheduleError::Overflow)?;
            if at < self.horizon {
                ctx.schedule(at, LlmEvent::ClientSends(client))?;
            }
        }
        Ok(())
    }

    pub(super) fn on_timeout(
        &mut self,
        id: Id<LlmRequest>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        self.requests[id].timeout = None;
        if self.time_out_before_round(id, ctx)? {
            return Ok(());
        }
        let replica = self.requests[id].replica.expect("a request with a timeout was routed") as usize;
        if let Some(seq) = self.replicas[replica].engine.withdraw(|k| *k == id) {
            // A replica with a request waiting plans no steps ahead.
            debug_assert_eq!(self.replicas[replica].run.left, 0, "a run with a request waiting");
            // Preempted before it gave up, it may have run.
            self.requests[id].energy_j += seq.energy_j;
            self.refresh_load(replica);
            self.finish(id, RequestOutcome::TimedOut, ctx)?;
        }
        Ok(())
    }
}
