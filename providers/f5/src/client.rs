//! The iControl REST session: token login, one re-login on 401, serialised writes, reads of
//! a partition, transactions, node garbage collection and `save`.

use crate::plan::{Command, Current};
use portway_provider::ProviderError;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Mutex;
use tracing::{debug, warn};

/// BIG-IP credentials, read from a Secret; the password never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One BIG-IP device.
pub struct BigIp {
    base: String,
    http: reqwest::Client,
    creds: Mutex<Option<Credentials>>,
    token: Mutex<Option<String>>,
    /// BIG-IP answers 503 to concurrent writers: one write (or transaction) at a time.
    writes: Mutex<()>,
    calls: AtomicU64,
    /// The last login was answered 401.
    refused: AtomicBool,
}

/// A call the device did not accept.
struct Failure {
    /// The HTTP status it answered; `None` when it was not reached or kept answering 401.
    status: Option<StatusCode>,
    /// The provider's error class for it, with the device's message.
    error: ProviderError,
}

impl Failure {
    fn unanswered(error: ProviderError) -> Failure {
        Failure {
            status: None,
            error,
        }
    }

    fn is(&self, status: StatusCode) -> bool {
        self.status == Some(status)
    }
}

/// Why a write was not applied (a commit is all-or-nothing: none of it was).
#[derive(Debug)]
pub(crate) enum TxError {
    /// The partition changed since it was read, by another writer, a previous leader or a
    /// hand edit: a create met an object of that name (409 "already exists"), or an object
    /// to change or delete is gone (404). Reading again turns the create into a PATCH (if
    /// the object is ours) and drops what is gone from the plan. Holds the error to report
    /// when reading again does not help.
    Stale(ProviderError),
    /// Any other failure, classified.
    Failed(ProviderError),
}

impl From<TxError> for ProviderError {
    fn from(e: TxError) -> ProviderError {
        match e {
            TxError::Stale(e) | TxError::Failed(e) => e,
        }
    }
}

/// The device's `message` from an error body, or the start of the body (HTML for a 503).
fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// Turns a BIG-IP answer into the provider's error classes.
fn classify(status: StatusCode, body: &str) -> ProviderError {
    let message = message(body);
    let code = status.as_u16();
    let transient = match code {
        401 | 503 | 502 | 504 => true,
        500 => true,
        404 => message.contains("not registered"),
        _ => false,
    };
    if transient {
        ProviderError::transient(format!("BIG-IP answered {code}: {message}"))
    } else {
        ProviderError::invalid(
            "f5",
            format!("BIG-IP refused the change ({code}): {message}"),
        )
    }
}

impl BigIp {
    /// A client for `base` (https with the system roots or `ca_bundle`; http for tests).
    pub fn new(base: &str, ca_bundle: &str, insecure: bool) -> Result<BigIp, ProviderError> {
        // reqwest is built without a bundled crypto provider; use ring like kube does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .danger_accept_invalid_certs(insecure);
        if !ca_bundle.trim().is_empty() {
            let cert = reqwest::Certificate::from_pem(ca_bundle.as_bytes()).map_err(|e| {
                ProviderError::invalid("f5.caBundle", format!("not a PEM certificate: {e}"))
            })?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| {
            ProviderError::invalid("f5.url", format!("cannot build an HTTP client: {e}"))
        })?;
        Ok(BigIp {
            base: base.trim_end_matches('/').to_string(),
            http,
            creds: Mutex::new(None),
            token: Mutex::new(None),
            writes: Mutex::new(()),
            calls: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        })
    }

    /// Sets the credentials (from the Secret); a change drops the current token.
    pub async fn set_credentials(&self, c: Credentials) {
        self.refused.store(false, Ordering::Relaxed);
        let mut cur = self.creds.lock().await;
        if cur.as_ref() != Some(&c) {
            *cur = Some(c);
            *self.token.lock().await = None;
        }
    }

    /// Whether the device refused the credentials last set: the Secret is then read again
    /// on the next reconcile instead of waiting for the credentials cache to expire.
    pub fn credentials_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// REST calls made so far (for benchmarks).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn login(&self) -> Result<String, ProviderError> {
        let creds = self
            .creds
            .lock()
            .await
            .clone()
            .ok_or_else(|| ProviderError::transient("BIG-IP credentials not loaded yet"))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = self
            .http
            .post(format!("{}/mgmt/shared/authn/login", self.base))
            .json(&json!({"username": creds.username, "password": creds.password, "loginProviderName": "tmos"}))
            .send()
            .await
            .map_err(|e| ProviderError::transient(format!("BIG-IP login: {e}")))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED {
            self.refused.store(true, Ordering::Relaxed);
            return Err(ProviderError::invalid(
                "f5.credentialsSecret",
                "the BIG-IP refused the username/password in the Secret",
            ));
        }
        if !status.is_success() {
            return Err(classify(status, &text));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let token = v["token"]["token"]
            .as_str()
            .ok_or_else(|| ProviderError::transient("BIG-IP login reply without token.token"))?
            .to_string();
        // Extend the lifetime and read back what the device granted.
        self.calls.fetch_add(1, Ordering::Relaxed);
        let ext = self
            .http
            .patch(format!("{}/mgmt/shared/authz/tokens/{token}", self.base))
            .header("X-F5-Auth-Token", &token)
            .json(&json!({"timeout": 3600}))
            .send()
            .await;
        match ext {
            Ok(r) if r.status().is_success() => {
                let granted = r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["timeout"].as_u64());
                debug!(?granted, "BIG-IP token lifetime");
            }
            Ok(r) => {
                warn!(status = %r.status(), "BIG-IP token lifetime not extended; re-login on expiry")
            }
            Err(e) => warn!(%e, "BIG-IP token lifetime not extended"),
        }
        Ok(token)
    }

    async fn token(&self) -> Result<String, ProviderError> {
        let mut t = self.token.lock().await;
        if let Some(tok) = t.as_ref() {
            return Ok(tok.clone());
        }
        let tok = self.login().await?;
        *t = Some(tok.clone());
        Ok(tok)
    }

    /// One REST call; logs in again once on 401.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        tx: Option<u64>,
    ) -> Result<Value, ProviderError> {
        self.exchange(method, path, body, tx)
            .await
            .map_err(|f| f.error)
    }

    /// [`BigIp::call`], keeping the status of a refusal for callers that tell them apart.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        tx: Option<u64>,
    ) -> Result<Value, Failure> {
        for attempt in 0..2 {
            let token = self.token().await.map_err(Failure::unanswered)?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("X-F5-Auth-Token", &token);
            if let Some(id) = tx {
                req = req.header("X-F5-REST-Coordination-Id", id.to_string());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req.send().await.map_err(|e| {
                Failure::unanswered(ProviderError::transient(format!(
                    "BIG-IP {method} {path}: {e}"
                )))
            })?;
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                *self.token.lock().await = None;
                continue;
            }
            if !status.is_success() {
                return Err(Failure {
                    status: Some(status),
                    error: classify(status, &text),
                });
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        Err(Failure::unanswered(ProviderError::transient(
            "BIG-IP kept answering 401 after a fresh login",
        )))
    }

    /// Creates the partition unless it exists.
    pub async fn ensure_partition(&self, partition: &str) -> Result<(), ProviderError> {
        match self
            .exchange(
                Method::GET,
                &format!("/mgmt/tm/auth/partition/{partition}"),
                None,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if f.is(StatusCode::NOT_FOUND) => {
                let _w = self.writes.lock().await;
                match self
                    .exchange(
                        Method::POST,
                        "/mgmt/tm/auth/partition",
                        Some(&json!({"name": partition, "description": "managed by Portway"})),
                        None,
                    )
                    .await
                {
                    // 409: created meanwhile by another writer, which is what we wanted.
                    Ok(_) => Ok(()),
                    Err(f) if f.is(StatusCode::CONFLICT) => Ok(()),
                    Err(f) => Err(f.error),
                }
            }
            Err(f) => Err(f.error),
        }
    }

    async fn items(&self, path: &str) -> Result<Vec<Value>, ProviderError> {
        let v = self.call(Method::GET, path, None, None).await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Monitors, pools (with members) and virtuals of a partition.
    pub async fn read(&self, partition: &str) -> Result<Current, ProviderError> {
        let filter = format!("$filter=partition+eq+{partition}");
        Ok(Current {
            monitors: self
                .items(&format!("/mgmt/tm/ltm/monitor/tcp?{filter}"))
                .await?,
            pools: self
                .items(&format!(
                    "/mgmt/tm/ltm/pool?{filter}&expandSubcollections=true"
                ))
                .await?,
            virtuals: self
                .items(&format!("/mgmt/tm/ltm/virtual?{filter}"))
                .await?,
        })
    }

    /// A single write, serialised with every other write to the device.
    pub async fn write(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, ProviderError> {
        let _w = self.writes.lock().await;
        self.call(method, path, Some(body), None).await
    }

    /// A member PATCH of one pool: a pool that is gone (404, deleted by hand since the
    /// read) is [`TxError::Stale`], so the caller reads again and recreates it.
    pub(crate) async fn patch_members(&self, path: &str, body: &Value) -> Result<(), TxError> {
        let _w = self.writes.lock().await;
        match self.exchange(Method::PATCH, path, Some(body), None).await {
            Ok(_) => Ok(()),
            Err(f) if f.is(StatusCode::NOT_FOUND) => Err(TxError::Stale(f.error)),
            Err(f) => Err(TxError::Failed(f.error)),
        }
    }

    /// Runs `commands` as one transaction, telling a partition that changed since it was
    /// read ([`TxError::Stale`], which the caller converges by reading again) from other
    /// failures.
    pub(crate) async fn transaction(&self, commands: &[Command]) -> Result<(), TxError> {
        if commands.is_empty() {
            return Ok(());
        }
        let failed = |f: Failure| TxError::Failed(f.error);
        let _w = self.writes.lock().await;
        let t = self
            .exchange(Method::POST, "/mgmt/tm/transaction", Some(&json!({})), None)
            .await
            .map_err(failed)?;
        let id = t["transId"].as_u64().ok_or_else(|| {
            TxError::Failed(ProviderError::transient(
                "BIG-IP transaction reply without transId",
            ))
        })?;
        for c in commands {
            let method = Method::from_bytes(c.method.as_bytes()).unwrap_or(Method::PATCH);
            let body = (!c.body.is_null()).then_some(&c.body);
            self.exchange(method, &c.path, body, Some(id))
                .await
                .map_err(failed)?;
        }
        // The commit carries no coordination header.
        let done = match self
            .exchange(
                Method::PATCH,
                &format!("/mgmt/tm/transaction/{id}"),
                Some(&json!({"state": "VALIDATING"})),
                None,
            )
            .await
        {
            Ok(d) => d,
            // A create met an object made after our read (01020066 "already exists"; 409,
            // some versions 400). Nothing was applied.
            Err(Failure {
                status,
                error: ProviderError::Invalid { field, reason },
            }) if status == Some(StatusCode::CONFLICT)
                || reason.contains("01020066")
                || reason.contains("already exists") =>
            {
                return Err(TxError::Stale(ProviderError::Invalid {
                    field,
                    reason: format!(
                        "{reason}; an object of that name is in the partition but not tagged as this Service's (portway-uid): delete or rename it on the BIG-IP"
                    ),
                }));
            }
            // An object we change was deleted between our read and the commit (drift):
            // nothing was applied; read again and retry.
            Err(Failure {
                error: ProviderError::Invalid { reason, .. },
                ..
            }) if reason.contains("was not found") => {
                return Err(TxError::Stale(ProviderError::transient(format!(
                    "BIG-IP transaction {id} raced with a change: {reason}"
                ))));
            }
            Err(f) => return Err(failed(f)),
        };
        if done["state"] != "COMPLETED" {
            return Err(TxError::Failed(ProviderError::transient(format!(
                "BIG-IP transaction {id} ended {}: {}",
                done["state"], done["failureReason"]
            ))));
        }
        Ok(())
    }

    /// Deletes nodes of the partition that no pool member references (best effort).
    pub async fn gc_nodes(&self, partition: &str) {
        let filter = format!("$filter=partition+eq+{partition}");
        let (Ok(nodes), Ok(pools)) = (
            self.items(&format!("/mgmt/tm/ltm/node?{filter}")).await,
            self.items(&format!(
                "/mgmt/tm/ltm/pool?{filter}&expandSubcollections=true"
            ))
            .await,
        ) else {
            return;
        };
        let used: Vec<String> = pools
            .iter()
            .flat_map(|p| {
                p.pointer("/membersReference/items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|m| m["address"].as_str().map(String::from))
            .collect();
        for n in nodes {
            let addr = n["address"].as_str().unwrap_or("");
            if used.iter().any(|u| u == addr) {
                continue;
            }
            let name = n["name"].as_str().unwrap_or("");
            let path = format!(
                "/mgmt/tm/ltm/node/{}",
                crate::names::uri_name(partition, name)
            );
            let _w = self.writes.lock().await;
            if let Err(e) = self.call(Method::DELETE, &path, None, None).await {
                // "still referenced" (another writer's member) is fine; try next time.
                debug!(node = name, %e, "node not deleted");
            }
        }
    }

    /// Saves the running configuration so a reboot keeps it.
    pub async fn save(&self) -> Result<(), ProviderError> {
        self.write(
            Method::POST,
            "/mgmt/tm/sys/config",
            &json!({"command": "save"}),
        )
        .await
        .map(|_| ())
    }

    /// Deletes the token (at shutdown: a user may hold at most 100).
    pub async fn logout(&self) {
        if let Some(t) = self.token.lock().await.take() {
            let _ = self
                .http
                .delete(format!("{}/mgmt/shared/authz/tokens/{t}", self.base))
                .header("X-F5-Auth-Token", &t)
                .send()
                .await;
        }
    }
}
