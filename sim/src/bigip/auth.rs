//! Accounts, tokens and who may do what on the simulated BIG-IP.
//!
//! - Login: `POST /mgmt/shared/authn/login` with `loginProviderName: tmos` gives a token that
//!   lives 1200 s and can be extended to at most 36000 s with a PATCH of its `timeout` (406
//!   beyond); a user may hold at most 100 live tokens, the 101st login is refused 400, and
//!   the user named `admin` is exempt. All from F5's DevCentral article "iControl REST
//!   Authentication Token Management" (community.f5.com/kb/technicalarticles/287462).
//! - A token past its lifetime is refused 401 with the body recorded in f5devcentral/f5-cli
//!   issue #8: `{"code": 401, "message": "X-F5-Auth-Token has expired.", "referer": …,
//!   "restOperationId": …, "kind": ":resterrorresponse"}`; a request without a token with the
//!   body recorded in F5Networks/f5-appsvcs-extension issue #438 ("Authorization failed: no
//!   user authentication header or token detected. Uri:… Referrer:… Sender:…").
//! - A permission denial is 401 too, not 403: "Authorization failed: user=https://localhost
//!   /mgmt/shared/authz/users/<user> resource=<path> verb=<VERB> uri:… referrer:… sender:…"
//!   (recorded in F5Networks/f5-appsvcs-extension issue #420 and, for a Manager role reading
//!   `/mgmt/tm/net/self`, F5Networks/terraform-provider-bigip issue #160).
//! - Roles: an Administrator may do anything. A Manager is scoped to one partition, and F5
//!   describes the role as "permission to create, modify, and delete virtual servers, pools,
//!   pool members, nodes, custom profiles, custom monitors, and iRules" (quoted in
//!   F5Networks/f5-ansible issue #1175): the simulator lets it reach only the LTM and
//!   transaction endpoints (and read partitions); anything else, such as creating a
//!   partition or `sys config` save, is the 401 above. Inside LTM, mcpd refuses a Manager's
//!   object outside its partition, and (a device bug several clients met) any `metadata`,
//!   with 400 "01070822:3: Access Denied: user (<user>) does not have create access to object
//!   (virtual_server_metadata)" (F5Networks/f5-ansible issue #1175, F5Networks/k8s-bigip-ctlr
//!   issues #691 and #2029); a Manager reads its own partition and `Common` only.

use super::store::{BigIpState, Reply, err};
use axum::http::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What an account may do on the simulated BIG-IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Administrator,
    /// LTM objects of one partition (read access to `Common` too).
    Manager {
        /// The partition it manages.
        partition: String,
    },
}

pub(crate) struct User {
    pub(crate) password: String,
    pub(crate) role: Role,
}

pub(crate) struct Token {
    pub(crate) user: String,
    pub(crate) expires: Instant,
}

/// Live tokens a user other than `admin` may hold (DevCentral token-management article).
const TOKEN_CAP: usize = 100;

fn rest_error(code: u16, message: String, rest_op: u64) -> Reply {
    (
        code,
        json!({"code": code, "message": message, "referer": "127.0.0.1",
            "restOperationId": rest_op, "kind": ":resterrorresponse"}),
    )
}

impl BigIpState {
    /// The role of `user` (an unknown user has none).
    pub(crate) fn role(&self, user: &str) -> Option<&Role> {
        self.users.get(user).map(|u| &u.role)
    }

    pub(super) fn login(&mut self, body: &Value) -> Reply {
        let name = body["username"].as_str().unwrap_or("").to_string();
        let known = self
            .users
            .get(&name)
            .is_some_and(|u| body["password"] == u.password.as_str());
        if !known {
            return (
                401,
                json!({"code": 401, "message": "Authentication failed.", "errorStack": []}),
            );
        }
        let now = Instant::now();
        self.tokens.retain(|_, t| t.expires > now);
        let held = self.tokens.values().filter(|t| t.user == name).count();
        if name != "admin" && held >= TOKEN_CAP {
            return err(
                400,
                format!("Bad Request: user {name} has reached maximum active login tokens"),
            );
        }
        let token: String = (0..26)
            .map(|_| char::from(b'A' + (rand::random::<u8>() % 26)))
            .collect();
        self.tokens.insert(
            token.clone(),
            super::auth::Token {
                user: name.clone(),
                expires: now + Duration::from_secs(self.default_timeout),
            },
        );
        self.logins += 1;
        (
            200,
            json!({"username": name, "loginProviderName": body["loginProviderName"],
            "token": {"token": token, "name": token, "userName": name,
                "timeout": self.default_timeout, "kind": "shared:authz:tokens:authtokenitemstate"}}),
        )
    }

    /// The user a request's token belongs to, or the 401 the device answers.
    pub(super) fn authenticate(
        &mut self,
        token: Option<&str>,
        path: &str,
    ) -> Result<String, Reply> {
        self.rest_ops += 1;
        let op = self.rest_ops;
        let Some(t) = token else {
            return Err(rest_error(
                401,
                format!(
                    "Authorization failed: no user authentication header or token detected. Uri:http://localhost:8100{path} Referrer:127.0.0.1 Sender:127.0.0.1"
                ),
                op,
            ));
        };
        match self.tokens.get(t) {
            Some(tok) if tok.expires > Instant::now() => Ok(tok.user.clone()),
            Some(_) => {
                self.tokens.remove(t);
                Err(rest_error(401, "X-F5-Auth-Token has expired.".into(), op))
            }
            // Wording not recorded publicly; the status and the `X-F5-Auth-Token` subject are
            // those of the expired case.
            None => Err(rest_error(
                401,
                "X-F5-Auth-Token does not exist.".into(),
                op,
            )),
        }
    }

    /// The REST framework's check of `user`'s role against the URI (before mcpd sees it).
    pub(super) fn authorize(&self, user: &str, method: &Method, path: &str) -> Result<(), Reply> {
        let allowed = match self.role(user) {
            Some(Role::Administrator) => true,
            Some(Role::Manager { .. }) => {
                path.starts_with("/mgmt/tm/ltm/")
                    || path.starts_with("/mgmt/tm/transaction")
                    || path.starts_with("/mgmt/shared/authz/tokens/")
                    || (*method == Method::GET && path.starts_with("/mgmt/tm/auth/partition"))
            }
            None => false,
        };
        if allowed {
            return Ok(());
        }
        Err(rest_error(
            401,
            format!(
                "Authorization failed: user=https://localhost/mgmt/shared/authz/users/{user} resource={path} verb={method} uri:http://localhost:8100{path} referrer:127.0.0.1 sender:127.0.0.1"
            ),
            self.rest_ops,
        ))
    }

    /// mcpd's check of a write to an object of `partition` by `user` (`what`: create,
    /// modify or delete), and of `metadata` in the body.
    pub(super) fn may_write(
        &self,
        user: &str,
        what: &str,
        object: &str,
        partition: &str,
        body: Option<&Value>,
    ) -> Result<(), Reply> {
        let Some(Role::Manager { partition: own }) = self.role(user) else {
            return Ok(());
        };
        let denied = |object: &str| {
            err(
                400,
                format!(
                    "01070822:3: Access Denied: user ({user}) does not have {what} access to object ({object})"
                ),
            )
        };
        if partition != own {
            return Err(denied(object));
        }
        if body.is_some_and(|b| b.get("metadata").is_some()) {
            return Err(denied(&format!("{object}_metadata")));
        }
        Ok(())
    }

    /// Whether `user` sees objects of `partition` in a listing.
    pub(super) fn may_read(&self, user: &str, partition: &str) -> bool {
        match self.role(user) {
            Some(Role::Manager { partition: own }) => partition == own || partition == "Common",
            _ => true,
        }
    }

    pub(super) fn token_call(
        &mut self,
        user: &str,
        method: &Method,
        t: &str,
        body: &Value,
    ) -> Reply {
        let own = self.tokens.get(t).is_some_and(|tok| tok.user == user);
        if !own {
            return err(404, format!("token {t} not found"));
        }
        match *method {
            Method::PATCH => {
                let timeout = body["timeout"].as_u64().unwrap_or(self.default_timeout);
                if timeout > 36000 {
                    return err(406, "Auth-token absolute timeout (36000 seconds) exceeded");
                }
                if let Some(tok) = self.tokens.get_mut(t) {
                    tok.expires = Instant::now() + Duration::from_secs(timeout);
                }
                (200, json!({"token": t, "timeout": timeout}))
            }
            Method::DELETE => {
                self.tokens.remove(t);
                (200, json!({}))
            }
            _ => (200, json!({"token": t, "userName": user})),
        }
    }
}
