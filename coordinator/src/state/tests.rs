//! Unit tests: every transition of the job state machine.

use super::*;

const TTL: i64 = 30_000;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff_ms: 1_000,
    }
}

fn leased(state: &JobState) -> &Leased {
    match state {
        JobState::Leased(l) => l,
        other => panic!("expected leased, got {other:?}"),
    }
}

fn pending(state: &JobState) -> &Pending {
    match state {
        JobState::Pending(p) => p,
        other => panic!("expected pending, got {other:?}"),
    }
}

/// A new job leased to `w1` at t = 1000.
fn first_lease() -> JobState {
    JobState::new().lease("w1", 1_000, TTL).unwrap()
}

#[test]
fn lease_makes_attempt_one_with_deadline() {
    let s = first_lease();
    let l = leased(&s);
    assert_eq!(l.attempt, 1);
    assert_eq!(l.worker_id, "w1");
    assert_eq!(l.leased_at_ms, 1_000);
    assert_eq!(l.deadline_ms, 1_000 + TTL);
    assert_eq!(l.last_progress_ms, 1_000);
    assert_eq!(s.name(), "leased");
    assert_eq!(s.attempt(), Some(1));
    assert!(!s.is_terminal());
}

#[test]
fn lease_respects_backoff_and_needs_pending() {
    let p = JobState::Pending(Pending {
        attempts: 1,
        released: 0,
        not_before_ms: 5_000,
        last_error: Some("boom".into()),
        lapsed: None,
    });
    assert_eq!(
        p.lease("w", 4_999, TTL),
        Err(TransitionError::NotYet {
            not_before_ms: 5_000
        })
    );
    let s = p.lease("w", 5_000, TTL).unwrap();
    assert_eq!(leased(&s).attempt, 2);
    assert_eq!(leased(&s).last_error.as_deref(), Some("boom"));
    assert_eq!(
        s.lease("w2", 6_000, TTL),
        Err(TransitionError::WrongState {
            job_state: "leased",
            wanted: "pending"
        })
    );
}

#[test]
fn heartbeat_extends_deadline_and_records_progress() {
    let s = first_lease();
    let h = s.heartbeat(1, "w1", 10_000, TTL, None).unwrap();
    assert_eq!(leased(&h).deadline_ms, 10_000 + TTL);
    assert_eq!(leased(&h).last_progress_ms, 1_000);
    let h = h.heartbeat(1, "w1", 20_000, TTL, Some(5)).unwrap();
    assert_eq!(leased(&h).deadline_ms, 20_000 + TTL);
    assert_eq!(leased(&h).last_progress_ms, 20_000);
    // The same position again (a worker whose training hangs still sends
    // its last progress) extends the lease but is no progress.
    let h = h.heartbeat(1, "w1", 30_000, TTL, Some(5)).unwrap();
    assert_eq!(leased(&h).deadline_ms, 30_000 + TTL);
    assert_eq!(leased(&h).last_progress_ms, 20_000);
    let h = h.heartbeat(1, "w1", 40_000, TTL, Some(6)).unwrap();
    assert_eq!(leased(&h).last_progress_ms, 40_000);
}

#[test]
fn a_hung_job_that_keeps_heartbeating_stalls() {
    let p = policy();
    let mut s = first_lease();
    s = s.heartbeat(1, "w1", 2_000, TTL, Some(3)).unwrap();
    // Heartbeats every 10 s for 70 s, always at step 3.
    for t in (12_000..=72_000).step_by(10_000) {
        s = s.heartbeat(1, "w1", t, TTL, Some(3)).unwrap();
    }
    assert!(
        s.stall(72_000, 60_000, &p).is_ok(),
        "no step for 70 s is a stall"
    );
}

#[test]
fn a_restart_counts_progress_from_the_restart() {
    let s = first_lease();
    let JobState::Leased(l) = &s else { panic!() };
    // Down for an hour: the lease is reclaimed with a grace period, and the
    // stall clock starts again.
    let back = l.reclaim_after_restart(3_600_000, 60_000);
    assert_eq!(back.deadline_ms, 3_660_000);
    assert_eq!(back.last_progress_ms, 3_600_000);
}

#[test]
fn heartbeat_checks_attempt_then_worker() {
    let s = first_lease();
    assert_eq!(
        s.heartbeat(2, "w1", 2_000, TTL, Some(1)),
        Err(TransitionError::StaleAttempt {
            current: Some(1),
            given: 2
        })
    );
    assert_eq!(
        s.heartbeat(1, "w2", 2_000, TTL, Some(1)),
        Err(TransitionError::WrongWorker {
            attempt: 1,
            holder: "w1".into(),
            given: "w2".into()
        })
    );
}

#[test]
fn fencing_refuses_the_old_attempt_after_a_re_lease() {
    let p = policy();
    let s = first_lease();
    // w1 stops heartbeating; the lease expires and w2 gets attempt 2.
    let s = s.expire(1_000 + TTL, &p).unwrap();
    let not_before = pending(&s).not_before_ms;
    let s = s.lease("w2", not_before, TTL).unwrap();
    assert_eq!(leased(&s).attempt, 2);
    let stale = TransitionError::StaleAttempt {
        current: Some(2),
        given: 1,
    };
    assert_eq!(
        s.heartbeat(1, "w1", not_before, TTL, Some(1)),
        Err(stale.clone())
    );
    assert_eq!(s.complete(1, not_before), Err(stale.clone()));
    assert_eq!(s.fail(1, "x", true, not_before, &p), Err(stale.clone()));
    assert_eq!(s.release(1, "w1"), Err(stale));
    // The current holder is unaffected.
    assert!(matches!(
        s.complete(2, not_before + 1).unwrap(),
        Completion::Committed(Succeeded { attempt: 2, .. })
    ));
}

#[test]
fn reports_on_a_pending_job_are_stale_and_on_a_finished_job_wrong_state() {
    let p = policy();
    let pend = JobState::new();
    let stale = TransitionError::StaleAttempt {
        current: None,
        given: 1,
    };
    assert_eq!(pend.heartbeat(1, "w", 0, TTL, Some(1)), Err(stale.clone()));
    assert_eq!(pend.complete(1, 0), Err(stale.clone()));
    assert_eq!(pend.fail(1, "e", true, 0, &p), Err(stale.clone()));
    assert_eq!(pend.release(1, "w"), Err(stale));
    let cancelled = first_lease().cancel();
    let wrong = TransitionError::WrongState {
        job_state: "cancelled",
        wanted: "leased",
    };
    assert_eq!(
        cancelled.heartbeat(1, "w1", 0, TTL, Some(1)),
        Err(wrong.clone())
    );
    assert_eq!(cancelled.complete(1, 0), Err(wrong.clone()));
    assert_eq!(cancelled.fail(1, "e", true, 0, &p), Err(wrong.clone()));
    assert_eq!(cancelled.release(1, "w1"), Err(wrong));
}

#[test]
fn complete_commits_once_and_acknowledges_repeats() {
    let s = first_lease();
    let done: JobState = match s.complete(1, 9_000).unwrap() {
        Completion::Committed(ok) => ok.into(),
        Completion::AlreadyCommitted => panic!("first completion must commit"),
    };
    assert_eq!(
        done,
        JobState::Succeeded(Succeeded {
            attempt: 1,
            finished_ms: 9_000
        })
    );
    assert!(done.is_terminal());
    assert_eq!(done.complete(1, 9_500), Ok(Completion::AlreadyCommitted));
    assert_eq!(
        done.complete(2, 9_500),
        Err(TransitionError::StaleAttempt {
            current: Some(1),
            given: 2
        })
    );
}

#[test]
fn retryable_failure_goes_back_to_pending_with_backoff() {
    let p = policy();
    let s = first_lease().fail(1, "cuda oom", true, 2_000, &p).unwrap();
    assert_eq!(
        s,
        JobState::Pending(Pending {
            attempts: 1,
            released: 0,
            not_before_ms: 2_000 + 1_000,
            last_error: Some("cuda oom".into()),
            lapsed: None,
        })
    );
}

#[test]
fn non_retryable_failure_fails_at_once() {
    let s = first_lease()
        .fail(1, "bad spec", false, 2_000, &policy())
        .unwrap();
    assert_eq!(
        s,
        JobState::Failed(Failed {
            attempts: 1,
            last_error: "bad spec".into()
        })
    );
    assert!(s.is_terminal());
}

#[test]
fn a_job_that_always_fails_ends_failed_after_max_attempts_with_its_error() {
    let p = policy();
    let mut s = JobState::new();
    let mut now = 0;
    for attempt in 1..=p.max_attempts {
        let not_before = match &s {
            JobState::Pending(pe) => pe.not_before_ms,
            other => panic!("attempt {attempt}: expected pending, got {other:?}"),
        };
        now = now.max(not_before);
        s = s.lease("w", now, TTL).unwrap();
        assert_eq!(s.attempt(), Some(attempt));
        now += 100;
        s = s
            .fail(attempt, &format!("crash {attempt}"), true, now, &p)
            .unwrap();
    }
    assert_eq!(
        s,
        JobState::Failed(Failed {
            attempts: 3,
            last_error: "crash 3".into()
        })
    );
}

#[test]
fn backoff_doubles_and_is_capped() {
    let p = RetryPolicy {
        max_attempts: 100,
        backoff_ms: 1_000,
    };
    assert_eq!(p.backoff_after(0), 0);
    assert_eq!(p.backoff_after(1), 1_000);
    assert_eq!(p.backoff_after(2), 2_000);
    assert_eq!(p.backoff_after(3), 4_000);
    assert_eq!(p.backoff_after(10), 512_000);
    assert_eq!(p.backoff_after(11), MAX_BACKOFF_MS);
    assert_eq!(p.backoff_after(63), MAX_BACKOFF_MS);
    assert_eq!(p.backoff_after(64), MAX_BACKOFF_MS);
    assert_eq!(p.backoff_after(u32::MAX), MAX_BACKOFF_MS);
    let none = RetryPolicy {
        max_attempts: 3,
        backoff_ms: 0,
    };
    assert_eq!(none.backoff_after(5), 0);
    // The second failure waits twice as long as the first.
    let s = JobState::new().lease("w", 0, TTL).unwrap();
    let s = s.fail(1, "e", true, 10_000, &p).unwrap();
    assert_eq!(pending(&s).not_before_ms, 11_000);
    let s = s.lease("w", 11_000, TTL).unwrap();
    let s = s.fail(2, "e", true, 20_000, &p).unwrap();
    assert_eq!(pending(&s).not_before_ms, 22_000);
}

#[test]
fn a_cut_off_worker_back_before_a_new_lease_carries_on_under_its_attempt() {
    let p = policy();
    // w1 reports progress at 5 s, then falls silent; the lease expires.
    let s = first_lease()
        .heartbeat(1, "w1", 5_000, TTL, Some(7))
        .unwrap();
    let before = leased(&s).clone();
    let expired = s.expire(5_000 + TTL, &p).unwrap();
    assert_eq!(pending(&expired).lapsed.as_ref(), Some(&before));
    // Back: the lease as it was (its progress and stall clock too), with a
    // new deadline; the same attempt, so nothing is counted twice.
    let back_at = 5_000 + TTL + 20_000;
    let s = expired.heartbeat(1, "w1", back_at, TTL, Some(7)).unwrap();
    assert_eq!(
        leased(&s),
        &Leased {
            deadline_ms: back_at + TTL,
            ..before.clone()
        }
    );
    // Another worker, or another attempt, cannot take it up.
    assert!(matches!(
        expired.heartbeat(1, "w2", back_at, TTL, None),
        Err(TransitionError::WrongWorker { .. })
    ));
    assert_eq!(
        expired.check_worker(1, "w2"),
        Err(TransitionError::WrongWorker {
            attempt: 1,
            holder: "w1".into(),
            given: "w2".into()
        })
    );
    assert!(matches!(
        expired.heartbeat(2, "w1", back_at, TTL, None),
        Err(TransitionError::StaleAttempt { current: None, .. })
    ));
    // Its result is committed while the job waits in the queue.
    assert_eq!(
        expired.complete(1, back_at),
        Ok(Completion::Committed(Succeeded {
            attempt: 1,
            finished_ms: back_at
        }))
    );
    // A failure it reports is the lease's: back to pending (no longer
    // lapsed) or failed; a release gives the attempt back uncounted.
    let failed = expired.fail(1, "bad file", false, back_at, &p).unwrap();
    assert_eq!(failed.name(), "failed");
    let retried = expired.fail(1, "oom", true, back_at, &p).unwrap();
    assert_eq!(pending(&retried).lapsed, None);
    let released = expired.release(1, "w1").unwrap();
    assert_eq!(
        (
            pending(&released).released,
            pending(&released).lapsed.as_ref()
        ),
        (1, None)
    );
    // Once the job is leased again, the old attempt is stale for good.
    let not_before = pending(&expired).not_before_ms;
    let s = expired.lease("w2", not_before, TTL).unwrap();
    assert_eq!(
        s.complete(1, not_before),
        Err(TransitionError::StaleAttempt {
            current: Some(2),
            given: 1
        })
    );
    // The last attempt allowed expiring fails the job: nothing is kept.
    let last = RetryPolicy {
        max_attempts: 1,
        ..p
    };
    let s = first_lease().expire(1_000 + TTL, &last).unwrap();
    assert_eq!(s.name(), "failed");
    assert!(s.heartbeat(1, "w1", 1_000 + TTL, TTL, None).is_err());
    // A stall or a reported failure is no lapse: nothing to come back to.
    let stalled = first_lease().stall(1_000 + 60_000, 60_000, &p).unwrap();
    assert_eq!(pending(&stalled).lapsed, None);
    assert!(stalled.heartbeat(1, "w1", 70_000, TTL, None).is_err());
}

#[test]
fn a_stored_pending_job_without_a_lapsed_lease_reads_as_before() {
    let stored =
        r#"{"state":"pending","attempts":1,"released":0,"not_before_ms":0,"last_error":"x"}"#;
    let s: JobState = serde_json::from_str(stored).unwrap();
    assert_eq!(pending(&s).lapsed, None);
    assert_eq!(serde_json::to_string(&s).unwrap(), stored);
}

#[test]
fn expiry_needs_the_deadline_and_counts_as_an_attempt() {
    let p = policy();
    let s = first_lease();
    assert_eq!(
        s.expire(1_000 + TTL - 1, &p),
        Err(TransitionError::NotYet {
            not_before_ms: 1_000 + TTL
        })
    );
    let e = s.expire(1_000 + TTL, &p).unwrap();
    let pe = pending(&e);
    assert_eq!(pe.attempts, 1);
    assert_eq!(
        pe.last_error.as_deref(),
        Some("lease expired (worker w1 stopped heartbeating)")
    );
    // A job whose worker dies every time ends failed after max attempts.
    let mut s = JobState::new();
    let mut now = 0;
    while let JobState::Pending(pe) = &s {
        now = now.max(pe.not_before_ms);
        s = s.lease("w", now, TTL).unwrap();
        now += TTL;
        s = s.expire(now, &p).unwrap();
    }
    match s {
        JobState::Failed(f) => {
            assert_eq!(f.attempts, 3);
            assert!(
                f.last_error.starts_with("lease expired"),
                "{}",
                f.last_error
            );
        }
        other => panic!("expected failed, got {other:?}"),
    }
}

#[test]
fn only_the_holder_of_an_attempt_passes_the_worker_check() {
    let s = first_lease();
    assert_eq!(s.check_worker(1, "w1"), Ok(()));
    assert_eq!(
        s.check_worker(1, "w2"),
        Err(TransitionError::WrongWorker {
            attempt: 1,
            holder: "w1".into(),
            given: "w2".into()
        })
    );
    // Another attempt, or a job not leased: for the transition to refuse.
    assert_eq!(s.check_worker(2, "w2"), Ok(()));
    assert_eq!(JobState::new().check_worker(1, "w2"), Ok(()));
    let done: JobState = match s.complete(1, 2_000).unwrap() {
        Completion::Committed(d) => d.into(),
        other => panic!("{other:?}"),
    };
    assert_eq!(done.check_worker(1, "w2"), Ok(()));
}

#[test]
fn release_does_not_count_as_an_attempt_but_fences() {
    let s = first_lease();
    assert!(matches!(
        s.release(1, "w2"),
        Err(TransitionError::WrongWorker { .. })
    ));
    let r = s.release(1, "w1").unwrap();
    assert_eq!(
        r,
        JobState::Pending(Pending {
            attempts: 1,
            released: 1,
            not_before_ms: 0,
            last_error: None,
            lapsed: None,
        })
    );
    // Released any number of times: every lease gets a new attempt number
    // (the released attempt's late calls are refused)...
    let mut s = r;
    for n in 2..12 {
        s = s.lease("w", 0, TTL).unwrap();
        assert_eq!(s.attempt(), Some(n));
        assert!(matches!(
            s.complete(n - 1, 0),
            Err(TransitionError::StaleAttempt { .. })
        ));
        s = s.release(n, "w").unwrap();
    }
    // ...but none of them counted: a failure now is the first counted one,
    // and is retried under a 3-attempt policy.
    let p = policy();
    let s = s.lease("w", 0, TTL).unwrap();
    let after = s.fail(12, "boom", true, 0, &p).unwrap();
    assert!(matches!(after, JobState::Pending(_)), "{after:?}");
}

#[test]
fn stall_is_a_retryable_failure_after_no_progress() {
    let p = policy();
    let s = first_lease()
        .heartbeat(1, "w1", 5_000, TTL, Some(1))
        .unwrap();
    assert_eq!(
        s.stall(64_999, 60_000, &p),
        Err(TransitionError::NotYet {
            not_before_ms: 65_000
        })
    );
    let st = s.stall(65_000, 60_000, &p).unwrap();
    let pe = pending(&st);
    assert_eq!(pe.attempts, 1);
    assert_eq!(pe.last_error.as_deref(), Some("no progress for 60 s"));
    assert_eq!(pe.not_before_ms, 66_000);
}

#[test]
fn time_limit_fails_without_retry() {
    let p = policy();
    let s = first_lease();
    assert!(matches!(
        s.time_limit(3_000, 3_000, &p),
        Err(TransitionError::NotYet {
            not_before_ms: 4_000
        })
    ));
    match s.time_limit(4_000, 3_000, &p).unwrap() {
        JobState::Failed(f) => {
            assert_eq!(f.attempts, 1);
            assert!(f.last_error.starts_with("exceeded the per-job time limit"));
        }
        other => panic!("expected failed, got {other:?}"),
    }
}

#[test]
fn scheduler_checks_need_a_leased_job() {
    let p = policy();
    let wrong = Err(TransitionError::WrongState {
        job_state: "pending",
        wanted: "leased",
    });
    let s = JobState::new();
    assert_eq!(s.expire(i64::MAX, &p), wrong);
    assert_eq!(s.stall(i64::MAX, 1, &p), wrong);
    assert_eq!(s.time_limit(i64::MAX, 1, &p), wrong);
}

#[test]
fn cancel_from_pending_and_leased_and_finished_jobs_are_unchanged() {
    assert_eq!(
        JobState::new().cancel(),
        JobState::Cancelled(Cancelled { attempts: 0 })
    );
    assert_eq!(
        first_lease().cancel(),
        JobState::Cancelled(Cancelled { attempts: 1 })
    );
    let done: JobState = Succeeded {
        attempt: 1,
        finished_ms: 5,
    }
    .into();
    assert_eq!(done.cancel(), done);
    let failed: JobState = Failed {
        attempts: 3,
        last_error: "e".into(),
    }
    .into();
    assert_eq!(failed.cancel(), failed);
    let c = JobState::Cancelled(Cancelled { attempts: 2 });
    assert_eq!(c.cancel(), c);
    assert!(c.is_terminal());
    assert_eq!(c.name(), "cancelled");
}

#[test]
fn resume_requeues_a_cancelled_job_with_a_fresh_budget_and_new_attempt_numbers() {
    let p = policy();
    // Attempt 1 failed (retryable), attempt 2 was running when cancelled.
    let s = first_lease().fail(1, "oom", true, 2_000, &p).unwrap();
    let s = s.lease("w2", 10_000, TTL).unwrap().cancel();
    assert_eq!(s, JobState::Cancelled(Cancelled { attempts: 2 }));
    let r = s.resume();
    assert_eq!(r.name(), "pending");
    assert!(!r.is_terminal());
    // The next lease is attempt 3: a late report from attempt 2 stays fenced.
    let l = r.lease("w3", 20_000, TTL).unwrap();
    assert_eq!(leased(&l).attempt, 3);
    assert!(matches!(
        l.complete(2, 21_000),
        Err(TransitionError::StaleAttempt { .. })
    ));
    // The whole budget again: 3 more failures before it ends failed.
    let mut s = l;
    for attempt in 3..5 {
        s = s.fail(attempt, "e", true, 30_000, &p).unwrap();
        assert_eq!(s.name(), "pending", "attempt {attempt}");
        s = s.lease("w", 10_000_000, TTL).unwrap();
    }
    assert_eq!(s.fail(5, "e", true, 30_000, &p).unwrap().name(), "failed");
    // A success is never rewritten; queued and running jobs are kept.
    for done in [
        JobState::from(Succeeded {
            attempt: 1,
            finished_ms: 5,
        }),
        JobState::new(),
        first_lease(),
    ] {
        assert_eq!(done.resume(), done);
    }
}

#[test]
fn resume_requeues_a_failed_job_with_a_fresh_budget_and_new_attempt_numbers() {
    let p = policy();
    // Attempt 1 failed for good (not retryable).
    let failed = first_lease().fail(1, "bad file", false, 2_000, &p).unwrap();
    assert_eq!(failed.name(), "failed");
    let r = failed.resume();
    assert_eq!(
        r,
        JobState::Pending(Pending {
            attempts: 1,
            released: 1,
            not_before_ms: 0,
            last_error: Some("bad file".into()),
            lapsed: None,
        })
    );
    // The next lease is attempt 2; a late report from attempt 1 is fenced.
    let l = r.lease("w2", 10_000, TTL).unwrap();
    assert_eq!(leased(&l).attempt, 2);
    assert!(matches!(
        l.complete(1, 11_000),
        Err(TransitionError::StaleAttempt { .. })
    ));
    assert!(matches!(
        l.complete(2, 12_000),
        Ok(Completion::Committed(_))
    ));
    // The whole budget again: max_attempts retryable failures before failed.
    let mut s = failed.resume().lease("w", 10_000, TTL).unwrap();
    for attempt in 2..p.max_attempts + 1 {
        s = s.fail(attempt, "e", true, 30_000, &p).unwrap();
        assert_eq!(s.name(), "pending", "attempt {attempt}");
        s = s.lease("w", 10_000_000, TTL).unwrap();
    }
    let last = p.max_attempts + 1;
    assert_eq!(
        s.fail(last, "e", true, 30_000, &p).unwrap().name(),
        "failed"
    );
}

#[test]
fn reclaim_after_restart_gives_a_grace_period() {
    let s = first_lease(); // deadline 31_000
    let r = s.reclaim_after_restart(100_000, 20_000);
    assert_eq!(leased(&r).deadline_ms, 120_000);
    assert_eq!(leased(&r).attempt, 1);
    // A later deadline is kept.
    let r = s.reclaim_after_restart(0, 20_000);
    assert_eq!(leased(&r).deadline_ms, 31_000);
    let p = JobState::new();
    assert_eq!(p.reclaim_after_restart(100_000, 20_000), p);
}

#[test]
fn a_pause_of_the_coordinator_is_not_counted_towards_the_time_limit() {
    // Leased at 1 s; the coordinator (and its local workers) suspended for
    // an hour at 11 s; the per-job limit is 20 min.
    let s = first_lease();
    let limit = 20 * 60_000;
    let now = 11_000 + 3_600_000;
    assert!(s.clone().time_limit(now, limit, &policy()).is_ok());
    let r = s.reclaim_after_pause(now, 20_000, 3_600_000);
    assert_eq!(leased(&r).leased_at_ms, 3_601_000);
    assert_eq!(leased(&r).deadline_ms, now + 20_000);
    assert!(r.clone().time_limit(now, limit, &policy()).is_err());
    assert!(r.time_limit(3_601_000 + limit, limit, &policy()).is_ok());
    // Never moved past now (a gap larger than the lease's age).
    let r = s.reclaim_after_pause(5_000, 20_000, 3_600_000);
    assert_eq!(leased(&r).leased_at_ms, 5_000);
}

#[test]
fn json_form_is_tagged_with_the_state_name() {
    let s = JobState::new();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(
        json,
        r#"{"state":"pending","attempts":0,"released":0,"not_before_ms":0,"last_error":null}"#
    );
    // Rows written before `released` existed still read (as 0).
    let old: JobState = serde_json::from_str(
        r#"{"state":"pending","attempts":2,"not_before_ms":0,"last_error":"x"}"#,
    )
    .unwrap();
    assert!(matches!(
        old,
        JobState::Pending(Pending {
            attempts: 2,
            released: 0,
            ..
        })
    ));
    for s in [
        s,
        first_lease(),
        Succeeded {
            attempt: 2,
            finished_ms: 7,
        }
        .into(),
        Failed {
            attempts: 3,
            last_error: "e".into(),
        }
        .into(),
        Cancelled { attempts: 1 }.into(),
    ] {
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], s.name());
        assert_eq!(serde_json::from_value::<JobState>(json).unwrap(), s);
    }
}

#[test]
fn errors_read_well() {
    let e = TransitionError::StaleAttempt {
        current: None,
        given: 3,
    };
    assert_eq!(e.to_string(), "attempt 3 is stale (current attempt: none)");
    let e = TransitionError::WrongState {
        job_state: "failed",
        wanted: "leased",
    };
    assert_eq!(e.to_string(), "job is failed, not leased");
}
