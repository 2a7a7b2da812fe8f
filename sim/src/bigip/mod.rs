//! A simulated F5 BIG-IP: the iControl REST behaviour the f5 provider relies on, so it can be
//! tested end to end without an appliance (no usable emulator exists).
//!
//! It was first written from the same reading of the documentation as the provider, which
//! hid the provider's mistakes; every behaviour now names the recorded device response or
//! mature client it follows, in the module that implements it, and the sim's own tests
//! (`tests/`) quote those sources:
//! - `auth`: token login, lifetime and the 100-token cap, 401 bodies for an expired token
//!   and for a permission denial, Administrator and partition-scoped Manager roles;
//! - `schema`: the properties each object kind accepts (`metadata` on pool, virtual and
//!   node, never on a monitor) and the 400 "Found unexpected json pair" for any other;
//! - `render`: the trailing space on a pool's monitor reference, subcollections shown only
//!   with `expandSubcollections=true`, route domains in addresses;
//! - `nodes`: members naming their node and partition (`/Common` when unnamed), one node
//!   per IP and route domain across partitions, nodes undeletable while referenced;
//! - `address`: route domains (`%N`, the partition's `defaultRouteDomain`);
//! - `ltm`: PATCH vs PUT, immutable monitor parents, references that must exist;
//! - `store`: partitions, transactions (all-or-nothing, expiring), injectable 503 / mcpd
//!   faults and concurrent writers. Objects live in memory.
//! - `traffic`: counters of calls and bytes, and an optional latency model (per call and
//!   per KiB of response), for benchmarks.

mod address;
mod auth;
mod ltm;
mod nodes;
mod render;
mod schema;
mod store;
#[cfg(test)]
mod tests;
mod traffic;

pub use address::RouteDomainDisplay;
pub use auth::Role;
pub use store::Request;
pub use traffic::{Latency, Traffic};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{BigIpState, Fault};
use tokio::sync::oneshot;

/// A running simulated BIG-IP.
pub struct BigIpSim {
    url: String,
    state: Arc<Mutex<BigIpState>>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for BigIpSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigIpSim").field("url", &self.url).finish()
    }
}

fn lock(s: &Mutex<BigIpState>) -> std::sync::MutexGuard<'_, BigIpState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl BigIpSim {
    /// Starts on a free loopback port with user `admin` / password `admin`.
    pub async fn start() -> anyhow::Result<BigIpSim> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<BigIpSim> {
        let state = Arc::new(Mutex::new(BigIpState::new("admin", "admin")));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(BigIpSim {
            url,
            state,
            stop: Some(tx),
        })
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the account the simulator started with (an Administrator) by `user` with
    /// `password`, as when an administrator rotates the password.
    pub fn set_credentials(&self, user: &str, password: &str) {
        let mut s = lock(&self.state);
        let old = std::mem::replace(&mut s.default_user, user.to_string());
        s.users.remove(&old);
        s.users.insert(
            user.to_string(),
            auth::User {
                password: password.to_string(),
                role: Role::Administrator,
            },
        );
    }

    /// Adds (or replaces) an account with `role`.
    pub fn add_user(&self, user: &str, password: &str, role: Role) {
        lock(&self.state).users.insert(
            user.to_string(),
            auth::User {
                password: password.to_string(),
                role,
            },
        );
    }

    /// Creates a partition whose `defaultRouteDomain` is `route_domain`, or changes the
    /// default of an existing one.
    pub fn set_partition(&self, partition: &str, route_domain: u32) {
        lock(&self.state)
            .partitions
            .insert(partition.to_string(), route_domain);
    }

    /// How addresses show their route domain in what the device returns.
    pub fn set_route_domain_display(&self, display: RouteDomainDisplay) {
        lock(&self.state).rd_display = display;
    }

    /// How long an open transaction lives before it is silently removed (default 120 s).
    pub fn set_transaction_timeout(&self, timeout: Duration) {
        lock(&self.state).tx_timeout = timeout;
    }

    /// Live tokens `user` holds now.
    pub fn tokens_held(&self, user: &str) -> usize {
        let s = lock(&self.state);
        let now = Instant::now();
        s.tokens
            .values()
            .filter(|t| t.user == user && t.expires > now)
            .count()
    }

    /// Successful logins so far.
    pub fn logins(&self) -> usize {
        lock(&self.state).logins
    }

    /// Sets the lifetime of new tokens (default 1200 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.state).default_timeout = lifetime.as_secs();
    }

    /// Makes every issued token expire now (the next call gets 401).
    pub fn expire_tokens(&self) {
        let mut s = lock(&self.state);
        let now = Instant::now();
        for t in s.tokens.values_mut() {
            t.expires = now;
        }
    }

    /// Answers the next `n` requests (login excluded) with 503 "Configuration Utility restarting".
    pub fn fail_next_503(&self, n: usize) {
        lock(&self.state)
            .faults
            .extend(std::iter::repeat_n(Fault::Unavailable, n));
    }

    /// Answers the next `n` requests with 500 "The connection to mcpd has been lost".
    pub fn fail_next_mcpd(&self, n: usize) {
        lock(&self.state)
            .faults
            .extend(std::iter::repeat_n(Fault::Mcpd, n));
    }

    /// Every request so far (method, path, whether it was inside a transaction).
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state).log.clone()
    }

    /// Forgets the request log.
    pub fn reset_requests(&self) {
        lock(&self.state).log.clear();
    }

    /// Objects of one collection (`pool`, `virtual`, `monitor/tcp`, `node`,
    /// `virtual-address`) in a partition, as an expanded GET shows them.
    pub fn objects(&self, collection: &str, partition: &str) -> Vec<Value> {
        lock(&self.state).list(store::SYSTEM, collection, Some(partition), true)
    }

    /// Deletes an object behind the provider's back (drift), ignoring references.
    pub fn delete_by_hand(&self, collection: &str, partition: &str, name: &str) -> bool {
        lock(&self.state).remove(collection, &format!("/{partition}/{name}"))
    }

    /// Creates an object behind the provider's back (`POST` to `collection` with `body`,
    /// e.g. `{"name": .., "partition": ..}`), with the device's own checks: the partition
    /// must exist and the name be free. Returns the device's error message when refused.
    pub fn create_by_hand(&self, collection: &str, body: Value) -> Result<(), String> {
        match lock(&self.state).create(store::SYSTEM, collection, body) {
            (code, _) if code < 300 => Ok(()),
            (_, out) => Err(out["message"].as_str().unwrap_or("refused").to_string()),
        }
    }

    /// Creates an object as a concurrent writer would, between a client's reads and its
    /// writes: just before the next LTM write or transaction call is served. A client that
    /// read the partition then finds its create answered 409 "already exists".
    pub fn create_before_next_write(&self, collection: &str, body: Value) {
        lock(&self.state)
            .pending
            .push(store::Meanwhile::Create(collection.to_string(), body));
    }

    /// Deletes an object the way [`Self::create_before_next_write`] creates one: just
    /// before the next write. A client that read the partition then finds a DELETE or
    /// PATCH of it failing with "was not found" at commit.
    pub fn delete_before_next_write(&self, collection: &str, partition: &str, name: &str) {
        lock(&self.state).pending.push(store::Meanwhile::Delete(
            collection.to_string(),
            format!("/{partition}/{name}"),
        ));
    }

    /// Changes fields of an object behind the provider's back (drift), as a PATCH would;
    /// false when the object does not exist or the change is refused.
    pub fn modify_by_hand(
        &self,
        collection: &str,
        partition: &str,
        name: &str,
        patch: Value,
    ) -> bool {
        let path = format!("{}/~{partition}~{name}", collection.trim_end_matches('/'));
        lock(&self.state)
            .ltm(store::SYSTEM, &Method::PATCH, &path, "", patch)
            .0
            < 300
    }

    /// Charges every call the latency of `model` from now on (`None`, the default: answer at
    /// once). See [`Latency`] for the model the benchmarks use.
    pub fn set_latency(&self, model: Option<Latency>) {
        lock(&self.state).latency = model;
    }

    /// The REST traffic counted since the start or the last [`Self::reset_traffic`].
    pub fn traffic(&self) -> Traffic {
        lock(&self.state).traffic
    }

    /// Starts counting traffic afresh (before each operation a benchmark measures).
    pub fn reset_traffic(&self) {
        lock(&self.state).traffic = Traffic::default();
    }

    /// How many `save` commands were received.
    pub fn saves(&self) -> usize {
        lock(&self.state).saves
    }

    /// Stops serving.
    pub fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for BigIpSim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn reply(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<BigIpState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_bytes = body.len();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return reply(
                    400,
                    json!({"code": 400, "message": format!("Found invalid JSON body in the request: {e}"), "errorStack": []}),
                );
            }
        }
    };
    let token = headers
        .get("x-f5-auth-token")
        .and_then(|h| h.to_str().ok())
        .map(String::from);
    let tx = headers
        .get("x-f5-rest-coordination-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<u64>().ok());
    let (code, out, latency) = {
        let mut s = lock(&state);
        let (code, out) = s.serve(
            &method,
            uri.path(),
            uri.query().unwrap_or(""),
            token,
            tx,
            body,
        );
        (code, out, s.latency)
    };
    let (content_type, text) = if code == 503 {
        (
            "text/html",
            "<html><body>Configuration Utility restarting...</body></html>".to_string(),
        )
    } else {
        ("application/json", out.to_string())
    };
    let cost = latency.map_or(Duration::ZERO, |l| l.cost(text.len()));
    lock(&state)
        .traffic
        .record(method.as_str(), uri.path(), request_bytes, text.len(), cost);
    // Outside the lock: concurrent calls overlap, as on a device's REST front end.
    if !cost.is_zero() {
        tokio::time::sleep(cost).await;
    }
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", content_type)],
        text,
    )
        .into_response()
}
