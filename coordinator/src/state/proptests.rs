//! Property test: random sequences of operations, with time moving forward,
//! never produce an invalid state or an invalid move.

use super::*;
use proptest::prelude::*;

const WORKERS: [&str; 3] = ["w0", "w1", "w2"];

#[derive(Debug, Clone)]
enum Op {
    Lease {
        worker: usize,
        ttl: i64,
    },
    Heartbeat {
        attempt: i8,
        worker: usize,
        ttl: i64,
        progressed: bool,
    },
    Complete {
        attempt: i8,
    },
    Fail {
        attempt: i8,
        retryable: bool,
    },
    Expire,
    Stall {
        timeout: i64,
    },
    TimeLimit {
        limit: i64,
    },
    Release {
        attempt: i8,
        worker: usize,
    },
    Cancel,
    Reclaim {
        grace: i64,
    },
}

/// An attempt number relative to the current one: mostly right, sometimes
/// one off either way (stale or from the future).
fn attempt_offset() -> impl Strategy<Value = i8> {
    prop_oneof![4 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)]
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0..WORKERS.len();
    prop_oneof![
        4 => (worker.clone(), 1..50_000i64).prop_map(|(worker, ttl)| Op::Lease { worker, ttl }),
        3 => (attempt_offset(), worker.clone(), 1..50_000i64, any::<bool>()).prop_map(
            |(attempt, worker, ttl, progressed)| Op::Heartbeat { attempt, worker, ttl, progressed }
        ),
        1 => attempt_offset().prop_map(|attempt| Op::Complete { attempt }),
        3 => (attempt_offset(), any::<bool>())
            .prop_map(|(attempt, retryable)| Op::Fail { attempt, retryable }),
        2 => Just(Op::Expire),
        1 => (1..100_000i64).prop_map(|timeout| Op::Stall { timeout }),
        1 => (1..200_000i64).prop_map(|limit| Op::TimeLimit { limit }),
        2 => (attempt_offset(), worker).prop_map(|(attempt, worker)| Op::Release { attempt, worker }),
        1 => Just(Op::Cancel),
        1 => (0..60_000i64).prop_map(|grace| Op::Reclaim { grace }),
    ]
}

/// The attempt an operation names: the current lease's (or the last used)
/// plus the offset.
fn named_attempt(state: &JobState, offset: i8) -> u32 {
    let base = state.attempt().unwrap_or(state.attempts()) as i64;
    (base + offset as i64).max(0) as u32
}

fn apply(s: &JobState, op: &Op, now: i64, p: &RetryPolicy) -> Result<JobState, TransitionError> {
    match *op {
        Op::Lease { worker, ttl } => s.lease(WORKERS[worker], now, ttl),
        Op::Heartbeat {
            attempt,
            worker,
            ttl,
            progressed,
        } => s.heartbeat(
            named_attempt(s, attempt),
            WORKERS[worker],
            now,
            ttl,
            // A step further each time it progresses (time only grows).
            progressed.then(|| now.max(0) as u64 + 1),
        ),
        Op::Complete { attempt } => match s.complete(named_attempt(s, attempt), now)? {
            Completion::Committed(ok) => Ok(ok.into()),
            Completion::AlreadyCommitted => Ok(s.clone()),
        },
        Op::Fail { attempt, retryable } => {
            s.fail(named_attempt(s, attempt), "boom", retryable, now, p)
        }
        Op::Expire => s.expire(now, p),
        Op::Stall { timeout } => s.stall(now, timeout, p),
        Op::TimeLimit { limit } => s.time_limit(now, limit, p),
        Op::Release { attempt, worker } => s.release(named_attempt(s, attempt), WORKERS[worker]),
        Op::Cancel => Ok(s.cancel()),
        Op::Reclaim { grace } => Ok(s.reclaim_after_restart(now, grace)),
    }
}

/// Invariants of a single state.
fn check_state(s: &JobState, p: &RetryPolicy) -> Result<(), TestCaseError> {
    match s {
        JobState::Pending(pe) => {
            prop_assert!(pe.released <= pe.attempts, "{s:?}");
            prop_assert!(pe.counted() < p.max_attempts, "{s:?}");
            prop_assert!(pe.not_before_ms >= 0);
            // A job that has used counted attempts keeps the last one's error.
            prop_assert!(pe.counted() == 0 || pe.last_error.is_some(), "{s:?}");
            // A lapsed lease is the last attempt's, expired.
            if let Some(l) = &pe.lapsed {
                prop_assert_eq!(l.attempt, pe.attempts, "{:?}", s);
                prop_assert_eq!(l.released, pe.released, "{:?}", s);
            }
        }
        JobState::Leased(l) => {
            prop_assert!(l.attempt >= 1);
            prop_assert!(l.released < l.attempt, "{s:?}");
            prop_assert!(l.counted() <= p.max_attempts, "{s:?}");
            prop_assert!(l.last_progress_ms >= l.leased_at_ms, "{s:?}");
            prop_assert!(l.deadline_ms > l.leased_at_ms, "{s:?}");
        }
        JobState::Succeeded(su) => prop_assert!(su.attempt >= 1),
        JobState::Failed(f) => {
            prop_assert!(f.attempts >= 1);
            prop_assert!(!f.last_error.is_empty());
        }
        JobState::Cancelled(_) => {}
    }
    let json = serde_json::to_string(s).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&serde_json::from_str::<JobState>(&json).unwrap(), s);
    Ok(())
}

/// Attempts that have ended (a running one does not count yet, nor a
/// lapsed one, whose worker may still be running it): never decreases.
fn finished_attempts(s: &JobState) -> u32 {
    match s {
        JobState::Leased(l) => l.attempt - 1,
        JobState::Pending(p) if p.lapsed.is_some() => p.attempts - 1,
        other => other.attempts(),
    }
}

/// Invariants of one move from `before` to `after` by `op`.
fn check_move(before: &JobState, after: &JobState, op: &Op) -> Result<(), TestCaseError> {
    if before.is_terminal() {
        prop_assert_eq!(after, before, "a finished job changed");
    }
    prop_assert!(finished_attempts(after) >= finished_attempts(before));
    match (before, after) {
        // Its cut-off worker back: the lapsed lease as it was.
        (JobState::Pending(p), JobState::Leased(l)) if matches!(op, Op::Heartbeat { .. }) => {
            let lapsed = p.lapsed.as_ref();
            prop_assert!(lapsed.is_some(), "taken up without a lapsed lease: {:?}", p);
            if let Some(was) = lapsed {
                prop_assert_eq!(l.attempt, was.attempt);
                prop_assert_eq!(&l.worker_id, &was.worker_id);
                prop_assert_eq!(l.leased_at_ms, was.leased_at_ms);
                prop_assert!(l.last_progress_ms >= was.last_progress_ms);
            }
        }
        (JobState::Pending(p), JobState::Leased(l)) => {
            prop_assert_eq!(l.attempt, p.attempts + 1);
            prop_assert_eq!(l.released, p.released);
        }
        // A lapsed lease's result, failure or release.
        (JobState::Pending(p), JobState::Succeeded(s)) => {
            prop_assert!(matches!(op, Op::Complete { .. }), "succeeded by {:?}", op);
            prop_assert_eq!(p.lapsed.as_ref().map(|l| l.attempt), Some(s.attempt));
        }
        (JobState::Pending(p), JobState::Failed(f)) => {
            prop_assert!(matches!(op, Op::Fail { .. }), "failed by {:?}", op);
            prop_assert!(p.lapsed.is_some());
            prop_assert_eq!(f.attempts, p.attempts);
        }
        (JobState::Pending(p), JobState::Pending(q)) if p.lapsed.is_some() && after != before => {
            let released = matches!(op, Op::Release { .. });
            prop_assert!(released || matches!(op, Op::Fail { .. }), "by {:?}", op);
            prop_assert_eq!(q.attempts, p.attempts);
            prop_assert_eq!(q.released, p.released + u32::from(released));
            prop_assert_eq!(&q.lapsed, &None);
        }
        (JobState::Leased(a), JobState::Leased(b)) => {
            prop_assert_eq!(a.attempt, b.attempt);
            prop_assert_eq!(&a.worker_id, &b.worker_id);
            prop_assert!(b.last_progress_ms >= a.last_progress_ms);
        }
        (JobState::Leased(l), JobState::Pending(p)) => {
            // Attempt numbers never repeat; a release is not counted.
            let released = matches!(op, Op::Release { .. });
            prop_assert_eq!(p.attempts, l.attempt);
            prop_assert_eq!(p.released, l.released + u32::from(released));
        }
        (JobState::Leased(l), JobState::Succeeded(s)) => {
            prop_assert!(matches!(op, Op::Complete { .. }), "succeeded by {:?}", op);
            prop_assert_eq!(s.attempt, l.attempt);
        }
        (_, JobState::Succeeded(_)) => prop_assert_eq!(after, before),
        (JobState::Leased(l), JobState::Failed(f)) => prop_assert_eq!(f.attempts, l.attempt),
        (_, JobState::Failed(_)) => prop_assert_eq!(after, before),
        (JobState::Pending(_), JobState::Pending(_)) => prop_assert_eq!(after, before),
        _ => {}
    }
    Ok(())
}

/// The operation sequences the property test draws.
fn steps() -> impl Strategy<Value = Vec<(i64, Op)>> {
    prop::collection::vec((0i64..40_000, op()), 1..60)
}

/// The property test is only worth something if its sequences reach every
/// state and every kind of move; check that they do.
#[test]
fn random_sequences_reach_every_state() {
    use proptest::strategy::ValueTree;
    use std::collections::BTreeSet;
    let p = RetryPolicy {
        max_attempts: 3,
        backoff_ms: 1_000,
    };
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let steps = steps().new_tree(&mut runner).unwrap().current();
        let (mut state, mut now) = (JobState::new(), 0);
        for (dt, op) in &steps {
            now += dt;
            if let Ok(next) = apply(&state, op, now, &p) {
                if next != state {
                    seen.insert(format!("{} -> {}", state.name(), next.name()));
                    // The moves a lapsed lease allows, by operation.
                    if matches!(&state, JobState::Pending(p) if p.lapsed.is_some()) {
                        let kind = format!("{op:?}");
                        let kind = kind.split([' ', '{']).next().unwrap_or_default();
                        seen.insert(format!("lapsed -{kind}-> {}", next.name()));
                    }
                }
                state = next;
            }
        }
    }
    for edge in [
        "pending -> leased",
        "leased -> leased",
        "leased -> pending",
        "leased -> succeeded",
        "leased -> failed",
        "leased -> cancelled",
        "pending -> cancelled",
        "pending -> succeeded",
        "lapsed -Heartbeat-> leased",
        "lapsed -Complete-> succeeded",
        "lapsed -Fail-> pending",
        "lapsed -Release-> pending",
        "lapsed -Lease-> leased",
    ] {
        assert!(seen.contains(edge), "{edge} never happened: {seen:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_operation_sequences_keep_the_state_valid(
        max_attempts in 1u32..5,
        backoff_ms in 0i64..5_000,
        steps in steps(),
    ) {
        let p = RetryPolicy { max_attempts, backoff_ms };
        let mut state = JobState::new();
        let mut now = 0i64;
        for (dt, op) in &steps {
            now += dt;
            match apply(&state, op, now, &p) {
                Ok(next) => {
                    check_state(&next, &p)?;
                    check_move(&state, &next, op)?;
                    state = next;
                }
                Err(TransitionError::NotYet { not_before_ms }) => {
                    prop_assert!(not_before_ms > now);
                }
                Err(_) => {}
            }
        }
    }
}
