//! Group commit for consumed events: each consumer lane hands its event to the intake and waits;
//! the intake applies whatever has gathered in one transaction and answers each lane. Events of
//! one tenant stay in order (a lane waits for its answer before taking the tenant's next event),
//! while one transaction carries the events of many tenants.

use std::sync::Arc;

use picket_platform::nats::HandlerError;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::processor::{Job, Outcome, ProcessError, Processor};

struct Pending {
    job: Job,
    answer: oneshot::Sender<Result<Outcome, String>>,
}

#[derive(Clone)]
pub struct Intake {
    sender: mpsc::Sender<Pending>,
}

/// Transactions applying batches at once. One is as fast as several on this machine's two cores
/// (the batch that gathers while one applies is larger) and keeps decision latency lower.
const APPLIERS: usize = 1;

impl Intake {
    /// Starts the appliers; they stop once `shutdown` fires and the queue is drained.
    pub fn start(
        processor: Arc<Processor>,
        batch_size: usize,
        shutdown: CancellationToken,
    ) -> Intake {
        let (sender, receiver) = mpsc::channel::<Pending>(batch_size * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..APPLIERS {
            let processor = processor.clone();
            let receiver = receiver.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let mut pending = Vec::with_capacity(batch_size);
                    {
                        let mut receiver = receiver.lock().await;
                        let received = tokio::select! {
                            received = receiver.recv_many(&mut pending, batch_size) => received,
                            () = shutdown.cancelled() => 0,
                        };
                        if received == 0 {
                            break;
                        }
                    }
                    apply(&processor, pending).await;
                }
            });
        }
        Intake { sender }
    }

    /// Applies `job` with others; a refusal or duplicate is an outcome, a failure is transient.
    pub async fn submit(&self, job: Job) -> Result<Outcome, HandlerError> {
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Pending { job, answer })
            .await
            .map_err(|_| HandlerError::Transient("the prioritizer is stopping".into()))?;
        answered
            .await
            .map_err(|_| HandlerError::Transient("the prioritizer is stopping".into()))?
            .map_err(|error| HandlerError::Transient(error.into()))
    }
}

async fn apply(processor: &Processor, pending: Vec<Pending>) {
    let jobs: Vec<Job> = pending.iter().map(|pending| pending.job.clone()).collect();
    let started = std::time::Instant::now();
    match processor.run(jobs).await {
        Ok(outcomes) => {
            tracing::debug!(jobs = outcomes.len(), elapsed = ?started.elapsed(), "batch applied");
            for (pending, outcome) in pending.into_iter().zip(outcomes) {
                let _gone = pending.answer.send(Ok(outcome));
            }
        }
        // One bad job must not hold back the others: apply each on its own.
        Err(error) if pending.len() > 1 => {
            tracing::warn!(%error, jobs = pending.len(), "batch failed, applying its events one by one");
            for pending in pending {
                let outcome = processor
                    .run_one(pending.job)
                    .await
                    .map_err(|error| error.to_string());
                let _gone = pending.answer.send(outcome);
            }
        }
        Err(error) => {
            for pending in pending {
                let _gone = pending.answer.send(Err(error.to_string()));
            }
        }
    }
}

impl From<ProcessError> for HandlerError {
    fn from(error: ProcessError) -> HandlerError {
        HandlerError::transient(error)
    }
}
