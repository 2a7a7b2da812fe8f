//! Pool members and their nodes.

use super::{call, device, ok};
use crate::bigip::store::{BigIpState, SYSTEM};
use axum::http::Method;
use serde_json::{Value, json};

fn members(s: &BigIpState) -> Vec<(String, String)> {
    s.list(SYSTEM, "pool", Some("p"), true)[0]["membersReference"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["address"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn node_addresses(s: &BigIpState) -> Vec<String> {
    s.list(SYSTEM, "node", Some("p"), false)
        .iter()
        .filter_map(|n| n["address"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_member_patched_by_name_gets_its_address_and_node_from_the_name() {
    let (mut s, t) = device();
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "web", "partition": "p",
            "members": [{"name": "10.0.0.1:30080", "partition": "p", "address": "10.0.0.1"}]}),
    );
    ok(
        &mut s,
        &t,
        Method::PATCH,
        "/mgmt/tm/ltm/pool/~p~web",
        json!({"members": [{"name": "10.0.0.1:30080", "partition": "p"},
            {"name": "10.0.0.2:30080", "partition": "p"}, {"name": "fd00::3.30080", "partition": "p"},
            {"name": "10.0.0.4%2:30080", "partition": "p"}]}),
    );
    assert_eq!(
        members(&s),
        [
            ("10.0.0.1:30080".into(), "10.0.0.1".into()),
            ("10.0.0.2:30080".into(), "10.0.0.2".into()),
            ("fd00::3.30080".into(), "fd00::3".into()),
            ("10.0.0.4%2:30080".into(), "10.0.0.4%2".into()),
        ]
    );
    let mut nodes = node_addresses(&s);
    nodes.sort();
    assert_eq!(nodes, ["10.0.0.1", "10.0.0.2", "10.0.0.4%2", "fd00::3"]);
}

#[test]
fn a_member_name_that_is_not_an_address_names_an_existing_node() {
    let (mut s, t) = device();
    let pool = json!({"name": "web", "partition": "p",
        "members": [{"name": "db1:5432", "partition": "p"}]});
    let (code, out) = call(&mut s, &t, Method::POST, "/mgmt/tm/ltm/pool", pool.clone());
    assert_eq!(code, 400, "{out}");
    assert!(
        out["message"]
            .as_str()
            .is_some_and(|m| m.contains("(/p/db1) was not found")),
        "{out}"
    );
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/node",
        json!({"name": "db1", "partition": "p", "address": "10.0.0.7"}),
    );
    ok(&mut s, &t, Method::POST, "/mgmt/tm/ltm/pool", pool);
    assert_eq!(members(&s), [("db1:5432".into(), "10.0.0.7".into())]);
}

#[test]
fn a_refused_pool_leaves_no_node_its_earlier_members_created() {
    let (mut s, t) = device();
    // The first member creates node 10.0.0.5, the second names a node that does not exist:
    // the create is refused as a whole, so the node goes too.
    let pool = json!({"name": "web", "partition": "p",
        "members": [{"name": "10.0.0.5:80", "partition": "p"}, {"name": "db1:5432", "partition": "p"}]});
    let (code, out) = call(&mut s, &t, Method::POST, "/mgmt/tm/ltm/pool", pool);
    assert_eq!(code, 400, "{out}");
    assert!(node_addresses(&s).is_empty(), "{:?}", node_addresses(&s));
    // The same on a PATCH of an existing pool.
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "web", "partition": "p", "members": [{"name": "10.0.0.1:80", "partition": "p"}]}),
    );
    let (code, out) = call(
        &mut s,
        &t,
        Method::PATCH,
        "/mgmt/tm/ltm/pool/~p~web",
        json!({"members": [{"name": "10.0.0.1:80", "partition": "p"}, {"name": "10.0.0.6:80", "partition": "p"},
            {"name": "db1:5432", "partition": "p"}]}),
    );
    assert_eq!(code, 400, "{out}");
    assert_eq!(node_addresses(&s), ["10.0.0.1"]);
}

#[test]
fn a_patch_may_not_change_the_address_of_an_existing_member() {
    let (mut s, t) = device();
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "web", "partition": "p", "monitor": "/Common/tcp",
            "members": [{"name": "10.0.0.1:30080", "partition": "p", "address": "10.0.0.1"}]}),
    );
    let (code, out) = call(
        &mut s,
        &t,
        Method::PATCH,
        "/mgmt/tm/ltm/pool/~p~web",
        json!({"members": [{"name": "10.0.0.1:30080", "partition": "p", "address": "10.0.0.9"},
            {"name": "10.0.0.2:30080", "partition": "p"}]}),
    );
    assert_eq!(code, 400, "{out}");
    assert_eq!(out["code"], 400);
    assert!(
        out["message"].as_str().is_some_and(
            |m| m.starts_with("01070587:3:") && m.contains("address may not be specified")
        ),
        "{out}"
    );
    // Refused as a whole: nothing changed, no node was created.
    assert_eq!(members(&s), [("10.0.0.1:30080".into(), "10.0.0.1".into())]);
    assert_eq!(node_addresses(&s), ["10.0.0.1"]);
    // The same address, or none, is accepted.
    ok(
        &mut s,
        &t,
        Method::PATCH,
        "/mgmt/tm/ltm/pool/~p~web",
        json!({"members": [{"name": "10.0.0.1:30080", "partition": "p", "address": "10.0.0.1"},
            {"name": "10.0.0.2:30080", "partition": "p"}]}),
    );
    assert_eq!(
        s.list(SYSTEM, "pool", Some("p"), false)[0]["monitor"],
        "/Common/tcp "
    );
}

#[test]
fn the_request_log_keeps_bodies_but_not_the_login_password() {
    let (mut s, t) = device();
    call(
        &mut s,
        &t,
        Method::PATCH,
        "/mgmt/tm/ltm/pool/~p~none",
        json!({"members": []}),
    );
    assert_eq!(s.log[0].path, "/mgmt/shared/authn/login");
    assert_eq!(s.log[0].body, Value::Null);
    assert_eq!(s.log.last().map(|r| &r.body), Some(&json!({"members": []})));
}

/// A member without `partition` is in `/Common`, with its node: the OpenShift router moved to
/// "fully qualified names so that there is no defaulting to /Common" (openshift/origin PR
/// #13391); f5-common-python requires `partition` for a member (`f5/bigip/tm/ltm/pool.py`).
#[test]
fn a_member_without_partition_is_in_common() {
    let (mut s, t) = device();
    let out = ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "web", "partition": "p", "members": [{"name": "10.0.0.1:30080"},
            {"name": "10.0.0.2:30080", "partition": "p"}]}),
    );
    let paths: Vec<&str> = out["membersReference"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["fullPath"].as_str())
        .collect();
    assert_eq!(paths, ["/Common/10.0.0.1:30080", "/p/10.0.0.2:30080"]);
    assert_eq!(node_addresses(&s), ["10.0.0.2"]);
    let common: Vec<Value> = s.list(SYSTEM, "node", Some("Common"), false);
    assert_eq!(common[0]["fullPath"], "/Common/10.0.0.1");
}

/// "01070110:3: Node address '/somepartition/my-node-name' is referenced by a member of pool
/// '/somepartition/my-pool-name-80'." (a terraform-provider-bigip user's module README, on a
/// destroy racing its own member removal).
#[test]
fn a_node_a_member_uses_cannot_be_deleted() {
    let (mut s, t) = device();
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/node",
        json!({"name": "my-node-name", "partition": "p", "address": "10.0.0.7"}),
    );
    call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "my-pool-name-80", "partition": "p",
            "members": [{"name": "my-node-name:80", "partition": "p"}]}),
    );
    let (code, out) = call(
        &mut s,
        &t,
        Method::DELETE,
        "/mgmt/tm/ltm/node/~p~my-node-name",
        Value::Null,
    );
    assert_eq!(code, 400);
    assert_eq!(
        out["message"],
        "01070110:3: Node address '/p/my-node-name' is referenced by a member of pool '/p/my-pool-name-80'."
    );
    call(
        &mut s,
        &t,
        Method::PATCH,
        "/mgmt/tm/ltm/pool/~p~my-pool-name-80",
        json!({"members": []}),
    );
    ok(
        &mut s,
        &t,
        Method::DELETE,
        "/mgmt/tm/ltm/node/~p~my-node-name",
        Value::Null,
    );
}
