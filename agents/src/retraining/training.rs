//! Retraining jobs: claiming GPUs from the serving fleet or the dedicated pool,
//! running, and giving them back.

use super::*;

impl<O: Observer<RetrainingRequest>, S: Observer<RetrainingSample>> Retraining<O, S> {
    pub(super) fn in_training_pool(&self, gpu: Id<Gpu>) -> bool {
        match self.config.training.pool {
            TrainingPool::Shared => self.gpus[gpu].serving,
            TrainingPool::Dedicated { .. } => !self.gpus[gpu].serving,
        }
    }

    /// Gives an idle GPU to the job; starts the job when it has them all.
    pub(super) fn claim(&mut self, gpu: Id<Gpu>, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        self.gpus[gpu].state = GpuState::Training;
        self.job_claims -= 1;
        let job = self.job.as_mut().expect("claims exist only with a job");
        job.gpus.push(gpu);
        if self.job_claims == 0 {
            let t = &self.config.training;
            let g = f64::from(t.gpus_per_job);
            let duration_h = t.samples_per_job / (t.samples_per_gpu_h * g);
            let done = ctx.schedule(SimDuration::from_secs_f64(duration_h * 3600.0)?, RetrainingEvent::JobDone)?;
            job.done = Some(done);
            let kw = (t.samples_per_gpu_h * g * t.energy_per_sample_kwh + g * t.gpu_power_kw) * self.config.energy.pue;
            self.set_training_kw(ctx.now(), kw);
        }
        Ok(())
    }

    /// Starts a retraining job: it takes idle GPUs of its pool now and claims the
    /// rest as they free up.
    pub(super) fn start_job(&mut self, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        debug_assert!(self.job.is_none());
        self.stats.retrain_starts += 1;
        self.job = Some(Job { gpus: Vec::new(), done: None });
        self.job_claims = self.config.training.gpus_per_job;
        let candidates: Vec<Id<Gpu>> = match self.config.training.pool {
            TrainingPool::Shared => {
                let take = (self.job_claims as usize).min(self.idle_serving.len());
                let at = self.idle_serving.len() - take;
                self.idle_serving.split_off(at)
            }
            TrainingPool::Dedicated { .. } => self
                .gpus
                .iter()
                .filter(|(_, g)| !g.serving && g.state == GpuState::Idle)
                .map(|(id, _)| id)
                .take(self.job_claims as usize)
                .collect(),
        };
        for gpu in candidates {
            self.claim(gpu, ctx)?;
        }
        Ok(())
    }

    /// Ends the job (finished, failed or preempted) and gives its GPUs back.
    pub(super) fn end_job(&mut self, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        let job = self.job.take().expect("a job to end");
        if let Some(done) = job.done {
            ctx.cancel(done);
        }
        self.job_claims = 0;
        self.set_training_kw(ctx.now(), 0.0);
        for gpu in job.gpus {
            if self.gpus[gpu].state == GpuState::Training {
                self.release(gpu, ctx)?;
            }
        }
        Ok(())
    }

    pub(super) fn on_job_done(&mut self, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        if let Some(job) = self.job.as_mut() {
            job.done = None;
        }
        self.end_job(ctx)?;
        self.stats.retrain_completed += 1;
        let t = &self.config.training;
        self.processed_data += t.samples_per_job;
        self.loss = t.loss.after_job(self.loss, t.samples_per_job, self.processed_data);
        // A campaign goes on until a job leaves the loss below the lower bound.
        if self.campaign.after_job(self.below_band()) {
            self.start_job(ctx)?;
        }
        Ok(())
    }
}
