//! GPUs of the serving fleet failing and being repaired, each on its own stream.

use super::*;

impl<O: Observer<RetrainingRequest>, S: Observer<RetrainingSample>> Retraining<O, S> {
    pub(super) fn failure_stream(gpu: Id<Gpu>) -> StreamId {
        StreamId(FAILURE_STREAM_BASE + gpu.index())
    }

    pub(super) fn schedule_failure(
        &mut self,
        gpu: Id<Gpu>,
        ctx: &mut Context<'_, RetrainingEvent>,
    ) -> Result<(), ScheduleError> {
        let Some(f) = self.config.fleet.failures else { return Ok(()) };
        let up_s = f.time_to_failure_s(ctx.rng(Self::failure_stream(gpu)));
        let at = ctx.now().checked_add(SimDuration::from_secs_f64(up_s)?).ok_or(ScheduleError::Overflow)?;
        if at < self.horizon {
            ctx.schedule(at, RetrainingEvent::GpuFails(gpu))?;
        }
        Ok(())
    }

    pub(super) fn on_gpu_fails(
        &mut self,
        gpu: Id<Gpu>,
        ctx: &mut Context<'_, RetrainingEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let failures = self.config.fleet.failures.expect("failure events exist only with failures configured");
        self.life.as_mut().expect("with failures").fail(gpu.index() as usize, now);
        match self.gpus[gpu].state {
            GpuState::Idle => {
                if let Some(i) = self.idle_serving.iter().position(|&g| g == gpu) {
                    self.idle_serving.swap_remove(i);
                }
            }
            GpuState::Serving { id, arrival, start, done } => {
                ctx.cancel(done);
                self.stats.lost += 1;
                self.observer.observe(RetrainingRequest {
                    request_id: id,
                    arrival_s: arrival.as_secs_f64(),
                    start_s: start.as_secs_f64(),
                    finish_s: now.as_secs_f64(),
                    gpu: Some(gpu.index()),
                    latency_s: (now - arrival).as_secs_f64(),
                    loss: self.loss,
                    drift: 0.0,
                    energy_kwh: 0.0,
                    served: false,
                });
            }
            GpuState::Training => {
                // The job fails: its other GPUs go back; the campaign (if any) retries
                // at the next tick.
                self.gpus[gpu].state = GpuState::Down;
                self.stats.retrain_failed += 1;
                self.end_job(ctx)?;
            }
            GpuState::Down => unreachable!("a GPU that is down cannot fail"),
        }
        self.gpus[gpu].state = GpuState::Down;
        let repair_s = failures.time_to_repair_s(ctx.rng(Self::failure_stream(gpu)));
        ctx.schedule(SimDuration::from_secs_f64(repair_s)?, RetrainingEvent::GpuRepaired(gpu))?;
        Ok(())
    }

    pub(super) fn on_gpu_repaired(
        &mut self,
        gpu: Id<Gpu>,
        ctx: &mut Context<'_, RetrainingEvent>,
    ) -> Result<(), ScheduleError> {
        self.life.as_mut().expect("repairs come with failures").repair(gpu.index() as usize, ctx.now());
        self.schedule_failure(gpu, ctx)?;
        self.release(gpu, ctx)
    }
}
