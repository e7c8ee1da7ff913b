//! The job state machine.
//!
//! A job is always in exactly one of five states, each a struct with the data
//! that state needs; the transitions are pure methods that either return the
//! next state or say why the move is refused:
//!
//! ```text
//!  pending --lease--> leased(attempt, worker, deadline) --complete--> succeeded
//!     ^                  |  |  |--fail(retryable, attempts < max)--> pending (backoff)
//!     |                  |  |--fail(not retryable or attempts >= max)--> failed(attempts, last error)
//!     +---expire/release-+  |--cancel--> cancelled
//!  pending --cancel--> cancelled --resume--> pending
//!                        failed --resume--> pending
//!  pending(lapsed: the expired lease of attempt n, no lease since)
//!     --heartbeat(n, same worker)--> leased(n) as it was
//!     --complete(n)--> succeeded
//!     --fail(n) / release(n)--> as from leased(n)
//! ```
//!
//! - `expire` (the lease deadline passed) and `stall` (no progress reported
//!   for too long) are retryable failures and count as an attempt, so a job
//!   that kills its worker every time ends `failed` after `max_attempts`.
//!   `time_limit` (the attempt ran longer than the per-job limit) is a failure
//!   that is not retried.
//! - An expired lease that leaves the job pending (attempts remain) is kept
//!   with it (`lapsed`) until the next lease: its worker may only have been
//!   cut off. If it heartbeats first, the job is leased to it again under
//!   the same attempt (its progress and stall clock as they were); a result
//!   it reports is committed; a failure or release it reports is applied as
//!   to the lease. Once another lease is issued, the old attempt is stale.
//!   An expiry of the last attempt allowed fails the job: nothing is kept.
//!   A worker whose connection flaps can so keep its attempt through many
//!   expiries without using the retry budget; the stall timeout and the
//!   per-job time limit, whose clocks the take-up keeps, still end it.
//! - `release` (the worker gives the job back, e.g. on shutdown) does not
//!   count as an attempt.
//! - The attempt number (1-based) is the lease's fencing token: every report
//!   from a worker names its attempt, and a report for any other attempt than
//!   the current one is refused with [`TransitionError::StaleAttempt`]. A
//!   report naming the current attempt from another worker than the one
//!   holding it is refused with [`TransitionError::WrongWorker`] (heartbeat
//!   and release check it in the transition; complete and fail through
//!   [`JobState::check_worker`], in the same store transaction as the
//!   transition).
//! - Completing a job that already succeeded with the same attempt is
//!   acknowledged as [`Completion::AlreadyCommitted`]: a repeated report is
//!   counted once.
//! - `cancel` never fails: pending and leased jobs become cancelled, finished
//!   jobs (succeeded, failed, cancelled) keep their state.
//! - `resume` (a cancelled experiment, or one with failed rounds, submitted
//!   again) puts a cancelled or failed job back in the queue with a fresh
//!   attempt budget; its attempt numbers go on from where they were, so
//!   fencing still holds. Succeeded jobs, and jobs still queued or running,
//!   are kept as they are.
//!
//! Times are milliseconds since the Unix epoch and are always passed in: this
//! module never reads the clock.
//!
//! Operations that need a lease (`heartbeat`, `complete`, `fail`, `release`)
//! on a job that is not leased are refused with `StaleAttempt { current: None }`
//! when the job is pending (the worker's lease was taken away; the job goes
//! on), unless they come from the lapsed lease's attempt and worker, and
//! with `WrongState` when the job is finished (stop working on it).

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// The longest wait between two attempts: 10 minutes.
pub const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;

/// Waiting to be leased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Leases issued so far (0 for a new job); the next lease is attempt
    /// `attempts + 1`, so attempt numbers never repeat (fencing).
    pub attempts: u32,
    /// How many of those leases were released (given back by a stopping
    /// worker): they do not count against `max_attempts`.
    #[serde(default)]
    pub released: u32,
    /// Not to be leased before this time (backoff after a failure).
    pub not_before_ms: i64,
    /// The error of the last failed attempt, if any.
    pub last_error: Option<String>,
    /// The lease whose expiry made the job pending, while no other lease
    /// has been issued since: its worker may only have been cut off (a
    /// network partition, a paused machine) and still be training. If it
    /// reports before the job is leased again, it carries on under the same
    /// attempt ([`JobState::heartbeat`]), and its result is taken
    /// ([`JobState::complete`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lapsed: Option<Leased>,
}

/// Leased to a worker, which is running attempt `attempt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leased {
    /// 1-based attempt number; the lease's fencing token.
    pub attempt: u32,
    pub worker_id: String,
    pub leased_at_ms: i64,
    /// Lease expiry, pushed forward by heartbeats.
    pub deadline_ms: i64,
    /// When the worker last reported progress (initially the lease time).
    pub last_progress_ms: i64,
    /// How far the attempt had got then (the service's `position`: units
    /// of preparation before training, then 2^48 plus the steps done; 0
    /// before any report): a heartbeat repeating it is not progress. A
    /// coordinator older than the preparation count, reopening a database
    /// with such positions, sees no progress on the leases then running.
    #[serde(default)]
    pub last_position: u64,
    /// The error of the previous failed attempt, if any.
    pub last_error: Option<String>,
    /// Earlier leases that were released (see [`Pending::released`]).
    #[serde(default)]
    pub released: u32,
}

/// Finished: attempt `attempt` committed its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succeeded {
    pub attempt: u32,
    pub finished_ms: i64,
}

/// Finished without a result after `attempts` attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub attempts: u32,
    pub last_error: String,
}

impl Failed {
    /// Back to the queue (the experiment was submitted again): like
    /// [`Cancelled::to_pending`], with a fresh retry budget and attempt
    /// numbers that go on. The last error is kept until the next attempt ends.
    pub fn to_pending(&self) -> Pending {
        Pending {
            attempts: self.attempts,
            released: self.attempts,
            not_before_ms: 0,
            last_error: Some(self.last_error.clone()),
            lapsed: None,
        }
    }
}

/// Cancelled after `attempts` attempts (a running attempt counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub attempts: u32,
}

impl Cancelled {
    /// Back to the queue. The attempt count goes on (attempt numbers never
    /// repeat); all earlier attempts are counted as released, since none of
    /// them failed for good, so the job gets its whole retry budget again.
    pub fn to_pending(&self) -> Pending {
        Pending {
            attempts: self.attempts,
            released: self.attempts,
            not_before_ms: 0,
            last_error: None,
            lapsed: None,
        }
    }
}

/// A job's state; stored as JSON with a `state` tag, e.g.
/// `{"state":"pending","attempts":0,"released":0,"not_before_ms":0,"last_error":null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum JobState {
    Pending(Pending),
    Leased(Leased),
    Succeeded(Succeeded),
    Failed(Failed),
    Cancelled(Cancelled),
}

/// How often a job is tried and how long it waits between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts a job gets in all (expiries and stalls count, releases don't).
    pub max_attempts: u32,
    /// Base backoff: after failed attempt n the job waits
    /// `backoff_ms * 2^(n-1)`, at most [`MAX_BACKOFF_MS`].
    pub backoff_ms: i64,
}

impl Default for RetryPolicy {
    /// 3 attempts, 10 s base backoff.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_ms: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): `backoff_ms *
    /// 2^(attempt-1)`, capped at [`MAX_BACKOFF_MS`]; 0 for attempt 0 or a
    /// non-positive base.
    pub fn backoff_after(&self, attempt: u32) -> i64 {
        if attempt == 0 || self.backoff_ms <= 0 {
            return 0;
        }
        let factor = 1i64.checked_shl(attempt - 1).filter(|f| *f > 0);
        factor
            .and_then(|f| self.backoff_ms.checked_mul(f))
            .map_or(MAX_BACKOFF_MS, |b| b.min(MAX_BACKOFF_MS))
    }
}

/// Why a transition was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransitionError {
    /// The job is in a state the operation does not apply to.
    #[error("job is {job_state}, not {wanted}")]
    WrongState {
        job_state: &'static str,
        wanted: &'static str,
    },
    /// The report names an attempt that is not (or no longer) the current
    /// lease: fencing.
    #[error("attempt {given} is stale (current attempt: {})", show_attempt(.current))]
    StaleAttempt { current: Option<u32>, given: u32 },
    /// The attempt is right but it is leased to another worker.
    #[error("attempt {attempt} is leased to worker {holder}, not to {given}")]
    WrongWorker {
        attempt: u32,
        holder: String,
        given: String,
    },
    /// Too early: the move is allowed from this time on.
    #[error("not before {not_before_ms} ms since the epoch")]
    NotYet { not_before_ms: i64 },
}

fn show_attempt(a: &Option<u32>) -> String {
    a.map_or_else(|| "none".to_string(), |a| a.to_string())
}

/// The outcome of a successful [`JobState::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The lease's result is committed: the job is now this state.
    Committed(Succeeded),
    /// The job already succeeded with this attempt: nothing changes, the
    /// repeat is acknowledged (and counted once).
    AlreadyCommitted,
}

impl Pending {
    /// A new job that has never run.
    pub fn new() -> Self {
        Pending {
            attempts: 0,
            released: 0,
            not_before_ms: 0,
            last_error: None,
            lapsed: None,
        }
    }

    /// Lease the job to `worker_id` for `ttl_ms` as attempt `attempts + 1`.
    pub fn lease(
        &self,
        worker_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Leased, TransitionError> {
        if now_ms < self.not_before_ms {
            return Err(TransitionError::NotYet {
                not_before_ms: self.not_before_ms,
            });
        }
        Ok(Leased {
            attempt: self.attempts + 1,
            worker_id: worker_id.to_string(),
            leased_at_ms: now_ms,
            deadline_ms: now_ms.saturating_add(ttl_ms),
            last_progress_ms: now_ms,
            last_position: 0,
            last_error: self.last_error.clone(),
            released: self.released,
        })
    }

    /// Attempts that count against `max_attempts` (releases do not).
    pub fn counted(&self) -> u32 {
        self.attempts.saturating_sub(self.released)
    }

    /// The lapsed lease of attempt `attempt`, if there is one: the attempt
    /// whose lease expired last, no lease issued since.
    fn lapsed(&self, attempt: u32) -> Option<&Leased> {
        self.lapsed
            .as_ref()
            .filter(|l| l.attempt == attempt && self.attempts == attempt)
    }
}

impl Default for Pending {
    fn default() -> Self {
        Pending::new()
    }
}

impl Leased {
    /// Check the fencing token (`attempt`) and, if given, the worker.
    fn check(&self, attempt: u32, worker_id: Option<&str>) -> Result<(), TransitionError> {
        if attempt != self.attempt {
            return Err(TransitionError::StaleAttempt {
                current: Some(self.attempt),
                given: attempt,
            });
        }
        match worker_id {
            Some(w) if w != self.worker_id => Err(TransitionError::WrongWorker {
                attempt,
                holder: self.worker_id.clone(),
                given: w.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Extend the lease to `now + ttl`; record progress when `progressed`.
    /// A heartbeat past the deadline is still accepted while the job has not
    /// been expired.
    pub fn heartbeat(
        &self,
        attempt: u32,
        worker_id: &str,
        now_ms: i64,
        ttl_ms: i64,
        position: Option<u64>,
    ) -> Result<Leased, TransitionError> {
        self.check(attempt, Some(worker_id))?;
        let mut next = self.clone();
        next.deadline_ms = now_ms.saturating_add(ttl_ms);
        // Progress is a step further than the last report: a worker whose
        // training hangs keeps sending the same position, and stalls.
        if let Some(p) = position.filter(|&p| p > self.last_position) {
            next.last_progress_ms = now_ms;
            next.last_position = p;
        }
        Ok(next)
    }

    /// The attempt's result is in.
    pub fn complete(&self, attempt: u32, now_ms: i64) -> Result<Succeeded, TransitionError> {
        self.check(attempt, None)?;
        Ok(Succeeded {
            attempt,
            finished_ms: now_ms,
        })
    }

    /// The attempt failed with `error`: back to pending with a backoff when
    /// `retryable` and attempts are left, else failed.
    pub fn fail(
        &self,
        attempt: u32,
        error: &str,
        retryable: bool,
        now_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<JobState, TransitionError> {
        self.check(attempt, None)?;
        Ok(self.failed(error.to_string(), retryable, now_ms, policy))
    }

    fn failed(
        &self,
        error: String,
        retryable: bool,
        now_ms: i64,
        policy: &RetryPolicy,
    ) -> JobState {
        let counted = self.counted();
        if retryable && counted < policy.max_attempts {
            JobState::Pending(Pending {
                attempts: self.attempt,
                released: self.released,
                not_before_ms: now_ms.saturating_add(policy.backoff_after(counted)),
                last_error: Some(error),
                lapsed: None,
            })
        } else {
            JobState::Failed(Failed {
                attempts: self.attempt,
                last_error: error,
            })
        }
    }

    /// The lease deadline passed (`now >= deadline`): a retryable failure
    /// that counts as an attempt.
    pub fn expire(&self, now_ms: i64, policy: &RetryPolicy) -> Result<JobState, TransitionError> {
        if now_ms < self.deadline_ms {
            return Err(TransitionError::NotYet {
                not_before_ms: self.deadline_ms,
            });
        }
        let error = format!(
            "lease expired (worker {} stopped heartbeating)",
            self.worker_id
        );
        // The worker may only be cut off: kept, so that it can carry on if
        // it comes back before the job is leased again.
        Ok(match self.failed(error, true, now_ms, policy) {
            JobState::Pending(p) => JobState::Pending(Pending {
                lapsed: Some(self.clone()),
                ..p
            }),
            other => other,
        })
    }

    /// No progress for `stall_timeout_ms`: a retryable failure.
    pub fn stall(
        &self,
        now_ms: i64,
        stall_timeout_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<JobState, TransitionError> {
        let at = self.last_progress_ms.saturating_add(stall_timeout_ms);
        if now_ms < at {
            return Err(TransitionError::NotYet { not_before_ms: at });
        }
        let secs = (now_ms - self.last_progress_ms) / 1000;
        Ok(self.failed(format!("no progress for {secs} s"), true, now_ms, policy))
    }

    /// The attempt has run for `limit_ms` or longer: a failure that is not
    /// retried.
    pub fn time_limit(
        &self,
        now_ms: i64,
        limit_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<JobState, TransitionError> {
        let at = self.leased_at_ms.saturating_add(limit_ms);
        if now_ms < at {
            return Err(TransitionError::NotYet { not_before_ms: at });
        }
        let error = format!("exceeded the per-job time limit ({} s)", limit_ms / 1000);
        Ok(self.failed(error, false, now_ms, policy))
    }

    /// The worker gives the job back unfinished; this does not count as an
    /// attempt and the job may be leased again at once. The next lease still
    /// gets a new attempt number, so nothing the releasing worker might send
    /// later is taken for the new lease's.
    pub fn release(&self, attempt: u32, worker_id: &str) -> Result<Pending, TransitionError> {
        self.check(attempt, Some(worker_id))?;
        Ok(Pending {
            attempts: self.attempt,
            released: self.released + 1,
            not_before_ms: 0,
            last_error: self.last_error.clone(),
            lapsed: None,
        })
    }

    /// Attempts that count against `max_attempts`, this one included.
    pub fn counted(&self) -> u32 {
        self.attempt.saturating_sub(self.released)
    }

    /// After a coordinator restart: give the worker at least `grace_ms` from
    /// `now` to reconnect and report before the lease expires, and count
    /// its progress from now (time the coordinator was down is no stall).
    pub fn reclaim_after_restart(&self, now_ms: i64, grace_ms: i64) -> Leased {
        let mut next = self.clone();
        next.deadline_ms = self.deadline_ms.max(now_ms.saturating_add(grace_ms));
        next.last_progress_ms = self.last_progress_ms.max(now_ms);
        next
    }

    /// After the coordinator itself was paused for `gap_ms` (suspended with
    /// its local workers, stopped, or the wall clock jumped):
    /// [`Leased::reclaim_after_restart`], and the pause does not count
    /// towards the attempt's per-job time limit.
    pub fn reclaim_after_pause(&self, now_ms: i64, grace_ms: i64, gap_ms: i64) -> Leased {
        let mut next = self.reclaim_after_restart(now_ms, grace_ms);
        next.leased_at_ms = self
            .leased_at_ms
            .saturating_add(gap_ms.max(0))
            .min(now_ms.max(self.leased_at_ms));
        next
    }
}

impl JobState {
    /// A new job: pending, never attempted.
    pub fn new() -> Self {
        JobState::Pending(Pending::new())
    }

    /// "pending", "leased", "succeeded", "failed" or "cancelled" (the serde
    /// tag).
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Pending(_) => "pending",
            JobState::Leased(_) => "leased",
            JobState::Succeeded(_) => "succeeded",
            JobState::Failed(_) => "failed",
            JobState::Cancelled(_) => "cancelled",
        }
    }

    /// Succeeded, failed or cancelled: no transition changes it any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded(_) | JobState::Failed(_) | JobState::Cancelled(_)
        )
    }

    /// The attempt that holds the lease (leased) or committed the result
    /// (succeeded); `None` otherwise.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            JobState::Leased(l) => Some(l.attempt),
            JobState::Succeeded(s) => Some(s.attempt),
            _ => None,
        }
    }

    /// Refused with [`TransitionError::WrongWorker`] when attempt `attempt`
    /// holds the lease under another worker than `worker_id`; fine in every
    /// other case (the transition itself then says whether the attempt is
    /// current). Run it on the state the transition is applied to, in the
    /// same store transaction: on a state read earlier, before the attempt
    /// was leased, it would pass for any worker.
    pub fn check_worker(&self, attempt: u32, worker_id: &str) -> Result<(), TransitionError> {
        match self.lease_for(attempt) {
            Some(l) if l.attempt == attempt => l.check(attempt, Some(worker_id)),
            _ => Ok(()),
        }
    }

    /// The lease a report naming `attempt` is judged against: a leased
    /// job's lease (whatever its attempt: the lease refuses another), or a
    /// pending job's lapsed lease of that attempt (its worker back).
    fn lease_for(&self, attempt: u32) -> Option<&Leased> {
        match self {
            JobState::Leased(l) => Some(l),
            JobState::Pending(p) => p.lapsed(attempt),
            _ => None,
        }
    }

    /// [`JobState::lease_for`], or the refusal for a job without one.
    fn holding(&self, attempt: u32) -> Result<&Leased, TransitionError> {
        self.lease_for(attempt)
            .ok_or_else(|| self.not_leased(attempt))
    }

    /// Attempts used so far, a running one included.
    pub fn attempts(&self) -> u32 {
        match self {
            JobState::Pending(p) => p.attempts,
            JobState::Leased(l) => l.attempt,
            JobState::Succeeded(s) => s.attempt,
            JobState::Failed(f) => f.attempts,
            JobState::Cancelled(c) => c.attempts,
        }
    }

    /// The refusal for an operation that needs a lease, on a job without one.
    fn not_leased(&self, given: u32) -> TransitionError {
        match self {
            JobState::Pending(_) => TransitionError::StaleAttempt {
                current: None,
                given,
            },
            _ => self.wrong("leased"),
        }
    }

    fn wrong(&self, wanted: &'static str) -> TransitionError {
        TransitionError::WrongState {
            job_state: self.name(),
            wanted,
        }
    }

    fn leased(&self) -> Result<&Leased, TransitionError> {
        match self {
            JobState::Leased(l) => Ok(l),
            _ => Err(self.wrong("leased")),
        }
    }

    /// See [`Pending::lease`]; only from pending.
    pub fn lease(
        &self,
        worker_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<JobState, TransitionError> {
        match self {
            JobState::Pending(p) => p.lease(worker_id, now_ms, ttl_ms).map(JobState::Leased),
            _ => Err(self.wrong("pending")),
        }
    }

    /// See [`Leased::heartbeat`].
    pub fn heartbeat(
        &self,
        attempt: u32,
        worker_id: &str,
        now_ms: i64,
        ttl_ms: i64,
        position: Option<u64>,
    ) -> Result<JobState, TransitionError> {
        // A lapsed lease's worker back: the lease as it was, extended (its
        // progress and stall clock kept).
        self.holding(attempt)?
            .heartbeat(attempt, worker_id, now_ms, ttl_ms, position)
            .map(JobState::Leased)
    }

    /// See [`Leased::complete`]. A job that already succeeded with the same
    /// attempt gives [`Completion::AlreadyCommitted`]; with another attempt,
    /// `StaleAttempt`.
    pub fn complete(&self, attempt: u32, now_ms: i64) -> Result<Completion, TransitionError> {
        match self {
            JobState::Succeeded(s) if s.attempt == attempt => Ok(Completion::AlreadyCommitted),
            JobState::Succeeded(s) => Err(TransitionError::StaleAttempt {
                current: Some(s.attempt),
                given: attempt,
            }),
            _ => self
                .holding(attempt)?
                .complete(attempt, now_ms)
                .map(Completion::Committed),
        }
    }

    /// See [`Leased::fail`].
    pub fn fail(
        &self,
        attempt: u32,
        error: &str,
        retryable: bool,
        now_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<JobState, TransitionError> {
        self.holding(attempt)?
            .fail(attempt, error, retryable, now_ms, policy)
    }

    /// See [`Leased::expire`]; `WrongState` unless leased.
    pub fn expire(&self, now_ms: i64, policy: &RetryPolicy) -> Result<JobState, TransitionError> {
        self.leased()?.expire(now_ms, policy)
    }

    /// See [`Leased::stall`]; `WrongState` unless leased.
    pub fn stall(
        &self,
        now_ms: i64,
        stall_timeout_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<JobState, TransitionError> {
        self.leased()?.stall(now_ms, stall_timeout_ms, policy)
    }

    /// See [`Leased::time_limit`]; `WrongState` unless leased.
    pub fn time_limit(
        &self,
        now_ms: i64,
        limit_ms: i64,
        policy: &RetryPolicy,
    ) -> Result<JobState, TransitionError> {
        self.leased()?.time_limit(now_ms, limit_ms, policy)
    }

    /// See [`Leased::release`].
    pub fn release(&self, attempt: u32, worker_id: &str) -> Result<JobState, TransitionError> {
        self.holding(attempt)?
            .release(attempt, worker_id)
            .map(JobState::Pending)
    }

    /// Pending or leased: cancelled (a running attempt counts). Finished
    /// jobs are returned unchanged: cancelling never fails and never rewrites
    /// an outcome.
    pub fn cancel(&self) -> JobState {
        match self {
            JobState::Pending(p) => JobState::Cancelled(Cancelled {
                attempts: p.attempts,
            }),
            JobState::Leased(l) => JobState::Cancelled(Cancelled {
                attempts: l.attempt,
            }),
            _ => self.clone(),
        }
    }

    /// Cancelled or failed: pending again ([`Cancelled::to_pending`],
    /// [`Failed::to_pending`]). Other states are returned unchanged: a
    /// succeeded job's result is never rewritten.
    pub fn resume(&self) -> JobState {
        match self {
            JobState::Cancelled(c) => JobState::Pending(c.to_pending()),
            JobState::Failed(f) => JobState::Pending(f.to_pending()),
            _ => self.clone(),
        }
    }

    /// See [`Leased::reclaim_after_restart`]; other states are returned
    /// unchanged.
    pub fn reclaim_after_restart(&self, now_ms: i64, grace_ms: i64) -> JobState {
        match self {
            JobState::Leased(l) => JobState::Leased(l.reclaim_after_restart(now_ms, grace_ms)),
            _ => self.clone(),
        }
    }

    /// See [`Leased::reclaim_after_pause`]; other states are returned
    /// unchanged.
    pub fn reclaim_after_pause(&self, now_ms: i64, grace_ms: i64, gap_ms: i64) -> JobState {
        match self {
            JobState::Leased(l) => {
                JobState::Leased(l.reclaim_after_pause(now_ms, grace_ms, gap_ms))
            }
            _ => self.clone(),
        }
    }
}

impl Default for JobState {
    fn default() -> Self {
        JobState::new()
    }
}

macro_rules! from_state {
    ($($t:ident),*) => {
        $(impl From<$t> for JobState {
            fn from(s: $t) -> Self {
                JobState::$t(s)
            }
        })*
    };
}
from_state!(Pending, Leased, Succeeded, Failed, Cancelled);
