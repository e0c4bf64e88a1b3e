//! GPUs failing and being repaired, and the fleet's power as they come and go.

use super::*;

/// The random stream of one GPU's failures and repairs.
pub(super) fn failure_stream(gpu: Id<Gpu>) -> StreamId {
    StreamId(FAILURE_STREAM_BASE + gpu.index())
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> BatchedServing<O, S> {
    /// IT power (W) with `busy` GPUs serving and `down` GPUs off.
    pub(super) fn it_power_w(&self, busy: u32, down: u32) -> f64 {
        let c = &self.config;
        f64::from(busy) * c.gpu_max_w
            + f64::from(c.gpus() - busy - down) * c.gpu_idle_w
            + f64::from(c.nodes) * c.node_baseline_w
    }

    /// Integrates IT energy up to `now`, then changes the number of busy GPUs.
    pub(super) fn set_busy(&mut self, now: SimTime, busy: u32) {
        self.set_power_state(now, busy, self.down_gpus);
    }

    /// Integrates IT energy up to `now`, then changes the numbers of busy and down GPUs.
    pub(super) fn set_power_state(&mut self, now: SimTime, busy: u32, down: u32) {
        let power_w = self.it_power_w(self.busy_gpus, self.down_gpus);
        self.it.hold(now, power_w, &self.config.grid);
        self.busy_gpus = busy;
        self.down_gpus = down;
    }

    /// A GPU fails: its batch, if any, is lost; it is repaired later.
    pub(super) fn on_gpu_fails(
        &mut self,
        gpu_id: Id<Gpu>,
        ctx: &mut Context<'_, BatchedEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let failures = self.config.failures.expect("failure events exist only with failures configured");
        self.life.as_mut().expect("with failures").fail(gpu_id.index() as usize, now);
        let batch = std::mem::take(&mut self.gpus[gpu_id].batch);
        let mut wasted_kwh = 0.0;
        let busy = if let Some(done) = self.gpus[gpu_id].done.take() {
            ctx.cancel(done);
            let busy_s = (now - self.requests[batch[0]].start).as_secs_f64();
            self.gpus[gpu_id].busy_s += busy_s;
            wasted_kwh = self.config.gpu_max_w * busy_s / J_PER_KWH / batch.len() as f64;
            self.busy_gpus - 1
        } else {
            self.busy_gpus
        };
        self.set_power_state(now, busy, self.down_gpus + 1);
        let node_id: Id<Node> = Id::from_index(self.gpus[gpu_id].node);
        self.nodes[node_id].set_free(self.gpus[gpu_id].place, false);
        self.add_load(node_id, -(batch.len() as i64));
        for r in batch {
            if self.requests[r].arrival >= self.warmup {
                self.stats.lost += 1;
            }
            self.record_unserved(r, RequestOutcome::Lost, Some(now), wasted_kwh);
        }
        let repair_s = failures.time_to_repair_s(ctx.rng(failure_stream(gpu_id)));
        ctx.schedule(SimDuration::from_secs_f64(repair_s)?, BatchedEvent::GpuRepaired(gpu_id))?;
        Ok(())
    }

    /// A GPU is back: it may fail again (until arrivals stop) and takes work at once.
    pub(super) fn on_gpu_repaired(
        &mut self,
        gpu_id: Id<Gpu>,
        ctx: &mut Context<'_, BatchedEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.life
            .as_mut()
            .expect("repair events exist only with failures configured")
            .repair(gpu_id.index() as usize, now);
        self.set_power_state(now, self.busy_gpus, self.down_gpus - 1);
        let node_id: Id<Node> = Id::from_index(self.gpus[gpu_id].node);
        self.nodes[node_id].set_free(self.gpus[gpu_id].place, true);
        self.schedule_failure(gpu_id, ctx)?;
        self.dispatch(node_id, ctx)
    }

    /// Schedules the next failure of a GPU, if it falls before arrivals stop.
    pub(super) fn schedule_failure(
        &mut self,
        gpu_id: Id<Gpu>,
        ctx: &mut Context<'_, BatchedEvent>,
    ) -> Result<(), ScheduleError> {
        let Some(failures) = self.config.failures else { return Ok(()) };
        let up_s = failures.time_to_failure_s(ctx.rng(failure_stream(gpu_id)));
        let at = ctx.now().checked_add(SimDuration::from_secs_f64(up_s)?).ok_or(ScheduleError::Overflow)?;
        if at < self.horizon {
            ctx.schedule(at, BatchedEvent::GpuFails(gpu_id))?;
        }
        Ok(())
    }
}
