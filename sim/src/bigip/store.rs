//! The simulated BIG-IP's state and its request handling (synchronous, under one lock).

use axum::http::Method;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
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

struct Transaction {
    created: Instant,
    commands: Vec<(Method, String, Value)>,
}

pub(crate) struct BigIpState {
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) default_timeout: u64,
    pub(crate) tokens: HashMap<String, Token>,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) log: Vec<Request>,
    pub(crate) saves: usize,
    partitions: Vec<String>,
    objects: BTreeMap<(String, String), Value>,
    transactions: HashMap<u64, Transaction>,
    next_tx: u64,
    /// What a concurrent writer does just before the next LTM write or transaction is served.
    pub(crate) pending: Vec<Meanwhile>,
}

type Reply = (u16, Value);

fn err(code: u16, message: impl Into<String>) -> Reply {
    (
        code,
        json!({"code": code, "message": message.into(), "errorStack": [], "apiError": 3}),
    )
}

fn kind_name(collection: &str) -> &'static str {
    match collection {
        "pool" => "Pool",
        "virtual" => "Virtual Server",
        "node" => "Node",
        "virtual-address" => "Virtual Address",
        _ => "Monitor",
    }
}

fn not_found(collection: &str, full: &str) -> Reply {
    err(
        404,
        format!(
            "01020036:3: The requested {} ({full}) was not found.",
            kind_name(collection)
        ),
    )
}

/// `~P~name` (with `%25` for `%`) to `/P/name`.
fn full_path(seg: &str) -> String {
    seg.replace("%25", "%").replace('~', "/")
}

/// The address part of a member name (`ip:port`, IPv6 `ip.port`).
fn member_address(name: &str) -> String {
    if name.contains(':') && name.matches(':').count() > 1 {
        name.rsplit_once('.')
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    } else {
        name.rsplit_once(':')
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    }
}

/// The address of a virtual's destination `/P/ip:port` or `/P/ip.port`.
fn destination_address(dest: &str) -> Option<(String, String)> {
    let rest = dest.strip_prefix('/')?;
    let (partition, addr_port) = rest.split_once('/')?;
    let addr = member_address(addr_port);
    (!addr.is_empty()).then(|| (partition.to_string(), addr))
}

/// The refusal of a change that gives an existing pool member another address: a member's
/// address is its node's, fixed when the member was created ("address may not be
/// specified", F5Networks/f5-openstack-agent#584). Clients send members by name in a PATCH.
fn member_address_change(current: &Value, patch: &Map<String, Value>) -> Option<Reply> {
    let have = current["members"].as_array()?;
    patch.get("members")?.as_array()?.iter().find_map(|m| {
        let new = m.get("address")?.as_str()?;
        let old = have.iter().find(|h| h["name"] == m["name"])?;
        let old = old["address"].as_str()?;
        (old != new).then(|| {
            err(
                400,
                format!(
                    "01070587:3: The requested pool member ({}) address may not be specified: it is {old}, not {new}.",
                    m["name"].as_str().unwrap_or("")
                ),
            )
        })
    })
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

    fn render(&self, collection: &str, o: &Value, expand: bool) -> Value {
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

    fn auto_delete_addresses(&mut self) {
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

    pub(crate) fn ltm(&mut self, method: &Method, rest: &str, query: &str, body: Value) -> Reply {
        let (collection, object) = if let Some(r) = rest.strip_prefix("monitor/") {
            let (ty, obj) = r.split_once('/').unwrap_or((r, ""));
            (format!("monitor/{ty}"), obj)
        } else {
            let (c, obj) = rest.split_once('/').unwrap_or((rest, ""));
            (c.to_string(), obj)
        };
        if !matches!(
            collection.as_str(),
            "pool"
                | "virtual"
                | "node"
                | "virtual-address"
                | "monitor/tcp"
                | "monitor/udp"
                | "monitor/http"
        ) {
            return err(404, format!("URI path /mgmt/tm/ltm/{rest} not registered."));
        }
        if object.contains("/members") {
            return err(
                400,
                "pool member subcollection calls are not simulated; send members inline",
            );
        }
        let full = (!object.is_empty()).then(|| full_path(object));
        let query = query
            .replace("%24", "$")
            .replace("%20", "+")
            .replace(' ', "+");
        match (method.clone(), full) {
            (Method::GET, None) => {
                let partition = query
                    .split('&')
                    .find_map(|q| q.strip_prefix("$filter=partition+eq+"))
                    .map(String::from);
                let expand = query.contains("expandSubcollections=true");
                (
                    200,
                    json!({"kind": format!("tm:ltm:{collection}:{collection}collectionstate"),
                    "items": self.list(&collection, partition.as_deref(), expand)}),
                )
            }
            (Method::GET, Some(full)) => {
                match self.objects.get(&(collection.clone(), full.clone())) {
                    Some(o) => (
                        200,
                        self.render(&collection, o, query.contains("expandSubcollections=true")),
                    ),
                    None => not_found(&collection, &full),
                }
            }
            (Method::POST, None) => self.create(&collection, body),
            (Method::PATCH, Some(full)) => self.modify(&collection, &full, body, false),
            (Method::PUT, Some(full)) => self.modify(&collection, &full, body, true),
            (Method::DELETE, Some(full)) => self.delete(&collection, &full),
            _ => err(405, "method not allowed"),
        }
    }

    fn normalize(
        &mut self,
        collection: &str,
        partition: &str,
        o: &mut Map<String, Value>,
    ) -> Result<(), Reply> {
        match collection {
            "pool" => {
                o.entry("loadBalancingMode").or_insert(json!("round-robin"));
                o.entry("monitor").or_insert(json!(""));
                let members = o
                    .get("members")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut out = Vec::new();
                for m in members {
                    let name = m["name"].as_str().unwrap_or("").to_string();
                    let address = match m["address"].as_str() {
                        Some(a) => a.to_string(),
                        None => self.address_of_member(partition, &name)?,
                    };
                    let node_path = format!("/{partition}/{address}");
                    self.objects.entry(("node".into(), node_path.clone())).or_insert_with(|| {
                        json!({"kind": "tm:ltm:node:nodestate", "name": address, "partition": partition,
                            "fullPath": node_path, "address": address})
                    });
                    out.push(json!({"name": name, "partition": partition, "address": address,
                        "fullPath": format!("/{partition}/{name}"), "state": "unchecked", "session": "user-enabled"}));
                }
                o.insert("members".into(), Value::Array(out));
                if let Some(mon) = o
                    .get("monitor")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    && mon.starts_with(&format!("/{partition}/"))
                    && !self
                        .objects
                        .keys()
                        .any(|(c, f)| c.starts_with("monitor/") && f == mon)
                {
                    return Err(err(
                        400,
                        format!("01020036:3: The requested monitor ({mon}) was not found."),
                    ));
                }
            }
            "virtual" => {
                let dest = o
                    .get("destination")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let Some((dp, addr)) = destination_address(&dest) else {
                    return Err(err(
                        400,
                        format!("01070079:3: invalid destination {dest:?}"),
                    ));
                };
                if let Some(pool) = o
                    .get("pool")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    && !self
                        .objects
                        .contains_key(&("pool".into(), pool.to_string()))
                {
                    return Err(err(400, format!("01070226:3: Pool {pool} does not exist.")));
                }
                o.entry("sourceAddressTranslation")
                    .or_insert(json!({"type": "none"}));
                let va = format!("/{dp}/{addr}");
                self.objects
                    .entry(("virtual-address".into(), va.clone()))
                    .or_insert_with(|| {
                        json!({"kind": "tm:ltm:virtual-address:virtual-addressstate", "name": addr,
                        "partition": dp, "fullPath": va, "address": addr, "autoDelete": "true",
                        "arp": "enabled", "icmpEcho": "enabled"})
                    });
            }
            c if c.starts_with("monitor/") => {
                o.entry("interval").or_insert(json!(5));
                o.entry("timeout").or_insert(json!(16));
                o.entry("defaultsFrom")
                    .or_insert(json!(format!("/Common/{}", &c[8..])));
            }
            _ => {}
        }
        Ok(())
    }

    /// The node address of a member given by name only, as BIG-IP derives it: `a.b.c.d:port`
    /// or (IPv6) `addr.port`, with an optional `%rd`; a name that is not an address names an
    /// existing node of the partition.
    fn address_of_member(&self, partition: &str, name: &str) -> Result<String, Reply> {
        let address = member_address(name);
        if address.is_empty() {
            return Err(err(
                400,
                format!("01070587:3: The requested pool member ({name}) is invalid"),
            ));
        }
        let ip = address.split_once('%').map_or(address.as_str(), |(a, _)| a);
        if ip.parse::<IpAddr>().is_ok() {
            return Ok(address);
        }
        let node = format!("/{partition}/{address}");
        match self.objects.get(&("node".into(), node.clone())) {
            Some(n) => Ok(n["address"].as_str().unwrap_or("").to_string()),
            // A missing referenced object is a 400, as for a pool's monitor.
            None => Err(err(
                400,
                format!("01020036:3: The requested Node ({node}) was not found."),
            )),
        }
    }

    pub(crate) fn create(&mut self, collection: &str, body: Value) -> Reply {
        let Some(mut o) = body.as_object().cloned() else {
            return err(400, "body must be an object");
        };
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() || name.contains('/') || name.contains('~') {
            return err(
                400,
                format!("01070734:3: Configuration error: invalid name {name:?}"),
            );
        }
        let partition = o
            .get("partition")
            .and_then(Value::as_str)
            .unwrap_or("Common")
            .to_string();
        if !self.partitions.contains(&partition) {
            return err(
                400,
                format!("01070712:3: The folder (/{partition}) does not exist."),
            );
        }
        let full = format!("/{partition}/{name}");
        if self
            .objects
            .contains_key(&(collection.to_string(), full.clone()))
        {
            return err(
                409,
                format!(
                    "01020066:3: The requested {} ({full}) already exists in partition {partition}.",
                    kind_name(collection)
                ),
            );
        }
        let snapshot = self.objects.clone();
        if let Err(e) = self.normalize(collection, &partition, &mut o) {
            self.objects = snapshot;
            return e;
        }
        o.insert("partition".into(), json!(partition));
        o.insert("fullPath".into(), json!(full));
        o.insert(
            "kind".into(),
            json!(format!("tm:ltm:{collection}:{collection}state")),
        );
        let v = Value::Object(o);
        self.objects
            .insert((collection.to_string(), full), v.clone());
        (200, self.render(collection, &v, true))
    }

    fn modify(&mut self, collection: &str, full: &str, body: Value, replace: bool) -> Reply {
        let Some(current) = self
            .objects
            .get(&(collection.to_string(), full.to_string()))
            .cloned()
        else {
            return not_found(collection, full);
        };
        let Some(patch) = body.as_object() else {
            return err(400, "body must be an object");
        };
        let mut o: Map<String, Value> = if replace {
            // PUT resets every property it leaves out.
            let mut m = Map::new();
            for k in [
                "name",
                "partition",
                "fullPath",
                "kind",
                "destination",
                "address",
            ] {
                if let Some(v) = current.get(k) {
                    m.insert(k.into(), v.clone());
                }
            }
            m
        } else {
            current.as_object().cloned().unwrap_or_default()
        };
        for (k, v) in patch {
            if matches!(k.as_str(), "name" | "partition" | "fullPath") {
                continue;
            }
            o.insert(k.clone(), v.clone());
        }
        let partition = current["partition"]
            .as_str()
            .unwrap_or("Common")
            .to_string();
        if let Some(e) = member_address_change(&current, patch) {
            return e;
        }
        let snapshot = self.objects.clone();
        if let Err(e) = self.normalize(collection, &partition, &mut o) {
            self.objects = snapshot;
            return e;
        }
        let v = Value::Object(o);
        self.objects
            .insert((collection.to_string(), full.to_string()), v.clone());
        if collection == "virtual" {
            self.auto_delete_addresses();
        }
        (200, self.render(collection, &v, true))
    }

    fn delete(&mut self, collection: &str, full: &str) -> Reply {
        if !self
            .objects
            .contains_key(&(collection.to_string(), full.to_string()))
        {
            return not_found(collection, full);
        }
        match collection {
            "node" => {
                let addr =
                    self.objects[&(collection.to_string(), full.to_string())]["address"].clone();
                if let Some(((_, pool), _)) = self.objects.iter().find(|((c, _), p)| {
                    c == "pool"
                        && p["members"]
                            .as_array()
                            .is_some_and(|ms| ms.iter().any(|m| m["address"] == addr))
                }) {
                    return err(
                        400,
                        format!(
                            "01070110:3: Node address '{full}' is referenced by a member of pool '{pool}'."
                        ),
                    );
                }
            }
            "pool" => {
                if let Some(((_, v), _)) = self
                    .objects
                    .iter()
                    .find(|((c, _), v)| c == "virtual" && v["pool"] == full)
                {
                    return err(
                        400,
                        format!(
                            "01070265:3: The Pool ({full}) cannot be deleted because it is in use by a Virtual Server ({v})."
                        ),
                    );
                }
            }
            c if c.starts_with("monitor/") => {
                if let Some(((_, p), _)) = self
                    .objects
                    .iter()
                    .find(|((c, _), p)| c == "pool" && p["monitor"] == full)
                {
                    return err(
                        400,
                        format!("01070083:3: Monitor {full} is in use by pool {p}."),
                    );
                }
            }
            _ => {}
        }
        self.remove(collection, full);
        (200, Value::Null)
    }
}
