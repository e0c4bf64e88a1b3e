//! Work that runs without the GIL while the calling thread keeps answering Python:
//! it polls for signals (Ctrl-C raises `KeyboardInterrupt` through Python's own
//! handler, which is never replaced) and reports progress to a Python callback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use infersim_engine::Interrupt;
use pyo3::prelude::*;

/// How often the calling thread looks at signals and progress.
const POLL: Duration = Duration::from_millis(50);

/// Runs `work` on a thread of its own with the GIL released. Every [`POLL`] the
/// calling thread checks Python's signals and calls `callback(done, total)` with
/// what `progress` says when it changed. A signal's exception (or the callback's)
/// raises `cancel`, waits for `work` to stop (it keeps what finished) and is
/// returned.
pub fn run_in_background<T: Send>(
    py: Python<'_>,
    cancel: &Interrupt,
    callback: Option<&Bound<'_, PyAny>>,
    progress: &(dyn Fn() -> (u64, u64) + Sync),
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let result = work();
            finished.store(true, Ordering::Release);
            result
        });
        let mut shown = None;
        let outcome = loop {
            let done = py.detach(|| {
                let steps = 10;
                for _ in 0..steps {
                    if finished.load(Ordering::Acquire) {
                        return true;
                    }
                    std::thread::sleep(POLL / steps);
                }
                finished.load(Ordering::Acquire)
            });
            let now = progress();
            if let Some(callback) = callback
                && shown != Some(now)
            {
                shown = Some(now);
                if let Err(e) = callback.call1(now) {
                    break Err(e);
                }
            }
            if done {
                break Ok(());
            }
            if let Err(e) = py.check_signals() {
                break Err(e);
            }
        };
        if outcome.is_err() {
            cancel.raise();
        }
        let joined = py.detach(|| handle.join());
        match (outcome, joined) {
            (Err(e), _) => Err(e),
            (Ok(()), Ok(result)) => Ok(result),
            (Ok(()), Err(panic)) => std::panic::resume_unwind(panic),
        }
    })
}
