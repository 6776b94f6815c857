//! Group commit for consumed events: each consumer lane hands its job to the group and waits; the
//! group applies whatever has gathered in one transaction and answers each lane. Events of one
//! tenant stay in order (a lane waits for its answer before taking the tenant's next event), while
//! one transaction carries the events of many tenants.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::nats::HandlerError;

/// Applies a batch of jobs in one transaction, all or nothing.
pub trait BatchApplier: Send + Sync + 'static {
    /// Cloned only to apply the jobs of a failed batch one by one.
    type Job: Clone + Send + 'static;
    type Outcome: Send + 'static;
    type Error: std::fmt::Display + Send + 'static;

    /// Applies `jobs` in order; returns one outcome per job.
    fn apply(
        &self,
        jobs: Vec<Self::Job>,
    ) -> impl Future<Output = Result<Vec<Self::Outcome>, Self::Error>> + Send;
}

struct Pending<A: BatchApplier> {
    job: A::Job,
    answer: oneshot::Sender<Result<A::Outcome, String>>,
}

pub struct GroupCommit<A: BatchApplier> {
    sender: mpsc::Sender<Pending<A>>,
}

impl<A: BatchApplier> Clone for GroupCommit<A> {
    fn clone(&self) -> Self {
        GroupCommit {
            sender: self.sender.clone(),
        }
    }
}

impl<A: BatchApplier> GroupCommit<A> {
    /// Starts the applier task: one transaction at a time, which on two cores is as fast as
    /// several (the batch that gathers while one applies is larger) and keeps latency lower. It
    /// stops once `shutdown` fires and the queue is drained.
    pub fn start(applier: Arc<A>, batch_size: usize, shutdown: CancellationToken) -> Self {
        let (sender, mut receiver) = mpsc::channel::<Pending<A>>(batch_size * 2);
        tokio::spawn(async move {
            loop {
                let mut pending = Vec::with_capacity(batch_size);
                let received = tokio::select! {
                    received = receiver.recv_many(&mut pending, batch_size) => received,
                    () = shutdown.cancelled() => 0,
                };
                if received == 0 {
                    break;
                }
                apply(&*applier, pending).await;
            }
        });
        GroupCommit { sender }
    }

    /// Applies `job` with others; a failure of its own is transient (the event is retried).
    pub async fn submit(&self, job: A::Job) -> Result<A::Outcome, HandlerError> {
        let stopping = || HandlerError::Transient("the service is stopping".into());
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Pending { job, answer })
            .await
            .map_err(|_| stopping())?;
        answered
            .await
            .map_err(|_| stopping())?
            .map_err(|error| HandlerError::Transient(error.into()))
    }
}

async fn apply<A: BatchApplier>(applier: &A, pending: Vec<Pending<A>>) {
    let jobs: Vec<A::Job> = pending.iter().map(|pending| pending.job.clone()).collect();
    let started = std::time::Instant::now();
    match applier.apply(jobs).await {
        Ok(outcomes) => {
            tracing::debug!(jobs = outcomes.len(), elapsed = ?started.elapsed(), "batch applied");
            for (pending, outcome) in pending.into_iter().zip(outcomes) {
                let _gone = pending.answer.send(Ok(outcome));
            }
        }
        // One bad job must not hold back the others: apply each on its own.
        Err(error) if pending.len() > 1 => {
            tracing::warn!(%error, jobs = pending.len(), "batch failed, applying its jobs one by one");
            for pending in pending {
                let outcome = match applier.apply(vec![pending.job]).await {
                    Ok(mut outcomes) => outcomes
                        .pop()
                        .ok_or_else(|| "the batch gave no outcome".to_owned()),
                    Err(error) => Err(error.to_string()),
                };
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
