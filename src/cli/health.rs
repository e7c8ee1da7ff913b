//! `crossfold health`: ask the coordinator's gRPC health service whether it
//! serves (exit 0) or not (exit 1), for container health checks and
//! Kubernetes probes (whose native gRPC probes cannot speak TLS).

use super::remote::Target;
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

#[derive(Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub target: Target,
    /// Service to ask about (default: the server as a whole).
    #[arg(long, default_value = "")]
    pub service: String,
}

/// Seconds `health` waits by default: probes want a quick verdict.
const HEALTH_LIMIT: f64 = 5.0;

pub async fn run(a: HealthArgs) -> Result<ExitCode> {
    let limit = a.target.limit(HEALTH_LIMIT)?;
    let security = a.target.security()?;
    // One deadline for the connection and the call: the connection's own
    // limit ends first when the handshakes get no answer, and says so.
    let deadline = tokio::time::Instant::now() + limit;
    let ask = async {
        let channel = super::remote::connect(&a.target.coordinator, &security, limit).await?;
        let mut client = HealthClient::new(channel);
        let call = client.check(HealthCheckRequest {
            service: a.service.clone(),
        });
        match tokio::time::timeout_at(deadline, call).await {
            Ok(reply) => Ok(reply?.into_inner().status()),
            Err(_) => Err(anyhow::anyhow!(
                "no answer within {} s",
                limit.as_secs_f64()
            )),
        }
    };
    match ask.await {
        Ok(ServingStatus::Serving) => {
            println!("SERVING");
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => {
            println!("{}", other.as_str_name());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            let text = match e.downcast_ref::<tonic::Status>() {
                Some(status) => super::remote::rpc_text(status),
                // Connection errors are described where they are made.
                None => format!("{e:#}"),
            };
            eprintln!("unhealthy: {text}");
            Ok(ExitCode::FAILURE)
        }
    }
}
