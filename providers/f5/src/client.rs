//! One BIG-IP device: the partition, serialised writes, transactions, node cleanup and
//! `save`. Reads of the partition are in `reads`; the session (tokens, 401s) in `session`.

use crate::plan::Command;
use crate::session::{Credentials, Failure, Session};
use crate::tag::is_portway_node;
use portway_provider::ProviderError;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

/// One BIG-IP device.
pub struct BigIp {
    session: Session,
    /// BIG-IP answers 503 to concurrent writers: one write (or transaction) at a time.
    writes: Mutex<()>,
    /// `sys config save` was refused for lack of permission (logged once).
    save_refused: AtomicBool,
}

/// The partition Portway writes to, as the device describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Its `defaultRouteDomain`: Portway's addresses are written without `%N` and so live
    /// there, and what the device returns is compared with `%N` stripped.
    pub route_domain: u32,
    /// Every partition the account may read, with its `defaultRouteDomain` (a node address
    /// without `%N` lives in its partition's).
    pub defaults: BTreeMap<String, u32>,
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

/// A refusal that names what to fix rather than the bare device message (which stays in
/// the log): a monitor named in `f5.monitor` that does not exist, or a node address held by
/// a partition Portway cannot read (one IP is a node once per route domain, across
/// partitions). Only what Portway itself sent (the monitor's path, the node's address) is
/// quoted back.
fn needs_a_fix(message: &str) -> Option<ProviderError> {
    if let Some(rest) = message
        .split_once("The requested monitor (")
        .map(|(_, r)| r)
    {
        let path = rest.split_once(')').map_or("", |(p, _)| p);
        return Some(ProviderError::invalid(
            "f5.monitor",
            format!(
                "the monitor {path} that f5.monitor names does not exist on the BIG-IP; create it or correct the path"
            ),
        ));
    }
    if message.contains("Invalid Node") {
        let address = message
            .split_once("IP address ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("");
        return Some(ProviderError::invalid(
            "f5.partition",
            format!(
                "the node address {address} is held in a partition this account cannot read; share the node through /Common, or let the account read its partition"
            ),
        ));
    }
    None
}

/// The full path in a "The requested … (/P/name) was not found." message.
fn not_found_path(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('(')?;
    let (path, tail) = rest.split_once(')')?;
    tail.contains("was not found").then_some(path)
}

impl BigIp {
    /// A client for `base`: https verified with the system roots, or with `ca_bundle` alone
    /// when it is set; plain http (tests, labs) is allowed with a warning.
    ///
    /// A configured `ca_bundle` *replaces* the system roots rather than adding to them: it
    /// pins the management interface to the organisation's CA (or the device's own
    /// certificate), so that no public CA can vouch for a man in the middle that would then
    /// receive the admin password. client-go treats a kubeconfig's certificate-authority the
    /// same way.
    pub fn new(base: &str, ca_bundle: &str, insecure: bool) -> Result<BigIp, ProviderError> {
        // reqwest is built without a bundled crypto provider; use ring like kube does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if base.starts_with("http://") {
            warn!(
                "f5.url uses plain http: the BIG-IP password and auth token cross the network unencrypted; use https"
            );
        }
        let mut b = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .danger_accept_invalid_certs(insecure);
        if !ca_bundle.trim().is_empty() {
            let certs = reqwest::Certificate::from_pem_bundle(ca_bundle.as_bytes())
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    ProviderError::invalid(
                        "f5.caBundle",
                        "holds no PEM certificate; paste the CA certificate(s) that signed the BIG-IP's management certificate (-----BEGIN CERTIFICATE----- ...)",
                    )
                })?;
            b = b.tls_certs_only(certs);
        }
        let http = b.build().map_err(|e| {
            ProviderError::invalid("f5.url", format!("cannot build an HTTP client: {e}"))
        })?;
        Ok(BigIp {
            session: Session::new(base, http),
            writes: Mutex::new(()),
            save_refused: AtomicBool::new(false),
        })
    }

    /// Sets the credentials (from the Secret); a change deletes the current token.
    pub async fn set_credentials(&self, c: Credentials) {
        self.session.set_credentials(c).await;
    }

    /// Whether the device refused the credentials last set: the Secret is then read again
    /// on the next reconcile instead of waiting for the credentials cache to expire.
    pub fn credentials_refused(&self) -> bool {
        self.session.credentials_refused()
    }

    /// REST calls made so far (for benchmarks).
    pub fn calls(&self) -> u64 {
        self.session.calls()
    }

    /// One REST call (logs in again once when the token is no longer valid).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        tx: Option<u64>,
    ) -> Result<Value, ProviderError> {
        self.session
            .exchange(method, path, body, tx)
            .await
            .map_err(|f| f.error)
    }

    /// Creates the partition unless it exists, and reads every readable partition's
    /// `defaultRouteDomain`.
    pub async fn ensure_partition(&self, partition: &str) -> Result<PartitionInfo, ProviderError> {
        let list = self
            .call(Method::GET, "/mgmt/tm/auth/partition", None, None)
            .await?;
        let mut defaults: BTreeMap<String, u32> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let rd = p["defaultRouteDomain"]
                    .as_u64()
                    .and_then(|r| u32::try_from(r).ok());
                Some((p["name"].as_str()?.to_string(), rd.unwrap_or(0)))
            })
            .collect();
        if !defaults.contains_key(partition) {
            let _w = self.writes.lock().await;
            let created = self
                .session
                .exchange(
                    Method::POST,
                    "/mgmt/tm/auth/partition",
                    Some(&json!({"name": partition, "description": "managed by Portway"})),
                    None,
                )
                .await;
            match created {
                Ok(p) => {
                    let rd = p["defaultRouteDomain"]
                        .as_u64()
                        .and_then(|r| u32::try_from(r).ok());
                    defaults.insert(partition.to_string(), rd.unwrap_or(0));
                }
                // Created meanwhile by another writer, which is what we wanted.
                Err(f) if f.is(StatusCode::CONFLICT) => {
                    let p = self
                        .call(
                            Method::GET,
                            &format!("/mgmt/tm/auth/partition/{partition}"),
                            None,
                            None,
                        )
                        .await?;
                    let rd = p["defaultRouteDomain"]
                        .as_u64()
                        .and_then(|r| u32::try_from(r).ok());
                    defaults.insert(partition.to_string(), rd.unwrap_or(0));
                }
                Err(f) if f.is(StatusCode::UNAUTHORIZED) => {
                    return Err(ProviderError::invalid(
                        "f5.partition",
                        format!(
                            "partition {partition} does not exist and this account may not create it; create it on the BIG-IP or give the account the Administrator role"
                        ),
                    ));
                }
                Err(f) => return Err(f.error),
            }
        }
        let route_domain = defaults.get(partition).copied().unwrap_or(0);
        Ok(PartitionInfo {
            route_domain,
            defaults,
        })
    }

    /// The `items` of a collection.
    pub(crate) async fn items(&self, path: &str) -> Result<Vec<Value>, ProviderError> {
        let v = self.call(Method::GET, path, None, None).await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// One object by path; `None` when the device has no such object (404, not a path the
    /// device does not serve).
    pub(crate) async fn get_opt(&self, path: &str) -> Result<Option<Value>, ProviderError> {
        match self.session.exchange(Method::GET, path, None, None).await {
            Ok(v) => Ok(Some(v)),
            Err(f) if f.is(StatusCode::NOT_FOUND) && !f.message.contains("not registered") => {
                Ok(None)
            }
            Err(f) => Err(f.error),
        }
    }

    /// Creates the nodes a member change needs, one by one (serialised with other writes).
    pub(crate) async fn create_nodes(&self, commands: &[Command]) -> Result<(), TxError> {
        let _w = self.writes.lock().await;
        for c in commands {
            match self
                .session
                .exchange(Method::POST, &c.path, Some(&c.body), None)
                .await
            {
                Ok(_) => {}
                // Made meanwhile: reading again finds and names it.
                Err(f) if f.is(StatusCode::CONFLICT) => return Err(TxError::Stale(f.error)),
                Err(f) => {
                    return Err(TxError::Failed(needs_a_fix(&f.message).unwrap_or(f.error)));
                }
            }
        }
        Ok(())
    }

    /// A member PATCH of one pool: a pool that is gone (404, deleted by hand since the
    /// read) is [`TxError::Stale`], so the caller reads again and recreates it.
    pub(crate) async fn patch_members(&self, path: &str, body: &Value) -> Result<(), TxError> {
        let _w = self.writes.lock().await;
        match self
            .session
            .exchange(Method::PATCH, path, Some(body), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if f.is(StatusCode::NOT_FOUND) && !f.message.contains("not registered") => {
                Err(TxError::Stale(f.error))
            }
            Err(f) => Err(TxError::Failed(needs_a_fix(&f.message).unwrap_or(f.error))),
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
        // A transaction that is not committed within `timeoutSeconds` is silently removed
        // (DevCentral "Demystifying iControl REST part 7"): its id is then unknown.
        let expired = |id: u64, f: Failure| {
            if f.is(StatusCode::NOT_FOUND) && f.message.contains("ransaction") {
                TxError::Failed(ProviderError::transient(format!(
                    "BIG-IP transaction {id} expired before it was committed"
                )))
            } else {
                TxError::Failed(f.error)
            }
        };
        let _w = self.writes.lock().await;
        let t = self
            .session
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
            self.session
                .exchange(method, &c.path, body, Some(id))
                .await
                .map_err(|f| expired(id, f))?;
        }
        // The commit carries no coordination header.
        let done = self
            .session
            .exchange(
                Method::PATCH,
                &format!("/mgmt/tm/transaction/{id}"),
                Some(&json!({"state": "VALIDATING"})),
                None,
            )
            .await;
        let done = match done {
            Ok(d) => d,
            Err(f) => return Err(Self::commit_failure(id, commands, f, expired)),
        };
        if done["state"] != "COMPLETED" {
            let state = done["state"].as_str().unwrap_or("without a state");
            warn!(id, state, failure_reason = %done["failureReason"], "BIG-IP transaction not completed");
            return Err(TxError::Failed(ProviderError::transient(format!(
                "BIG-IP transaction {id} ended {state}; the controller's log has the device's reason"
            ))));
        }
        Ok(())
    }

    /// What a refused commit means for the caller.
    fn commit_failure(
        id: u64,
        commands: &[Command],
        f: Failure,
        expired: impl Fn(u64, Failure) -> TxError,
    ) -> TxError {
        if let Some(e) = needs_a_fix(&f.message) {
            return TxError::Failed(e);
        }
        let ProviderError::Invalid { field, .. } = &f.error else {
            return expired(id, f);
        };
        // A create met an object made after our read (01020066 "already exists"; 409,
        // some versions 400). Nothing was applied. The name quoted is one Portway chose.
        if f.is(StatusCode::CONFLICT)
            || f.message.contains("01020066")
            || f.message.contains("already exists")
        {
            let name = commands
                .iter()
                .filter(|c| c.method == "POST")
                .filter_map(|c| c.body["name"].as_str())
                .find(|n| f.message.contains(n))
                .unwrap_or("");
            return TxError::Stale(ProviderError::Invalid {
                field: field.clone(),
                reason: format!(
                    "an object named {name} is in the partition but not tagged as this Service's (portway-uid): delete or rename it on the BIG-IP"
                ),
            });
        }
        // An object we change or delete was deleted between our read and the commit
        // (drift): nothing was applied; read again and retry. Any other missing object is
        // not ours to conjure.
        if let Some(path) = not_found_path(&f.message) {
            let tail = path.replace('/', "~").replace('%', "%25");
            let ours = commands
                .iter()
                .any(|c| c.method != "POST" && c.path.ends_with(&tail));
            if ours {
                return TxError::Stale(ProviderError::transient(format!(
                    "BIG-IP transaction {id} raced with a change of the partition"
                )));
            }
        }
        expired(id, f)
    }

    /// Deletes the nodes of the partition that Portway created and no pool of Portway's
    /// uses (`used`, from the snapshot: reading every pool would cost the partition's size).
    /// Best effort: the device refuses a node still referenced, from any partition or by a
    /// pool someone else made. Nodes a person or another controller made are never touched.
    /// One read of the partition's nodes: it grows with the nodes, not with the Services.
    pub async fn gc_nodes(&self, partition: &str, rd: u32, used: &BTreeSet<IpAddr>) {
        let filter = format!("$filter=partition+eq+{partition}");
        let Ok(nodes) = self.items(&format!("/mgmt/tm/ltm/node?{filter}")).await else {
            return;
        };
        for n in nodes.iter().filter(|n| is_portway_node(n)) {
            let addr = crate::names::strip_rd(n["address"].as_str().unwrap_or(""), rd);
            if addr.parse().is_ok_and(|ip| used.contains(&ip)) {
                continue;
            }
            let name = n["name"].as_str().unwrap_or("");
            let path = format!(
                "/mgmt/tm/ltm/node/{}",
                crate::names::uri_name(partition, name)
            );
            let _w = self.writes.lock().await;
            if let Err(e) = self.call(Method::DELETE, &path, None, None).await {
                // "still referenced" (another partition's member) is fine; try next time.
                debug!(node = name, %e, "node not deleted");
            }
        }
    }

    /// Saves the running configuration so a reboot keeps it.
    pub async fn save(&self) -> Result<(), ProviderError> {
        let _w = self.writes.lock().await;
        match self
            .session
            .exchange(
                Method::POST,
                "/mgmt/tm/sys/config",
                Some(&json!({"command": "save"})),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if f.is(StatusCode::UNAUTHORIZED) => {
                if !self.save_refused.swap(true, Ordering::Relaxed) {
                    warn!(message = %f.message, "this BIG-IP account may not save the configuration: changes stay in the running configuration until an administrator saves");
                } else {
                    info!("BIG-IP configuration not saved (not permitted)");
                }
                Ok(())
            }
            Err(f) => Err(f.error),
        }
    }

    /// Deletes the token (at shutdown: a user may hold at most 100).
    pub async fn logout(&self) {
        self.session.logout().await;
    }
}
