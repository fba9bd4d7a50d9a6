//! The gate's shared state: quotas, chaos switches and counters.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::token::Verifier;

/// MSK Serverless's connection quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Most client connections at once (MSK Serverless: 3,000).
    pub max_connections: u64,
    /// Most new connections per second (MSK Serverless: 100).
    pub max_connects_per_sec: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_connections: 3000,
            max_connects_per_sec: 100,
        }
    }
}

/// Counters, as `GET /stats` shows them.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    /// TCP connections accepted within quota.
    pub connections_accepted: AtomicU64,
    /// Connections refused for a quota ("Too many connects").
    pub connections_throttled: AtomicU64,
    /// Successful authentications (re-authentications included).
    pub auth_accepted: AtomicU64,
    /// Authentications refused for a bad or expired token, or by the chaos switch.
    pub auth_refused: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
}

/// Why a connection may not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within quota.
    Admitted,
    /// Over a quota: authentication fails with "Too many connects".
    Throttled,
}

/// Everything connection handlers share.
#[derive(Debug)]
pub struct Gate {
    /// Token checks.
    pub verifier: Verifier,
    /// The broker behind the gate.
    pub broker: String,
    /// The address clients use for the gate, written into broker metadata.
    pub advertised_host: String,
    /// See `advertised_host`.
    pub advertised_port: i32,
    /// Longest authenticated session in ms; 0 means until the token expires. Clients
    /// re-authenticate before it ends (KIP-368), as they must with MSK.
    max_session_ms: AtomicU64,
    /// Counters.
    pub counters: Counters,
    quotas: RwLock<(Quotas, Arc<DefaultDirectRateLimiter>)>,
    refuse_until: RwLock<Option<Instant>>,
    latency_ms: AtomicU64,
    drop_all: tokio::sync::watch::Sender<u64>,
}

fn limiter(per_sec: u32) -> Arc<DefaultDirectRateLimiter> {
    let per_sec = NonZeroU32::new(per_sec.max(1)).expect("at least 1");
    // Burst equal to the per-second rate: MSK counts attempts per second.
    Arc::new(RateLimiter::direct(
        Quota::per_second(per_sec).allow_burst(per_sec),
    ))
}

impl Gate {
    /// A gate in front of `broker`.
    pub fn new(
        verifier: Verifier,
        broker: String,
        advertised_host: String,
        advertised_port: i32,
        quotas: Quotas,
        max_session: Duration,
    ) -> Self {
        Self {
            verifier,
            broker,
            advertised_host,
            advertised_port,
            max_session_ms: AtomicU64::new(
                u64::try_from(max_session.as_millis()).unwrap_or(u64::MAX),
            ),
            counters: Counters::default(),
            quotas: RwLock::new((quotas, limiter(quotas.max_connects_per_sec))),
            refuse_until: RwLock::new(None),
            latency_ms: AtomicU64::new(0),
            drop_all: tokio::sync::watch::channel(0).0,
        }
    }

    /// Counts a new connection against the quotas.
    pub fn admit(&self) -> Admission {
        let (quotas, limiter) = self
            .quotas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let open = self.counters.connections_open.load(Ordering::SeqCst);
        if limiter.check().is_err() || open >= quotas.max_connections {
            self.counters
                .connections_throttled
                .fetch_add(1, Ordering::Relaxed);
            Admission::Throttled
        } else {
            self.counters
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            Admission::Admitted
        }
    }

    /// Longest authenticated session; zero: until the token expires.
    pub fn max_session(&self) -> Duration {
        Duration::from_millis(self.max_session_ms.load(Ordering::Relaxed))
    }

    /// Changes the longest session for authentications from now on.
    pub fn set_max_session(&self, max_session: Duration) {
        self.max_session_ms.store(
            u64::try_from(max_session.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The quotas in force.
    pub fn quotas(&self) -> Quotas {
        self.quotas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// Replaces the quotas.
    pub fn set_quotas(&self, quotas: Quotas) {
        *self
            .quotas
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (quotas, limiter(quotas.max_connects_per_sec));
    }

    /// Refuses every authentication for `for_how_long`.
    pub fn refuse_auth(&self, for_how_long: Duration) {
        *self
            .refuse_until
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            // Saturating: no duration can overflow the clock (the admin API also caps it).
            Some(
                Instant::now()
                    .checked_add(for_how_long)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
            );
    }

    /// Whether authentications are being refused by the chaos switch.
    pub fn refusing_auth(&self) -> bool {
        self.refuse_until
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Delay added before forwarding each request.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    /// Sets the added delay.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Closes every open connection.
    pub fn drop_connections(&self) {
        self.drop_all.send_modify(|n| *n += 1);
    }

    /// Resolves when [`Gate::drop_connections`] is called.
    pub fn dropped(&self) -> tokio::sync::watch::Receiver<u64> {
        self.drop_all.subscribe()
    }
}
