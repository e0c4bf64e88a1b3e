//! Replica slots failing and being repaired, each on its own stream.

use super::*;

impl<O: Observer<PipelineRequest>, S: Observer<PipelineSample>> Pipeline<O, S> {
    /// The random stream of replica slot `r` of stage `s`.
    pub(super) fn failure_stream(s: usize, r: usize) -> StreamId {
        StreamId(FAILURE_STREAM_BASE + (s as u32) * 100_000 + r as u32)
    }

    /// A replica starts a new life (its slot's epoch moved on when the last one
    /// ended): its first failure is scheduled.
    pub(super) fn start_life(
        &mut self,
        s: usize,
        r: usize,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let epoch = self.life.epoch(self.stages[s].units[r]);
        self.schedule_failure(s, r, epoch, ctx)
    }

    /// Replica slot `r` of stage `s` is emptied (retired, or lost while retiring).
    pub(super) fn retire(&mut self, s: usize, r: usize, now: SimTime) {
        self.stages[s].replicas[r] = Replica::default();
        self.life.retire(self.stages[s].units[r], now);
    }

    pub(super) fn schedule_failure(
        &mut self,
        s: usize,
        r: usize,
        epoch: u32,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let Some(failures) = self.config.failures else { return Ok(()) };
        let up_s = failures.time_to_failure_s(ctx.rng(Self::failure_stream(s, r)));
        self.schedule_within(up_s, PipelineEvent::ReplicaFails { stage: s as u16, replica: r as u32, epoch }, ctx)
    }

    /// Schedules `event` `after_s` from now, if that falls before the horizon.
    pub(super) fn schedule_within(
        &self,
        after_s: f64,
        event: PipelineEvent,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let at = ctx.now().checked_add(SimDuration::from_secs_f64(after_s)?).unwrap_or(SimTime::MAX);
        if at < self.horizon {
            ctx.schedule(at, event)?;
        }
        Ok(())
    }

    /// A replica fails: its batch's inputs are lost; it is down until repaired (a
    /// retiring one is simply gone).
    pub(super) fn on_replica_fails(
        &mut self,
        s: usize,
        r: usize,
        epoch: u32,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let unit = self.stages[s].units[r];
        if self.life.epoch(unit) != epoch || !self.stages[s].replicas[r].alive || self.life.is_down(unit) {
            return Ok(());
        }
        let now = ctx.now();
        self.account_replicas(now);
        let replica = &mut self.stages[s].replicas[r];
        if let Some(done) = replica.done.take() {
            ctx.cancel(done);
        }
        let lost = std::mem::take(&mut replica.batch);
        self.stats.lost += lost.len() as u64;
        for i in lost {
            self.inputs.remove(i);
        }
        let epoch = self.life.fail(unit, now);
        if self.stages[s].replicas[r].retiring {
            self.retire(s, r, now);
            return Ok(());
        }
        let failures = self.config.failures.expect("replicas fail only with failures configured");
        let repair_s = failures.time_to_repair_s(ctx.rng(Self::failure_stream(s, r)));
        self.schedule_within(
            repair_s,
            PipelineEvent::ReplicaRepaired { stage: s as u16, replica: r as u32, epoch },
            ctx,
        )
    }

    pub(super) fn on_replica_repaired(
        &mut self,
        s: usize,
        r: usize,
        epoch: u32,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let unit = self.stages[s].units[r];
        if self.life.epoch(unit) != epoch || !self.life.is_down(unit) {
            return Ok(());
        }
        self.account_replicas(ctx.now());
        let epoch = self.life.repair(unit, ctx.now());
        self.schedule_failure(s, r, epoch, ctx)?;
        self.dispatch(s, ctx)
    }
}
