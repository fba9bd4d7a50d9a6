//! # msk-gate — MSK's front door on one machine
//!
//! A Kafka-protocol proxy on 127.0.0.1:9098 in front of the local broker. Like MSK with IAM
//! authentication it speaks TLS (with a CA it makes at start and writes to a file clients trust)
//! and SASL OAUTHBEARER, and checks MSK IAM tokens: a SigV4-presigned `kafka-cluster:Connect` URL
//! signed with the configured test credentials, for the configured region, not expired
//! ([`token`]). Refused tokens get "Access denied" and the connection is closed.
//!
//! It enforces MSK Serverless's connection quotas — 3,000 client connections and 100 connection
//! attempts per second by default — failing authentication with "Too many connects" over quota,
//! as MSK does ([`state`]). Sessions end with the token (or a configured maximum) and clients must
//! re-authenticate (KIP-368). Everything else is forwarded to the broker, with broker addresses in
//! Metadata, FindCoordinator and DescribeCluster responses rewritten to the gate so clients never
//! go around it ([`proxy`]). Chaos switches and counters are served over HTTP ([`admin`]).
//!
//! The gate's fault tests (`tests/faults.rs`) prove delivery rules 2 and 3 of the drain under
//! authentication failures and throttling: a refused or throttled client is backed off, never
//! dead-lettered, and what the gate refuses comes back from the buffer, never lost.

pub mod admin;
mod frame;
pub mod proxy;
pub mod state;
pub mod tls;
pub mod token;

use std::sync::Arc;

/// Accepts client connections on `listener` until the task is dropped.
pub async fn serve(
    gate: Arc<state::Gate>,
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let admission = gate.admit();
        let (gate, tls) = (gate.clone(), tls.clone());
        tokio::spawn(async move {
            if let Err(e) = proxy::handle(gate, tls, tcp, admission).await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}
