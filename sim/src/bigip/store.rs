//! The simulated BIG-IP's state and its request handling (synchronous, under one lock):
//! routing, partitions, transactions and faults. Accounts and tokens are in `auth`, what
//! one LTM object write does is in `ltm`, how objects are shown in `render`.
//!
//! Transactions follow the iControl REST user guide as DevCentral's "Demystifying iControl
//! REST part 7" and F5's automation lab (clouddocs.f5.com … class01/module1/lab6) describe
//! them: `POST /mgmt/tm/transaction` opens one, a request with `X-F5-REST-Coordination-Id`
//! is queued instead of applied, `PATCH {"state":"VALIDATING"}` without the header commits
//! all-or-nothing and answers `COMPLETED`; a transaction not committed within its
//! `timeoutSeconds` "will be silently removed" (30 s on 11.5 in the DevCentral example,
//! "default timeout of 120 seconds" in the lab), after which its id is unknown (404).

use super::address::{RouteDomainDisplay, split_destination};
use super::auth::{Role, Token, User};
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
    /// The query string (`$filter=…&expandSubcollections=true`), empty when none.
    pub query: String,
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

pub(super) struct Transaction {
    pub(super) created: Instant,
    pub(super) user: String,
    pub(super) commands: Vec<(Method, String, Value)>,
}

/// The acting account of a change made behind a client's back (full access).
pub(crate) const SYSTEM: &str = "";

pub(crate) struct BigIpState {
    pub(crate) users: BTreeMap<String, User>,
    /// The account `set_credentials` replaces (the one the simulator starts with).
    pub(crate) default_user: String,
    pub(crate) default_timeout: u64,
    pub(crate) tokens: HashMap<String, Token>,
    /// Successful logins so far.
    pub(crate) logins: usize,
    pub(crate) rest_ops: u64,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) log: Vec<Request>,
    pub(crate) saves: usize,
    /// Partition name to its `defaultRouteDomain`.
    pub(super) partitions: BTreeMap<String, u32>,
    pub(super) objects: BTreeMap<(String, String), Value>,
    pub(super) transactions: HashMap<u64, Transaction>,
    pub(super) next_tx: u64,
    pub(crate) tx_timeout: Duration,
    pub(crate) rd_display: RouteDomainDisplay,
    /// What a concurrent writer does just before the next LTM write or transaction is served.
    pub(crate) pending: Vec<Meanwhile>,
    /// The latency model charged to every call (none by default).
    pub(crate) latency: Option<super::traffic::Latency>,
    /// Calls and bytes since the last reset.
    pub(crate) traffic: super::traffic::Traffic,
}

pub(super) type Reply = (u16, Value);

pub(super) fn err(code: u16, message: impl Into<String>) -> Reply {
    (
        code,
        json!({"code": code, "message": message.into(), "errorStack": [], "apiError": 3}),
    )
}

/// The monitors every BIG-IP ships in `/Common` (the parents named by f5-common-python's
/// and go-bigip's monitor code; `gateway_icmp` with an underscore per
/// F5Networks/terraform-provider-bigip issue #553).
const BUILTIN_MONITORS: &[(&str, &str)] = &[
    ("tcp", "tcp"),
    ("udp", "udp"),
    ("http", "http"),
    ("https", "https"),
    ("icmp", "icmp"),
    ("gateway-icmp", "gateway_icmp"),
    ("tcp-half-open", "tcp_half_open"),
];

impl BigIpState {
    pub(crate) fn new(user: &str, password: &str) -> Self {
        let mut users = BTreeMap::new();
        users.insert(
            user.to_string(),
            User {
                password: password.into(),
                role: Role::Administrator,
            },
        );
        let mut objects = BTreeMap::new();
        for (ty, name) in BUILTIN_MONITORS {
            objects.insert(
                (format!("monitor/{ty}"), format!("/Common/{name}")),
                json!({"name": name, "partition": "Common", "fullPath": format!("/Common/{name}"),
                    "kind": format!("tm:ltm:monitor:{ty}:{ty}state"), "interval": 5, "timeout": 16}),
            );
        }
        BigIpState {
            users,
            default_user: user.into(),
            default_timeout: 1200,
            tokens: HashMap::new(),
            logins: 0,
            rest_ops: 6_229_426,
            faults: VecDeque::new(),
            log: Vec::new(),
            saves: 0,
            partitions: BTreeMap::from([("Common".to_string(), 0)]),
            objects,
            transactions: HashMap::new(),
            next_tx: 1_389_812_351,
            tx_timeout: Duration::from_secs(120),
            rd_display: RouteDomainDisplay::default(),
            pending: Vec::new(),
            latency: None,
            traffic: Default::default(),
        }
    }

    /// The `defaultRouteDomain` of a partition (0 for one that does not exist).
    pub(super) fn default_rd(&self, partition: &str) -> u32 {
        self.partitions.get(partition).copied().unwrap_or(0)
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

    /// Virtual addresses made with `autoDelete` go with the last virtual that used them.
    pub(super) fn auto_delete_addresses(&mut self) {
        let used: std::collections::HashSet<String> = self
            .objects
            .iter()
            .filter(|((c, _), _)| c == "virtual")
            .filter_map(|(_, v)| {
                split_destination(v["destination"].as_str()?).map(|d| d.1.to_string())
            })
            .collect();
        self.objects.retain(|(c, _), o| {
            c != "virtual-address"
                || o["autoDelete"] != "true"
                || o["address"].as_str().is_some_and(|a| used.contains(a))
        });
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
            query: query.to_string(),
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
        let user = match self.authenticate(token.as_deref(), path) {
            Ok(u) => u,
            Err(reply) => return reply,
        };
        if let Err(reply) = self.authorize(&user, method, path) {
            return reply;
        }
        if let Some(t) = path.strip_prefix("/mgmt/shared/authz/tokens/") {
            return self.token_call(&user, method, t, &body);
        }
        if *method != Method::GET
            && (path.starts_with("/mgmt/tm/ltm/") || path.starts_with("/mgmt/tm/transaction"))
        {
            self.meanwhile();
        }
        if let Some(id) = tx
            && path.starts_with("/mgmt/tm/ltm/")
        {
            return self.queue(id, method, path, query, body);
        }
        if path == "/mgmt/tm/transaction" && method == Method::POST {
            self.next_tx += 1;
            let id = self.next_tx;
            self.transactions.insert(
                id,
                Transaction {
                    created: Instant::now(),
                    user,
                    commands: Vec::new(),
                },
            );
            return (
                200,
                json!({"transId": id, "state": "STARTED", "timeoutSeconds": self.tx_timeout.as_secs(),
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
            return self.partition_call(&user, method, rest.trim_start_matches('/'), &body);
        }
        if let Some(rest) = path.strip_prefix("/mgmt/tm/ltm/") {
            return self.ltm(&user, method, rest, query, body);
        }
        err(
            404,
            format!(
                "URI path {path} not registered.  Please verify URI is supported and wait for /available suffix to be responsive."
            ),
        )
    }

    /// A concurrent writer gets in between a client's reads and its writes.
    fn meanwhile(&mut self) {
        for change in std::mem::take(&mut self.pending) {
            match change {
                Meanwhile::Create(collection, body) => {
                    let (code, out) = self.create(SYSTEM, &collection, body);
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

    /// Drops transactions older than their timeout ("silently removed").
    fn expire_transactions(&mut self) {
        let timeout = self.tx_timeout;
        self.transactions
            .retain(|_, t| t.created.elapsed() <= timeout);
    }

    fn queue(&mut self, id: u64, method: &Method, path: &str, query: &str, body: Value) -> Reply {
        self.expire_transactions();
        let Some(t) = self.transactions.get_mut(&id) else {
            return err(404, format!("Transaction {id} not found"));
        };
        t.commands
            .push((method.clone(), format!("{path}?{query}"), body));
        let n = t.commands.len();
        (
            200,
            json!({"transId": id, "commandId": n, "method": method.to_string(),
            "uri": format!("https://localhost{path}"), "evalOrder": n,
            "kind": "tm:transaction:commandsstate"}),
        )
    }

    fn partition_call(&mut self, user: &str, method: &Method, name: &str, body: &Value) -> Reply {
        let item = |p: &str, rd: u32| {
            json!({"name": p, "fullPath": format!("/{p}"), "defaultRouteDomain": rd,
                "kind": "tm:auth:partition:partitionstate"})
        };
        match (method.clone(), name.is_empty()) {
            (Method::GET, true) => (
                200,
                json!({"kind": "tm:auth:partition:partitioncollectionstate",
                    "items": self.partitions.iter().filter(|(p, _)| self.may_read(user, p))
                        .map(|(p, rd)| item(p, *rd)).collect::<Vec<_>>()}),
            ),
            (Method::GET, false) => match self.partitions.get(name) {
                Some(rd) if self.may_read(user, name) => (200, item(name, *rd)),
                _ => err(
                    404,
                    format!("01020036:3: The requested folder (/{name}) was not found."),
                ),
            },
            (Method::POST, true) => {
                let n = body["name"].as_str().unwrap_or("").to_string();
                if n.is_empty() {
                    return err(400, "name is required");
                }
                if self.partitions.contains_key(&n) {
                    return err(
                        409,
                        format!("01020066:3: The requested folder (/{n}) already exists."),
                    );
                }
                let rd = body["defaultRouteDomain"]
                    .as_u64()
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or(0);
                self.partitions.insert(n.clone(), rd);
                (200, item(&n, rd))
            }
            _ => err(405, "method not allowed"),
        }
    }

    fn commit(&mut self, method: &Method, id: &str, body: &Value) -> Reply {
        let id_num: u64 = match id.split('/').next().and_then(|s| s.parse().ok()) {
            Some(n) => n,
            None => return err(404, format!("Transaction {id} not found")),
        };
        self.expire_transactions();
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
        if t.commands.is_empty() {
            return err(400, "there is no command to commit in the transaction");
        }
        let snapshot = self.objects.clone();
        for (m, uri, b) in t.commands {
            let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
            let rest = path.strip_prefix("/mgmt/tm/ltm/").unwrap_or("");
            let (code, out) = self.ltm(&t.user, &m, rest, query, b);
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
