//! Tokens, roles and the 401s a real device answers.

use super::{call, device, get, login, message, ok};
use crate::bigip::auth::Role;
use crate::bigip::auth::User;
use crate::bigip::store::BigIpState;
use axum::http::Method;
use serde_json::{Value, json};
use std::time::Instant;

fn add(s: &mut BigIpState, name: &str, role: Role) {
    s.users.insert(
        name.into(),
        User {
            password: "pw".into(),
            role,
        },
    );
}

/// Recorded in f5devcentral/f5-cli issue #8: `{'code': 401, 'message': 'X-F5-Auth-Token has
/// expired.', 'referer': '10.100.0.10', 'restOperationId': 6229426, 'kind':
/// ':resterrorresponse'}`; recorded in F5Networks/f5-appsvcs-extension issue #438 for a
/// request without a token: `{"code":401,"message":"Authorization failed: no user
/// authentication header or token detected. Uri:http://localhost:8100/mgmt/shared/appsvcs/
/// declare Referrer:x.x.x.x Sender:x.x.x.x","referer":"x.x.x.x","restOperationId":6538112,
/// "kind":":resterrorresponse"}`.
#[test]
fn expired_and_missing_tokens_are_refused_with_the_recorded_bodies() {
    let (mut s, t) = device();
    for tok in s.tokens.values_mut() {
        tok.expires = Instant::now();
    }
    let (code, out) = get(&mut s, &t, "/mgmt/tm/ltm/pool", "");
    assert_eq!(code, 401);
    assert_eq!(message(&out), "X-F5-Auth-Token has expired.");
    assert_eq!(out["kind"], ":resterrorresponse");
    assert!(
        out["restOperationId"].is_u64() && out["referer"].is_string(),
        "{out}"
    );
    let (code, out) = s.serve(
        &Method::GET,
        "/mgmt/tm/ltm/pool",
        "",
        None,
        None,
        Value::Null,
    );
    assert_eq!(code, 401);
    assert_eq!(
        message(&out),
        "Authorization failed: no user authentication header or token detected. Uri:http://localhost:8100/mgmt/tm/ltm/pool Referrer:127.0.0.1 Sender:127.0.0.1"
    );
}

/// F5 DevCentral "iControl REST Authentication Token Management": "Each user can request up
/// to 100 tokens at any point in time. Your 101-th token request will be rejected with the
/// 400 error "Bad Request: user xxx has reached maximum active login tokens". … The only
/// exception is the "admin" user." and "The maximum lifespan is 36,000s … the 406 error
/// "Auth-token absolute timeout (36000 seconds) exceeded"".
#[test]
fn the_101st_token_of_a_user_is_refused_except_for_admin() {
    let mut s = BigIpState::new("admin", "admin");
    add(&mut s, "portway", Role::Administrator);
    let tokens: Vec<String> = (0..100)
        .map(|_| login(&mut s, "portway", "pw").expect("login"))
        .collect();
    let (code, out) = login(&mut s, "portway", "pw").expect_err("101st");
    assert_eq!(code, 400);
    assert_eq!(
        message(&out),
        "Bad Request: user portway has reached maximum active login tokens"
    );
    // Deleting one frees a place.
    let (code, _) = call(
        &mut s,
        &tokens[0],
        Method::DELETE,
        &format!("/mgmt/shared/authz/tokens/{}", tokens[0]),
        Value::Null,
    );
    assert_eq!(code, 200);
    login(&mut s, "portway", "pw").expect("a place was freed");
    for _ in 0..101 {
        login(&mut s, "admin", "admin").expect("admin is exempt");
    }
    let (code, out) = call(
        &mut s,
        &tokens[1],
        Method::PATCH,
        &format!("/mgmt/shared/authz/tokens/{}", tokens[1]),
        json!({"timeout": 36001}),
    );
    assert_eq!(code, 406);
    assert_eq!(
        message(&out),
        "Auth-token absolute timeout (36000 seconds) exceeded"
    );
}

/// A permission denial is 401, not 403: recorded in F5Networks/terraform-provider-bigip
/// issue #160 for a Manager-role user, "Authorization failed: user=https://localhost/mgmt/
/// shared/authz/users/test resource=/mgmt/tm/net/self verb=GET uri:http://localhost:8100/
/// mgmt/tm/net/self referrer:xy.xy.xy.xy sender:xx.xx.xx.xx", and in F5Networks/
/// f5-appsvcs-extension issue #420 (`{"code":401,"message":"Authorization failed: user=…
/// resource=/mgmt/shared/appsvcs/info verb=GET uri:…`).
#[test]
fn a_permission_denial_is_a_401_naming_user_resource_and_verb() {
    let (mut s, _) = device();
    add(
        &mut s,
        "test",
        Role::Manager {
            partition: "p".into(),
        },
    );
    let t = login(&mut s, "test", "pw").expect("login");
    let (code, out) = get(&mut s, &t, "/mgmt/tm/net/self", "");
    assert_eq!(code, 401);
    assert_eq!(
        message(&out),
        "Authorization failed: user=https://localhost/mgmt/shared/authz/users/test resource=/mgmt/tm/net/self verb=GET uri:http://localhost:8100/mgmt/tm/net/self referrer:127.0.0.1 sender:127.0.0.1"
    );
    assert_eq!(out["kind"], ":resterrorresponse");
    // Partitions are an administrator's; so is saving the configuration.
    let (code, out) = call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/auth/partition",
        json!({"name": "other"}),
    );
    assert_eq!(code, 401, "{out}");
    assert!(
        message(&out).contains("resource=/mgmt/tm/auth/partition verb=POST"),
        "{out}"
    );
    let (code, _) = call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/sys/config",
        json!({"command": "save"}),
    );
    assert_eq!(code, 401);
    // Its own partition's LTM objects are its to change.
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "web", "partition": "p"}),
    );
}

/// mcpd's refusals of a Manager: recorded in F5Networks/f5-ansible issue #1175, "status=
/// [01070822:3: Access Denied: user (ansible) does not have create access to object
/// (virtual_server_metadata)] cmd_data=create ltm virtual …", also met by F5Networks/
/// k8s-bigip-ctlr issues #691 (`{"code":400,"message":"01070822:3: Access Denied: user
/// (kube01.lab) does not have create ac…`) and #2029; F5Networks/f5-common-python issue #1516
/// records the "does not have modify access" form.
#[test]
fn a_manager_writes_only_its_partition_and_no_metadata() {
    let (mut s, admin) = device();
    call(
        &mut s,
        &admin,
        Method::POST,
        "/mgmt/tm/auth/partition",
        json!({"name": "other"}),
    );
    add(
        &mut s,
        "ansible",
        Role::Manager {
            partition: "p".into(),
        },
    );
    let t = login(&mut s, "ansible", "pw").expect("login");
    let (code, out) = call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/virtual",
        json!({"name": "test_vs", "partition": "p", "destination": "/p/1.1.1.1:80",
            "metadata": [{"name": "f5-ansible.version", "value": "2.7.5.post0", "persist": "true"}]}),
    );
    assert_eq!(code, 400);
    assert_eq!(
        message(&out),
        "01070822:3: Access Denied: user (ansible) does not have create access to object (virtual_server_metadata)"
    );
    let (code, out) = call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "web", "partition": "other"}),
    );
    assert_eq!(code, 400);
    assert_eq!(
        message(&out),
        "01070822:3: Access Denied: user (ansible) does not have create access to object (pool)"
    );
    // It reads its partition and Common, nothing else.
    call(
        &mut s,
        &admin,
        Method::POST,
        "/mgmt/tm/ltm/node",
        json!({"name": "n", "partition": "other", "address": "10.9.9.9"}),
    );
    let (_, nodes) = get(&mut s, &t, "/mgmt/tm/ltm/node", "");
    assert_eq!(nodes["items"], json!([]));
    let (_, nodes) = get(&mut s, &admin, "/mgmt/tm/ltm/node", "");
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(1));
}
