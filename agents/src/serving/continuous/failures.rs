//! Replicas that fail and are repaired: a replica fails with the first of its GPUs
//! (each draws its time to failure from its own stream), its requests are retried on
//! another replica of their group or lost, and it comes back with an empty cache.

use infersim_engine::{Context, Id, Observer, ScheduleError, SimDuration, SimTime, StreamId};

use super::routing::Routed;
use super::{LlmEvent, LlmRequest, LlmServing, Mode, ToRoute};
use crate::failures::{DOWN_POWER_W, FAILURE_STREAM_BASE, first_failure};
use crate::llm::Sequence;
use crate::llm::kv::Chain;
use crate::requests::{RequestOutcome, RequestRecord};
use crate::serving::ServingSample;

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Schedules replica `r`'s next failure, if it falls before arrivals stop: each of
    /// its GPUs draws a time to failure from its own stream, and the replica fails with
    /// the first.
    pub(super) fn schedule_failure(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let pool = self.pool(r);
        let Some(failures) = pool.failures else { return Ok(()) };
        let first_gpu = self.replicas[r].first_gpu;
        let streams = (0..pool.tp).map(|k| gpu_failure_stream(first_gpu + k));
        let (gpu, up_s) = first_failure(streams.map(|stream| failures.time_to_failure_s(ctx.rng(stream))));
        self.replicas[r].failed_gpu = gpu as u32;
        let at = ctx.now().checked_add(SimDuration::from_secs_f64(up_s)?).unwrap_or(SimTime::MAX);
        if at < self.horizon {
            ctx.schedule(at, LlmEvent::Fails(r as u32))?;
        }
        Ok(())
    }

    pub(super) fn on_fails(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.stop_steps(r, ctx);
        self.life.fail(r, now);
        let pool = usize::from(self.replicas[r].pool);
        self.group_stats[pool].gpu_failures += 1;
        let mut lost = Vec::new();
        self.replicas[r].engine.drain(|s, chain| lost.push((s, chain)));
        self.refresh_load(r);
        self.set_power(now, r, DOWN_POWER_W);
        for (s, chain) in lost {
            let request = &mut self.requests[s.key];
            request.preemptions = s.preemptions;
            request.energy_j += s.energy_j;
            self.retry_or_lose(s, chain, r, ctx)?;
        }
        let failures = self.pool(r).failures.expect("failures are configured");
        let stream = gpu_failure_stream(self.replicas[r].first_gpu + self.replicas[r].failed_gpu);
        let repair_s = failures.time_to_repair_s(ctx.rng(stream));
        ctx.schedule(SimDuration::from_secs_f64(repair_s)?, LlmEvent::Repaired(r as u32))?;
        Ok(())
    }

    /// A request whose replica `failed` failed: sent to another up replica of the same
    /// pool while it has retries left (it goes on from where it was, recomputing its
    /// tokens there), else lost.
    fn retry_or_lose(
        &mut self,
        s: Sequence<Id<LlmRequest>>,
        chain: Option<Chain>,
        failed: usize,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let id = s.key;
        if self.validator.is_some() {
            return self.miner_dropped(s, chain, ctx);
        }
        if self.requests[id].retries >= self.pool(failed).retries {
            return self.finish(id, RequestOutcome::Lost, ctx);
        }
        match self.round_every {
            Some(_) => self.wait_for_round(ToRoute::Retry { seq: s, chain, failed }, ctx),
            None => self.retry(s, chain, failed, ctx),
        }
    }

    /// Sends a request whose replica `failed` failed to another up replica of its
    /// routing group (lost if none is up).
    pub(super) fn retry(
        &mut self,
        s: Sequence<Id<LlmRequest>>,
        chain: Option<Chain>,
        failed: usize,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let id = s.key;
        let group = self.replicas[failed].group as usize;
        let routed =
            Routed { chain: chain.as_deref().unwrap_or(&[]), prompt: self.requests[id].prompt, previous: None };
        let Some(replica) = self.route(group, routed, ctx) else {
            return self.finish(id, RequestOutcome::Lost, ctx);
        };
        self.cut_run(replica as usize, ctx)?;
        let request = &mut self.requests[id];
        request.retries += 1;
        request.replica = Some(replica);
        let model = Some(usize::from(request.model));
        self.tally(true, Some(usize::from(self.replicas[failed].pool)), model, |s| s.retries += 1);
        let booked = self.booking(replica as usize, chain.as_deref().unwrap_or(&[]), s.prompt);
        let moved = s.moved().booking(booked);
        match chain {
            Some(chain) => self.replicas[replica as usize].engine.enqueue_with_chain(moved, chain),
            None => self.replicas[replica as usize].engine.enqueue(moved),
        }
        self.refresh_load(replica as usize);
        self.kick(replica as usize, ctx)
    }

    pub(super) fn on_repaired(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.life.repair(r, now);
        self.refresh_load(r);
        let pool = self.pool(r);
        let idle_w = if self.replicas[r].mode == Mode::Off { 0.0 } else { pool.gpu.idle_w * f64::from(pool.tp) };
        self.set_power(now, r, idle_w);
        self.schedule_failure(r, ctx)?;
        self.kick(r, ctx)
    }
}

/// The failure stream of GPU `gpu` of the fleet: GPUs are numbered pool by pool and
/// replica by replica, so a fleet of one-GPU replicas uses the streams of its replicas.
fn gpu_failure_stream(gpu: u32) -> StreamId {
    StreamId(FAILURE_STREAM_BASE + gpu)
}
