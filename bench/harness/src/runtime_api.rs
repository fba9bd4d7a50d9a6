//! A stand-in for the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`), the HTTP interface a
//! function's runtime polls for invocations and answers them on: `GET
//! /2018-06-01/runtime/invocation/next` (held until there is an invocation, as Lambda holds it),
//! `POST …/invocation/{id}/response` and `…/error`, `POST /runtime/init/error`.
//!
//! As on Lambda Managed Instances, any number of `next` polls may be open at once: each takes its
//! own invocation, and the stand-in keeps count of the polls waiting and of the invocations handed
//! out and not yet answered (and their peak), so a test can see how many a runtime served at
//! once. An answer for an id that is not in flight (never handed out, or answered already) is
//! refused with 400, as Lambda does, and kept in [`Snapshot::protocol_errors`].
//!
//! Used by the cold-start benchmark (`coldstart`) and buffer-drain's concurrency test. Lambda
//! itself cannot run on this machine, so this is the one stand-in for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;

/// How an invocation was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `true` for `/response`, `false` for `/error`.
    pub ok: bool,
    /// The body posted.
    pub body: String,
}

/// The stand-in's state at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When the first `next` poll arrived: the runtime finished its init.
    pub first_poll: Option<Instant>,
    /// `next` polls open and waiting for an invocation.
    pub polls_waiting: usize,
    /// Invocations queued and not yet handed out.
    pub queued: usize,
    /// Invocations handed out and not yet answered.
    pub in_flight: usize,
    /// The most invocations in flight at once.
    pub peak_in_flight: usize,
    /// Answers by request id.
    pub answers: HashMap<String, Answer>,
    /// What the runtime posted to `/runtime/init/error`.
    pub init_error: Option<String>,
    /// Answers Lambda would refuse (an id not in flight).
    pub protocol_errors: Vec<String>,
}

struct Invocation {
    id: String,
    event: String,
    /// Time to run, counted from the hand-out (when the invocation starts).
    timeout: Duration,
}

#[derive(Default)]
struct Inner {
    snapshot: Snapshot,
    queue: VecDeque<Invocation>,
    in_flight: HashSet<String>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running stand-in on a loopback port; stops when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

/// Counts a `next` poll as waiting while it is held, also when the runtime goes away mid-poll.
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().snapshot.polls_waiting -= 1;
        self.0.changed.notify_waiters();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> (HeaderMap, String) {
    let mut waiting = None;
    let invocation = loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut inner = shared.lock();
            inner.snapshot.first_poll.get_or_insert_with(Instant::now);
            if let Some(invocation) = inner.queue.pop_front() {
                inner.in_flight.insert(invocation.id.clone());
                let s = &mut inner.snapshot;
                s.queued -= 1;
                s.in_flight += 1;
                s.peak_in_flight = s.peak_in_flight.max(s.in_flight);
                break invocation;
            }
            if waiting.is_none() {
                inner.snapshot.polls_waiting += 1;
                waiting = Some(Waiting(&shared));
                drop(inner);
                // Only on a change: a poll that woke others for nothing would be woken back.
                shared.changed.notify_waiters();
            }
        }
        changed.await;
    };
    drop(waiting);
    shared.changed.notify_waiters();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &invocation.id);
    let deadline_ms = spillway_core::envelope::now_ms()
        + u64::try_from(invocation.timeout.as_millis()).unwrap_or(u64::MAX / 2);
    set("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:stand-in",
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    );
    (headers, invocation.event)
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    Path((id, kind)): Path<(String, String)>,
    body: String,
) -> (StatusCode, &'static str) {
    let status = {
        let mut inner = shared.lock();
        if kind != "response" && kind != "error" {
            StatusCode::NOT_FOUND
        } else if inner.in_flight.remove(&id) {
            inner.snapshot.in_flight -= 1;
            inner.snapshot.answers.insert(
                id,
                Answer {
                    ok: kind == "response",
                    body,
                },
            );
            StatusCode::ACCEPTED
        } else {
            inner
                .snapshot
                .protocol_errors
                .push(format!("{kind} for {id}, which is not in flight"));
            StatusCode::BAD_REQUEST
        }
    };
    shared.changed.notify_waiters();
    (status, "{}")
}

async fn init_error(State(shared): State<Arc<Shared>>, body: String) -> (StatusCode, &'static str) {
    shared.lock().snapshot.init_error = Some(body);
    shared.changed.notify_waiters();
    (StatusCode::ACCEPTED, "{}")
}

impl RuntimeApi {
    /// Listens on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the Runtime API stand-in");
        let addr = listener.local_addr().expect("its address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an invocation of `event` with request id `id`, `timeout` to run from when it is
    /// handed out.
    pub fn invoke(&self, id: &str, event: String, timeout: Duration) {
        {
            let mut inner = self.shared.lock();
            inner.queue.push_back(Invocation {
                id: id.to_owned(),
                event,
                timeout,
            });
            inner.snapshot.queued += 1;
        }
        self.shared.changed.notify_waiters();
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snapshot.clone()
    }

    /// Waits until `done` holds for the state, at most `timeout`; the state either way, and whether
    /// `done` held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Snapshot) -> bool,
    ) -> (Snapshot, bool) {
        let ends = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = self.snapshot();
            if done(&now) {
                return (now, true);
            }
            if tokio::time::timeout_at(ends, changed).await.is_err() {
                return (self.snapshot(), false);
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}
