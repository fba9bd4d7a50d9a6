//! msk-gate: MSK's front door on one machine (see the library docs). Started by `local/up`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use msk_gate::state::{Gate, Quotas};
use msk_gate::token::Verifier;

#[derive(Parser)]
#[command(
    about = "MSK's front door on one machine: TLS, MSK IAM (OAUTHBEARER), connection quotas, chaos switches"
)]
struct Args {
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:9098")]
    listen: SocketAddr,
    /// The broker behind the gate.
    #[arg(long, default_value = "127.0.0.1:9092")]
    broker: String,
    /// The admin HTTP API (chaos switches, counters).
    #[arg(long, default_value = "127.0.0.1:9099")]
    admin: SocketAddr,
    /// Where to write the CA certificate (PEM) clients must trust.
    #[arg(long)]
    ca_file: std::path::PathBuf,
    /// Access key tokens must be signed with.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "test")]
    access_key: String,
    /// Its secret.
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        default_value = "test",
        hide_env_values = true
    )]
    secret_key: String,
    /// Region tokens must be signed for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Most client connections at once.
    #[arg(long, default_value_t = 3000)]
    max_connections: u64,
    /// Most new connections per second.
    #[arg(long, default_value_t = 100)]
    max_connects_per_sec: u32,
    /// Longest session before re-authentication, in seconds (0: until the token expires).
    #[arg(long, default_value_t = 0)]
    max_session_secs: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Text, "info");
    let args = Args::parse();
    let tls = msk_gate::tls::generate()?;
    std::fs::write(&args.ca_file, &tls.ca_pem)?;
    let gate = Arc::new(Gate::new(
        Verifier::new(&args.access_key, &args.secret_key, &args.region),
        args.broker.clone(),
        args.listen.ip().to_string(),
        i32::from(args.listen.port()),
        Quotas {
            max_connections: args.max_connections,
            max_connects_per_sec: args.max_connects_per_sec,
        },
        Duration::from_secs(args.max_session_secs),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let admin = tokio::net::TcpListener::bind(args.admin).await?;
    tracing::info!(listen = %args.listen, broker = %args.broker, admin = %args.admin, ca = %args.ca_file.display(), "msk-gate ready");
    tokio::spawn(msk_gate::serve(gate.clone(), listener, tls.acceptor));
    axum::serve(admin, msk_gate::admin::router(gate)).await?;
    Ok(())
}
