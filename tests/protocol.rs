//! The worker protocol spoken by hand over gRPC to a real coordinator
//! process: what it does with reports that do not come from the worker
//! holding the lease.

mod common;
use common::cluster::*;
use crossfold_proto::client::ClientSecurity;
use crossfold_proto::v1::{self, workers_client::WorkersClient};

type Client = WorkersClient<crossfold_proto::client::AuthChannel>;

/// A client of the worker protocol, with `names` registered as workers.
async fn workers(url: &str, names: &[&str]) -> Client {
    let channel = ClientSecurity::plaintext().connect(url).await.unwrap();
    let mut client = WorkersClient::new(channel);
    for name in names {
        client
            .register(v1::RegisterRequest {
                worker_name: name.to_string(),
                slots: 1,
                instance: format!("{name}-instance"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    client
}

/// The lease `worker` is given (within 5 s).
async fn lease_for(client: &mut Client, worker: &str) -> v1::Lease {
    client
        .lease(v1::LeaseRequest {
            worker_id: worker.into(),
            free_slots: 1,
            wait_seconds: 5.0,
            gpu: Some(false),
            running: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .lease
        .expect("a lease")
}

/// Job `key`'s line in `crossfold status --format json`.
fn job_line(status: &serde_json::Value, key: &str) -> serde_json::Value {
    status["job_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["key"] == key)
        .unwrap()
        .clone()
}

#[test]
fn a_report_naming_another_workers_attempt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let id = submit(&url, &spec, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (job, attempt) = rt.block_on(async {
        let mut client = workers(&url, &["holder", "intruder"]).await;
        let lease = lease_for(&mut client, "holder").await;
        // The intruder names the holder's attempt: its result is refused.
        let chunk = v1::CompleteChunk {
            worker_id: "intruder".into(),
            experiment_id: lease.experiment_id.clone(),
            job_key: lease.job_key.clone(),
            attempt: lease.attempt,
            last: true,
            ..Default::default()
        };
        let reply = client
            .complete(tokio_stream::iter(vec![chunk]))
            .await
            .unwrap()
            .into_inner();
        assert!(!reply.accepted, "{reply:?}");
        assert!(
            reply
                .message
                .contains("leased to worker holder, not to intruder"),
            "{reply:?}"
        );
        // And its failure report changes nothing.
        client
            .fail(v1::FailRequest {
                worker_id: "intruder".into(),
                experiment_id: lease.experiment_id.clone(),
                job_key: lease.job_key.clone(),
                attempt: lease.attempt,
                error: "made up".into(),
                retryable: false,
            })
            .await
            .unwrap();
        (lease.job_key, lease.attempt)
    });
    let s = status(&url, &id);
    let j = job_line(&s, &job);
    assert_eq!(
        (
            j["state"].as_str(),
            j["worker"].as_str(),
            j["attempt"].as_u64()
        ),
        (Some("leased"), Some("holder"), Some(u64::from(attempt))),
        "{s}"
    );
}

#[test]
fn a_result_that_takes_longer_than_the_lease_to_arrive_keeps_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(dir.path(), "[protocol]\ntasks = [\"screening\"]\n");
    make_data(&spec);
    let (_coord, url) = start_coordinator(
        dir.path(),
        "127.0.0.1:0",
        &dir.path().join("data"),
        &["--lease-ttl", "3", "--heartbeat-interval", "0.5"],
    );
    let id = submit(&url, &spec, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = workers(&url, &["slow-link"]).await;
        let lease = lease_for(&mut client, "slow-link").await;
        // The result goes out in pieces over 5 s, more than the lease's
        // 3 s, with no heartbeat beside it.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut uploader = client.clone();
        let call = tokio::spawn(async move {
            uploader
                .complete(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        let piece = |last: bool| v1::CompleteChunk {
            worker_id: "slow-link".into(),
            experiment_id: lease.experiment_id.clone(),
            job_key: lease.job_key.clone(),
            attempt: lease.attempt,
            last,
            ..Default::default()
        };
        for _ in 0..10 {
            tx.send(piece(false)).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        // Still this worker's lease, not expired and handed on.
        let s = status(&url, &id);
        let j = job_line(&s, &lease.job_key);
        assert_eq!(
            (j["state"].as_str(), j["worker"].as_str()),
            (Some("leased"), Some("slow-link")),
            "{s}"
        );
        tx.send(piece(true)).await.unwrap();
        drop(tx);
        // (An empty result is refused as a result; the lease was kept.)
        let _ = call.await.unwrap();
    });
}

#[test]
fn a_lapsed_job_is_not_leased_to_a_slot_of_the_worker_that_still_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(
        dir.path(),
        "[protocol]\ntasks = [\"screening\"]\n[retry]\nbackoff_seconds = 0.1\n",
    );
    make_data(&spec);
    let (_coord, url) = start_coordinator(
        dir.path(),
        "127.0.0.1:0",
        &dir.path().join("data"),
        &["--lease-ttl", "2", "--heartbeat-interval", "0.5"],
    );
    let id = submit(&url, &spec, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = rt.block_on(workers(&url, &["w", "v"]));
    // Worker w's slots take all five rounds; then w is cut off, and every
    // lease lapses with the rounds back in the queue.
    let leases: Vec<v1::Lease> = rt.block_on(async {
        let mut all = Vec::new();
        for _ in 0..5 {
            all.push(lease_for(&mut client, "w").await);
        }
        all
    });
    wait_for(
        "the five leases to lapse",
        std::time::Duration::from_secs(30),
        || {
            let s = status(&url, &id);
            leases.iter().all(|l| {
                let j = job_line(&s, &l.job_key);
                j["state"] == "pending"
                    && j["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("lease expired"))
            })
        },
    );
    let running = |ls: &[v1::Lease]| -> Vec<v1::RunningAttempt> {
        ls.iter()
            .map(|l| v1::RunningAttempt {
                experiment_id: l.experiment_id.clone(),
                job_key: l.job_key.clone(),
                attempt: l.attempt,
            })
            .collect()
    };
    let ask = |client: &mut Client, worker: &str, running: Vec<v1::RunningAttempt>| {
        let req = v1::LeaseRequest {
            worker_id: worker.into(),
            free_slots: 1,
            wait_seconds: 0.0,
            gpu: Some(false),
            running,
        };
        rt.block_on(client.lease(req)).unwrap().into_inner().lease
    };
    // Back, w's idle slot says its other slots still run the first four:
    // it is given the fifth, the one it no longer runs, as a new attempt.
    let fifth = ask(&mut client, "w", running(&leases[..4])).expect("a lease");
    assert_eq!(
        (fifth.job_key.as_str(), fifth.attempt),
        (leases[4].job_key.as_str(), leases[4].attempt + 1)
    );
    // Nothing else for it, though four rounds are queued.
    assert_eq!(ask(&mut client, "w", running(&leases[..4])), None);
    // Its busy slot's heartbeat takes its attempt up again.
    let first = &leases[0];
    let beat = rt
        .block_on(client.heartbeat(v1::HeartbeatRequest {
            worker_id: "w".into(),
            experiment_id: first.experiment_id.clone(),
            job_key: first.job_key.clone(),
            attempt: first.attempt,
            progress: None,
        }))
        .unwrap()
        .into_inner();
    assert!(beat.keep_going);
    // Another worker is served a lapsed round: w's running list is w's own.
    let other = ask(&mut client, "v", Vec::new()).expect("a lease for v");
    let held: Vec<&str> = leases[1..4].iter().map(|l| l.job_key.as_str()).collect();
    assert!(held.contains(&other.job_key.as_str()), "{other:?}");
    assert_eq!(other.attempt, 2);
    let s = status(&url, &id);
    let j = job_line(&s, &first.job_key);
    assert_eq!(
        (
            j["state"].as_str(),
            j["worker"].as_str(),
            j["attempt"].as_u64()
        ),
        (Some("leased"), Some("w"), Some(u64::from(first.attempt))),
        "{s}"
    );
}

#[test]
fn a_result_that_is_not_the_rounds_test_set_fails_its_attempt_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(
        dir.path(),
        "[protocol]\ntasks = [\"screening\"]\n[retry]\nbackoff_seconds = 0.1\n",
    );
    make_data(&spec);
    let (_coord, url) = start_coordinator(dir.path(), "127.0.0.1:0", &dir.path().join("data"), &[]);
    let id = submit(&url, &spec, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key, refused) = rt.block_on(async {
        let mut client = workers(&url, &["w"]).await;
        let lease = lease_for(&mut client, "w").await;
        // The round's test images, from the plan the lease carries, with
        // the first scored twice and the last left out.
        let plan: serde_json::Value = serde_json::from_str(&lease.plan_json).unwrap();
        let round = plan["tasks"]["screening"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["round"] == lease.round)
            .unwrap()
            .clone();
        let mut images: Vec<String> = round["test"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect();
        let (first, last) = (images[0].clone(), images.pop().unwrap());
        images.push(first.clone());
        let predictions = images
            .iter()
            .map(|image| v1::Prediction {
                image: image.clone(),
                label: "normal".into(),
                score: 0.5,
                ..Default::default()
            })
            .collect();
        let chunk = v1::CompleteChunk {
            worker_id: "w".into(),
            experiment_id: lease.experiment_id.clone(),
            job_key: lease.job_key.clone(),
            attempt: lease.attempt,
            predictions,
            last: true,
            ..Default::default()
        };
        let err = client
            .complete(tokio_stream::iter(vec![chunk]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        let why = err.message().to_string();
        assert!(why.contains(&format!("1 missing (first: {last})")), "{why}");
        assert!(
            why.contains(&format!("1 scored twice (first: {first})")),
            "{why}"
        );
        (lease.job_key, why)
    });
    // The attempt failed at once with that reason, and the round is queued
    // again: not left to expire as a worker that stopped heartbeating.
    let s = status(&url, &id);
    let j = job_line(&s, &key);
    assert_eq!(j["state"], "pending", "{s}");
    let error = j["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("result refused") && error.contains(&refused),
        "{j}"
    );
}
