//! The simulated BIG-IP's state and its request handling (synchronous, under one lock):
//! routing, login and tokens, partitions, transactions and faults. What one LTM object
//! write does is in `ltm`.

use super::ltm::destination_address;
use axum::http::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A change another writer makes between a client's reads and its next write.
#[derive(Debug)]
pub(crate) enum Meanwhile {
    /// `POST` to the collection with this body.
    Create(String, Value),
    /// Removal of the object at this full path (`/Partition/name`).
    Delete(String, String),
}

/// One request the simulated BIG-IP received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Queued inside a transaction (`X-F5-REST-Coordination-Id`).
    pub in_transaction: bool,
    /// The JSON body (`Null` when there was none), so tests can check what a client sent,
    /// e.g. that a member PATCH carries no `address`. Login bodies are not kept (password).
    pub body: Value,
}

impl Request {
    /// Whether the request changes configuration (anything but GET and login/token calls).
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.path.starts_with("/mgmt/shared/")
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    Unavailable,
    Mcpd,
}

pub(crate) struct Token {
    pub(crate) expires: Instant,
}

pub(super) struct Transaction {
    pub(super) created: Instant,
    pub(super) commands: Vec<(Method, String, Value)>,
}

pub(crate) struct BigIpState {
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) default_timeout: u64,
    pub(crate) tokens: HashMap<String, Token>,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) log: Vec<Request>,
    pub(crate) saves: usize,
    pub(super) partitions: Vec<String>,
    pub(super) objects: BTreeMap<(String, String), Value>,
    pub(super) transactions: HashMap<u64, Transaction>,
    pub(super) next_tx: u64,
    /// What a concurrent writer does just before the next LTM write or transaction is served.
    pub(crate) pending: Vec<Meanwhile>,
}

pub(super) type Reply = (u16, Value);

pub(super) fn err(code: u16, message: impl Into<String>) -> Reply {
    (
        code,
        json!({"code": code, "message": message.into(), "errorStack": [], "apiError": 3}),
    )
}

impl BigIpState {
    pub(crate) fn new(user: &str, password: &str) -> Self {
        BigIpState {
            user: user.into(),
            password: password.into(),
            default_timeout: 1200,
            tokens: HashMap::new(),
            faults: VecDeque::new(),
            log: Vec::new(),
            saves: 0,
            partitions: vec!["Common".into()],
            objects: BTreeMap::new(),
            transactions: HashMap::new(),
            next_tx: 1_389_812_351,
            pending: Vec::new(),
        }
    }

    pub(crate) fn list(
        &self,
        collection: &str,
        partition: Option<&str>,
        expand: bool,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((c, _), o)| c == collection && partition.is_none_or(|p| o["partition"] == p))
            .map(|(_, o)| self.render(collection, o, expand))
            .collect()
    }

    pub(super) fn render(&self, collection: &str, o: &Value, expand: bool) -> Value {
        let mut o = o.clone();
        if collection == "pool" {
            let members = o
                .as_object_mut()
                .and_then(|m| m.remove("members"))
                .unwrap_or(json!([]));
            o["membersReference"] = if expand {
                json!({"isSubcollection": true, "items": members})
            } else {
                json!({"isSubcollection": true, "link": format!("https://localhost/mgmt/tm/ltm/pool/{}/members", o["fullPath"].as_str().unwrap_or("").replace('/', "~"))})
            };
        }
        o
    }

    pub(crate) fn remove(&mut self, collection: &str, full: &str) -> bool {
        let removed = self
            .objects
            .remove(&(collection.to_string(), full.to_string()))
            .is_some();
        if removed && collection == "virtual" {
            self.auto_delete_addresses();
        }
        removed
    }

    pub(super) fn auto_delete_addresses(&mut self) {
        let used: Vec<String> = self
            .objects
            .iter()
            .filter(|((c, _), _)| c == "virtual")
            .filter_map(|(_, v)| destination_address(v["destination"].as_str().unwrap_or("")))
            .map(|(p, a)| format!("/{p}/{a}"))
            .collect();
        self.objects.retain(|(c, full), o| {
            c != "virtual-address" || o["autoDelete"] != "true" || used.contains(full)
        });
    }

    fn token_ok(&self, token: Option<&str>) -> bool {
        token
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|t| t.expires > Instant::now())
    }

    pub(crate) fn serve(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        token: Option<String>,
        tx: Option<u64>,
        body: Value,
    ) -> Reply {
        let login = path == "/mgmt/shared/authn/login";
        self.log.push(Request {
            method: method.to_string(),
            path: path.to_string(),
            in_transaction: tx.is_some(),
            body: if login { Value::Null } else { body.clone() },
        });
        if login && method == Method::POST {
            return self.login(&body);
        }
        if let Some(f) = self.faults.pop_front() {
            return match f {
                Fault::Unavailable => (503, Value::Null),
                Fault::Mcpd => err(500, "The connection to mcpd has been lost, try again."),
            };
        }
        if !self.token_ok(token.as_deref()) {
            return (
                401,
                json!({"code": 401, "message": format!("Authorization failed: no user authentication header or token detected. Uri:http://localhost:8100{path} Referrer:127.0.0.1 Sender:127.0.0.1"), "kind": ":resterrorresponse"}),
            );
        }
        if let Some(t) = path.strip_prefix("/mgmt/shared/authz/tokens/") {
            return self.token_call(method, t, &body);
        }
        if *method != Method::GET
            && (path.starts_with("/mgmt/tm/ltm/") || path.starts_with("/mgmt/tm/transaction"))
        {
            // A concurrent writer gets in between a client's reads and its writes.
            for change in std::mem::take(&mut self.pending) {
                match change {
                    Meanwhile::Create(collection, body) => {
                        let (code, out) = self.create(&collection, body);
                        if code >= 300 {
                            tracing::warn!(%collection, %out, "simulated concurrent create failed");
                        }
                    }
                    Meanwhile::Delete(collection, full) => {
                        self.remove(&collection, &full);
                    }
                }
            }
        }
        if let Some(id) = tx
            && path.starts_with("/mgmt/tm/ltm/")
        {
            let Some(t) = self.transactions.get_mut(&id) else {
                return err(404, format!("Transaction {id} not found"));
            };
            t.commands
                .push((method.clone(), format!("{path}?{query}"), body));
            let n = t.commands.len();
            return (
                200,
                json!({"transId": id, "commandId": n, "method": method.to_string(),
                "uri": format!("https://localhost{path}"), "evalOrder": n,
                "kind": "tm:transaction:commandsstate"}),
            );
        }
        if path == "/mgmt/tm/transaction" && method == Method::POST {
            self.next_tx += 1;
            let id = self.next_tx;
            self.transactions.insert(
                id,
                Transaction {
                    created: Instant::now(),
                    commands: Vec::new(),
                },
            );
            return (
                200,
                json!({"transId": id, "state": "STARTED", "timeoutSeconds": 120,
                "asyncExecution": false, "validateOnly": false, "kind": "tm:transactionstate"}),
            );
        }
        if let Some(id) = path.strip_prefix("/mgmt/tm/transaction/") {
            return self.commit(method, id, &body);
        }
        if path == "/mgmt/tm/sys/config" && method == Method::POST {
            if body["command"] == "save" {
                self.saves += 1;
                return (
                    200,
                    json!({"kind": "tm:sys:config:savestate", "command": "save"}),
                );
            }
            return err(400, "unsupported command");
        }
        if let Some(rest) = path.strip_prefix("/mgmt/tm/auth/partition") {
            return self.partition_call(method, rest.trim_start_matches('/'), &body);
        }
        if let Some(rest) = path.strip_prefix("/mgmt/tm/ltm/") {
            return self.ltm(method, rest, query, body);
        }
        err(
            404,
            format!(
                "URI path {path} not registered.  Please verify URI is supported and wait for /available suffix to be responsive."
            ),
        )
    }

    fn login(&mut self, body: &Value) -> Reply {
        if body["username"] != self.user.as_str() || body["password"] != self.password.as_str() {
            return (
                401,
                json!({"code": 401, "message": "Authentication failed.", "errorStack": []}),
            );
        }
        let token: String = (0..26)
            .map(|_| char::from(b'A' + (rand::random::<u8>() % 26)))
            .collect();
        self.tokens.insert(
            token.clone(),
            Token {
                expires: Instant::now() + Duration::from_secs(self.default_timeout),
            },
        );
        (
            200,
            json!({"username": self.user, "loginProviderName": body["loginProviderName"],
            "token": {"token": token, "name": token, "userName": self.user,
                "timeout": self.default_timeout, "kind": "shared:authz:tokens:authtokenitemstate"}}),
        )
    }

    fn token_call(&mut self, method: &Method, t: &str, body: &Value) -> Reply {
        match *method {
            Method::PATCH => {
                let timeout = body["timeout"].as_u64().unwrap_or(self.default_timeout);
                if timeout > 36000 {
                    return err(406, "Auth-token absolute timeout (36000 seconds) exceeded");
                }
                match self.tokens.get_mut(t) {
                    Some(tok) => {
                        tok.expires = Instant::now() + Duration::from_secs(timeout);
                        (200, json!({"token": t, "timeout": timeout}))
                    }
                    None => err(404, "token not found"),
                }
            }
            Method::DELETE => {
                self.tokens.remove(t);
                (200, json!({}))
            }
            _ => (200, json!({"token": t})),
        }
    }

    fn partition_call(&mut self, method: &Method, name: &str, body: &Value) -> Reply {
        match (method.clone(), name.is_empty()) {
            (Method::GET, true) => (
                200,
                json!({"items": self.partitions.iter().map(|p| json!({"name": p})).collect::<Vec<_>>()}),
            ),
            (Method::GET, false) => {
                if self.partitions.iter().any(|p| p == name) {
                    (200, json!({"name": name, "defaultRouteDomain": 0}))
                } else {
                    err(
                        404,
                        format!("01020036:3: The requested folder (/{name}) was not found."),
                    )
                }
            }
            (Method::POST, true) => {
                let n = body["name"].as_str().unwrap_or("").to_string();
                if n.is_empty() {
                    return err(400, "name is required");
                }
                if self.partitions.contains(&n) {
                    return err(
                        409,
                        format!("01020066:3: The requested folder (/{n}) already exists."),
                    );
                }
                self.partitions.push(n.clone());
                (200, json!({"name": n, "defaultRouteDomain": 0}))
            }
            _ => err(405, "method not allowed"),
        }
    }

    fn commit(&mut self, method: &Method, id: &str, body: &Value) -> Reply {
        let id_num: u64 = match id.split('/').next().and_then(|s| s.parse().ok()) {
            Some(n) => n,
            None => return err(404, format!("Transaction {id} not found")),
        };
        if *method == Method::GET {
            return match self.transactions.get(&id_num) {
                Some(t) => (
                    200,
                    json!({"transId": id_num, "state": "STARTED", "commands": t.commands.len()}),
                ),
                None => err(404, format!("Transaction {id_num} not found")),
            };
        }
        if *method != Method::PATCH || body["state"] != "VALIDATING" {
            return err(
                400,
                "a transaction is committed with PATCH {\"state\":\"VALIDATING\"}",
            );
        }
        let Some(t) = self.transactions.remove(&id_num) else {
            return err(404, format!("Transaction {id_num} not found"));
        };
        if t.created.elapsed() > Duration::from_secs(120) {
            return err(404, format!("Transaction {id_num} not found"));
        }
        if t.commands.is_empty() {
            return err(400, "there is no command to commit in the transaction");
        }
        let snapshot = self.objects.clone();
        for (m, uri, b) in t.commands {
            let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
            let rest = path.strip_prefix("/mgmt/tm/ltm/").unwrap_or("");
            let (code, out) = self.ltm(&m, rest, query, b);
            if code >= 300 {
                self.objects = snapshot;
                return (
                    code,
                    json!({"code": code, "message": format!("transaction failed:{}", out["message"].as_str().unwrap_or("")), "errorStack": []}),
                );
            }
        }
        (
            200,
            json!({"transId": id_num, "state": "COMPLETED", "kind": "tm:transactionstate"}),
        )
    }
}
