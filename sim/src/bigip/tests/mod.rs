//! The simulated BIG-IP's own suite: each device behaviour it reproduces, served
//! synchronously (no HTTP), with the recorded response or client code it follows quoted.

mod access;
mod members;
mod objects;
mod route_domains;
mod traffic;

use super::store::BigIpState;
use axum::http::Method;
use serde_json::{Value, json};

/// Logs `user` in; the token, or the device's answer.
fn login(s: &mut BigIpState, user: &str, password: &str) -> Result<String, (u16, Value)> {
    let (code, out) = s.serve(
        &Method::POST,
        "/mgmt/shared/authn/login",
        "",
        None,
        None,
        json!({"username": user, "password": password, "loginProviderName": "tmos"}),
    );
    match out["token"]["token"].as_str() {
        Some(t) if code == 200 => Ok(t.to_string()),
        _ => Err((code, out)),
    }
}

/// A device with partition `p` and an administrator's token.
fn device() -> (BigIpState, String) {
    let mut s = BigIpState::new("admin", "admin");
    let token = login(&mut s, "admin", "admin").expect("login");
    ok(
        &mut s,
        &token,
        Method::POST,
        "/mgmt/tm/auth/partition",
        json!({"name": "p"}),
    );
    (s, token)
}

fn call(s: &mut BigIpState, token: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
    s.serve(&method, path, "", Some(token.to_string()), None, body)
}

/// A call that must succeed: its answer.
fn ok(s: &mut BigIpState, token: &str, method: Method, path: &str, body: Value) -> Value {
    let (code, out) = call(s, token, method.clone(), path, body);
    assert_eq!(code, 200, "{method} {path}: {out}");
    out
}

fn get(s: &mut BigIpState, token: &str, path: &str, query: &str) -> (u16, Value) {
    s.serve(
        &Method::GET,
        path,
        query,
        Some(token.to_string()),
        None,
        Value::Null,
    )
}

/// The `message` of an answer.
fn message(out: &Value) -> &str {
    out["message"].as_str().unwrap_or("")
}
