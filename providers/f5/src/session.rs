//! The iControl REST session: one token, taken by one login at a time, used until the device
//! says it is no longer valid, and deleted when it is replaced or the controller stops.
//!
//! Why each rule (F5 DevCentral "iControl REST Authentication Token Management",
//! community.f5.com/kb/technicalarticles/287462, unless noted):
//! - A token lives 1200 s unless its `timeout` is extended (at most 36000 s); Portway asks
//!   for 3600 s and reads back what it got.
//! - A user other than `admin` may hold at most 100 live tokens; the 101st login is refused.
//!   So a token is never thrown away while valid: before a new login replaces a valid token
//!   (the credentials changed) the old one is deleted, and only one login runs at a time.
//! - BIG-IP answers 401 both for a token that is no longer valid ("X-F5-Auth-Token has
//!   expired.", recorded in f5devcentral/f5-cli issue #8) and for a permission denial
//!   ("Authorization failed: user=… resource=… verb=…", F5Networks/f5-appsvcs-extension
//!   issue #420). Only the first is cured by logging in again; the second is a role the
//!   account lacks, reported as needs-a-fix.
//!
//! What the device says stays in the controller's log: a Service's event (which its
//! owner, a tenant, reads) gets a short reason and the fix, never the device's message
//! (user names, partitions, software versions, HTML error pages) nor the management URL.
//! Each refusal is logged once, here, with the call and the device's message; transport
//! errors are logged without their URL ([`crate::http`]), since the token-extension and
//! token-deletion calls carry the token in their path.

use crate::http::{MAX_BODY, Unreached, read_text};
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

/// A call the device did not accept.
pub(crate) struct Failure {
    /// The HTTP status it answered; `None` when it was not reached or kept answering 401.
    pub(crate) status: Option<StatusCode>,
    /// The device's message (`message` of the error body, or the start of the body): for
    /// deciding what the refusal means, and for the log; never for an event.
    pub(crate) message: String,
    /// The provider's error class for it, with a short reason for the Service's event.
    pub(crate) error: ProviderError,
}

impl Failure {
    pub(crate) fn unanswered(error: ProviderError) -> Failure {
        Failure {
            status: None,
            message: String::new(),
            error,
        }
    }

    pub(crate) fn is(&self, status: StatusCode) -> bool {
        self.status == Some(status)
    }
}

/// The device's `message` from an error body, or the start of the body (HTML for a 503).
pub(crate) fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// Whether a 401 says the token is no longer valid (expired, deleted, missing), the one
/// case a new login cures.
fn token_refused(message: &str) -> bool {
    if message.starts_with("Authorization failed: user=") {
        return false;
    }
    let m = message.to_ascii_lowercase();
    m.contains("token")
        && [
            "expired",
            "invalid",
            "does not exist",
            "not found",
            "no user authentication",
        ]
        .iter()
        .any(|w| m.contains(w))
}

/// Turns a BIG-IP answer other than 401 into the provider's error classes, with a short
/// reason: the device's `message` (already logged) is used to classify only.
pub(crate) fn classify(status: StatusCode, message: &str) -> ProviderError {
    let code = status.as_u16();
    let transient = match code {
        503 | 502 | 504 | 500 => true,
        404 => message.contains("not registered"),
        _ => false,
    };
    if transient {
        ProviderError::transient(format!(
            "the BIG-IP answered {code} (busy or restarting); retrying"
        ))
    } else {
        ProviderError::invalid(
            "f5",
            format!(
                "the BIG-IP refused the change ({code}); the controller's log has the device's message"
            ),
        )
    }
}

/// A 401 that is not about the token: the account lacks a permission.
fn denied() -> ProviderError {
    ProviderError::invalid(
        "f5.credentialsSecret",
        "the BIG-IP account may not do this (401); give it the Administrator role, or the Manager role on the partition (see docs/f5.md)",
    )
}

/// One BIG-IP device's session.
pub(crate) struct Session {
    base: String,
    http: reqwest::Client,
    creds: Mutex<Option<Credentials>>,
    /// The token; its lock is held across a login, so there is never more than one at once.
    token: Mutex<Option<String>>,
    calls: AtomicU64,
    /// The last login was answered 401.
    refused: AtomicBool,
}

impl Session {
    pub(crate) fn new(base: &str, http: reqwest::Client) -> Session {
        Session {
            base: base.trim_end_matches('/').to_string(),
            http,
            creds: Mutex::new(None),
            token: Mutex::new(None),
            calls: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        }
    }

    /// Sets the credentials (from the Secret); a change deletes the current token first.
    pub(crate) async fn set_credentials(&self, c: Credentials) {
        self.refused.store(false, Ordering::Relaxed);
        // The token's lock first, as in `token()`, which takes the credentials' under it.
        let mut token = self.token.lock().await;
        let mut cur = self.creds.lock().await;
        if cur.as_ref() != Some(&c) {
            *cur = Some(c);
            drop(cur);
            if let Some(t) = token.take() {
                self.delete_token(&t).await;
            }
        }
    }

    /// Whether the device refused the credentials last set.
    pub(crate) fn credentials_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// REST calls made so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Deletes a token. Its path holds the token: an error is logged without the URL.
    async fn delete_token(&self, t: &str) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = self
            .http
            .delete(format!("{}/mgmt/shared/authz/tokens/{t}", self.base))
            .header("X-F5-Auth-Token", t)
            .send()
            .await;
        match r {
            Ok(r) => debug!(status = %r.status(), "BIG-IP token deleted"),
            Err(e) => {
                let u = Unreached::from_reqwest(e);
                debug!(error = %u.detail, "BIG-IP token not deleted; it expires on its own");
            }
        }
    }

    async fn login(&self) -> Result<String, ProviderError> {
        let creds = self
            .creds
            .lock()
            .await
            .clone()
            .ok_or_else(|| ProviderError::transient("BIG-IP credentials not loaded yet"))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let unreached = |u: Unreached| {
            warn!(error = %u.detail, "BIG-IP login failed");
            u.error("BIG-IP login")
        };
        let r = self
            .http
            .post(format!("{}/mgmt/shared/authn/login", self.base))
            .json(&json!({"username": creds.username, "password": creds.password, "loginProviderName": "tmos"}))
            .send()
            .await
            .map_err(|e| unreached(Unreached::from_reqwest(e)))?;
        let status = r.status();
        let text = read_text(r, MAX_BODY).await.map_err(unreached)?;
        if status == StatusCode::UNAUTHORIZED {
            self.refused.store(true, Ordering::Relaxed);
            return Err(ProviderError::invalid(
                "f5.credentialsSecret",
                "the BIG-IP refused the username/password in the Secret",
            ));
        }
        if !status.is_success() {
            let m = message(&text);
            warn!(%status, device_message = %m, "BIG-IP login refused");
            if m.contains("maximum active login tokens") {
                // Tokens of this user expire within their lifetime: worth retrying.
                return Err(ProviderError::transient(
                    "BIG-IP login refused: this user holds the most tokens the device allows (another client holds them; they expire, or delete them)",
                ));
            }
            return Err(classify(status, &m));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let token = v["token"]["token"]
            .as_str()
            .ok_or_else(|| ProviderError::transient("BIG-IP login reply without token.token"))?
            .to_string();
        self.extend(&token).await;
        Ok(token)
    }

    /// Extends the token's lifetime and reads back what the device granted. The token is in
    /// the path, so a failure is logged without the URL; the token still works until it
    /// expires, and a 401 then logs in again.
    async fn extend(&self, token: &str) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let ext = self
            .http
            .patch(format!("{}/mgmt/shared/authz/tokens/{token}", self.base))
            .header("X-F5-Auth-Token", token)
            .json(&json!({"timeout": 3600}))
            .send()
            .await;
        match ext {
            Ok(r) if r.status().is_success() => {
                let granted = read_text(r, MAX_BODY)
                    .await
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["timeout"].as_u64());
                debug!(?granted, "BIG-IP token lifetime");
            }
            Ok(r) => {
                warn!(status = %r.status(), "BIG-IP token lifetime not extended; re-login on expiry")
            }
            Err(e) => {
                let u = Unreached::from_reqwest(e);
                warn!(error = %u.detail, "BIG-IP token lifetime not extended; re-login on expiry");
            }
        }
    }

    /// The token, logging in (once, under the lock) when there is none.
    async fn token(&self) -> Result<String, ProviderError> {
        let mut t = self.token.lock().await;
        if let Some(tok) = t.as_ref() {
            return Ok(tok.clone());
        }
        let tok = self.login().await?;
        *t = Some(tok.clone());
        Ok(tok)
    }

    /// Drops `used` after the device refused it, unless another caller already replaced it
    /// (so that two calls refused together cause one login, not two).
    async fn invalidate(&self, used: &str) {
        let mut t = self.token.lock().await;
        if t.as_deref() == Some(used) {
            *t = None;
        }
    }

    /// One REST call; logs in again once when the device says the token is no longer valid.
    pub(crate) async fn exchange(
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
            let unreached = |u: Unreached| {
                warn!(%method, %path, error = %u.detail, "BIG-IP call failed");
                Failure::unanswered(u.error(&format!("BIG-IP {method}")))
            };
            let r = req
                .send()
                .await
                .map_err(|e| unreached(Unreached::from_reqwest(e)))?;
            let status = r.status();
            let text = read_text(r, MAX_BODY).await.map_err(unreached)?;
            if status.is_success() {
                return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
            }
            let msg = message(&text);
            if status == StatusCode::UNAUTHORIZED && token_refused(&msg) && attempt == 0 {
                debug!(%method, %path, device_message = %msg, "BIG-IP token no longer valid; logging in again");
                self.invalidate(&token).await;
                continue;
            }
            warn!(%method, %path, %status, device_message = %msg, "BIG-IP refused a call");
            if status == StatusCode::UNAUTHORIZED {
                if !token_refused(&msg) {
                    return Err(Failure {
                        status: Some(status),
                        error: denied(),
                        message: msg,
                    });
                }
                return Err(Failure::unanswered(ProviderError::transient(
                    "the BIG-IP refused a fresh token; retrying",
                )));
            }
            return Err(Failure {
                status: Some(status),
                error: classify(status, &msg),
                message: msg,
            });
        }
        Err(Failure::unanswered(ProviderError::transient(
            "BIG-IP kept refusing the token",
        )))
    }

    /// Deletes the token (at shutdown: a user may hold at most 100).
    pub(crate) async fn logout(&self) {
        let t = self.token.lock().await.take();
        if let Some(t) = t {
            self.delete_token(&t).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_problems_call_for_a_new_login() {
        // Recorded: f5devcentral/f5-cli #8, F5Networks/f5-appsvcs-extension #438 and #420.
        assert!(token_refused("X-F5-Auth-Token has expired."));
        assert!(token_refused(
            "Authorization failed: no user authentication header or token detected. Uri:http://localhost:8100/mgmt/shared/appsvcs/declare Referrer:x.x.x.x Sender:x.x.x.x"
        ));
        assert!(!token_refused(
            "Authorization failed: user=https://localhost/mgmt/shared/authz/users/mmaler-admin resource=/mgmt/shared/appsvcs/info verb=GET uri:http://localhost:8100/mgmt/shared/appsvcs/info referrer:x sender:x"
        ));
        assert!(!token_refused(
            "Authorization failed: user=https://localhost/mgmt/shared/authz/users/u resource=/mgmt/shared/authz/tokens/T verb=GET uri:x referrer:x sender:x (token not found)"
        ));
    }
}
