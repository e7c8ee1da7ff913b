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
    let ask = async {
        let channel = super::remote::connect(&a.target.coordinator, &security, limit).await?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: a.service.clone(),
            })
            .await?;
        Ok::<_, anyhow::Error>(reply.into_inner().status())
    };
    let status = tokio::time::timeout(limit, ask).await;
    match status {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("SERVING");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(other)) => {
            println!("{}", other.as_str_name());
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => {
            let text = match e.downcast_ref::<tonic::Status>() {
                Some(status) => super::remote::rpc_text(status),
                // Connection errors are described where they are made.
                None => format!("{e:#}"),
            };
            eprintln!("unhealthy: {text}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            eprintln!("unhealthy: no answer within {} s", limit.as_secs_f64());
            Ok(ExitCode::FAILURE)
        }
    }
}
