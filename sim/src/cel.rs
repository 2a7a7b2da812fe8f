//! CEL for the `x-kubernetes-validations` rules of CustomResourceDefinitions, on the
//! maintained `cel` crate (cel-rust), with the part of Kubernetes' CEL library that address
//! rules use: `isIP`, `ip()`, `isCIDR`, `cidr()` and their methods (`family`,
//! `containsIP`, `containsCIDR`, `prefixLength`, `ip`, `masked`, `isCanonical`,
//! `isLoopback`, `isUnspecified`), and cel-go's strings extension as the server declares
//! it (`split`, `join`, `lowerAscii`, ...). A rule that does not compile or calls what is missing
//! here is reported as the field's error with the reason, never passed silently.

use cel::extractors::This;
use cel::objects::{Key, Map};
use cel::{Context, ExecutionError, Program, Value};
use ipnet::IpNet;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// An IP address value of Kubernetes' CEL library (`net.IP`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ip(IpAddr);

/// A CIDR value of Kubernetes' CEL library (`net.CIDR`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cidr(IpNet);

impl cel::objects::Opaque for Ip {
    fn runtime_type_name(&self) -> &str {
        "net.IP"
    }
}

impl cel::objects::Opaque for Cidr {
    fn runtime_type_name(&self) -> &str {
        "net.CIDR"
    }
}

/// Kubernetes parses addresses strictly: no IPv4 leading zeros, no zone, no IPv4-mapped
/// IPv6 (`library.ip`, `netutils.ParseIPSloppy` refused).
fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip: IpAddr = s.parse().ok()?;
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return None;
    }
    Some(ip)
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    let (addr, _) = s.split_once('/')?;
    parse_ip(addr)?;
    s.parse().ok()
}

/// What Go's `netip.ParsePrefix` says of a bad CIDR (the real server's error text).
fn go_prefix_error(s: &str) -> String {
    let Some((addr, bits)) = s.split_once('/') else {
        return format!("netip.ParsePrefix({s:?}): no '/'");
    };
    if parse_ip(addr).is_none() {
        return format!("netip.ParsePrefix({s:?}): ParseAddr({addr:?}): unable to parse IP");
    }
    if bits.parse::<u8>().is_err() {
        return format!("netip.ParsePrefix({s:?}): bad bits after slash: {bits:?}");
    }
    format!("netip.ParsePrefix({s:?}): prefix length out of range")
}

fn fail(f: &str, msg: impl ToString) -> ExecutionError {
    ExecutionError::function_error(f, msg)
}

fn text(v: &Value, f: &str) -> Result<String, ExecutionError> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        other => Err(fail(f, format!("expected a string, got {other:?}"))),
    }
}

fn as_ip(v: &Value, f: &str) -> Result<IpAddr, ExecutionError> {
    match v {
        Value::Opaque(o) => o
            .downcast_ref::<Ip>()
            .map(|i| i.0)
            .ok_or_else(|| fail(f, "expected an IP")),
        Value::String(s) => parse_ip(s).ok_or_else(|| {
            fail(
                f,
                format!(
                    "IP Address {s:?} parse error during conversion from string: ParseAddr({s:?}): unable to parse IP"
                ),
            )
        }),
        other => Err(fail(f, format!("expected an IP, got {other:?}"))),
    }
}

fn as_cidr(v: &Value, f: &str) -> Result<IpNet, ExecutionError> {
    match v {
        Value::Opaque(o) => o
            .downcast_ref::<Cidr>()
            .map(|c| c.0)
            .ok_or_else(|| fail(f, "expected a CIDR")),
        Value::String(s) => parse_cidr(s).ok_or_else(|| {
            fail(
                f,
                format!(
                    "network address parse error during conversion from string: network address parse error during conversion from string: {}",
                    go_prefix_error(s)
                ),
            )
        }),
        other => Err(fail(f, format!("expected a CIDR, got {other:?}"))),
    }
}

fn ip_value(ip: IpAddr) -> Value {
    Value::Opaque(Arc::new(Ip(ip)))
}

/// CEL's standard library with cel-go's strings extension (`split`, `join`, `lowerAscii`,
/// `indexOf`, `replace`, `trim`, `substring`, ...), which kube-apiserver declares for every
/// CRD rule (`ext.Strings`): a rule such as `a.split('-').size() == 2` compiles and runs
/// there, so it must here. Built once; contexts share it.
fn kubernetes_env() -> Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        // The extension's names are distinct from the standard library's (its only
        // possible error, a duplicate declaration, cannot happen on a fresh stdlib env);
        // should it fail, rules calling it report the missing function as the field's
        // error, which the differential tests would show.
        let _ = env.add_extension(cel::extensions::strings);
        Arc::new(env)
    })
    .clone()
}

fn context_with_library() -> Context<'static, 'static> {
    let mut ctx = Context::with_env(kubernetes_env());
    // The names are not the standard library's, so declaring them cannot conflict.
    let _ = ctx.add_function(
        "isIP",
        |This(v): This<Value>| -> Result<bool, ExecutionError> {
            Ok(parse_ip(&text(&v, "isIP")?).is_some())
        },
    );
    let _ = ctx.add_function(
        "isCIDR",
        |This(v): This<Value>| -> Result<bool, ExecutionError> {
            Ok(parse_cidr(&text(&v, "isCIDR")?).is_some())
        },
    );
    let _ = ctx.add_function(
        "ip",
        |This(v): This<Value>| -> Result<Value, ExecutionError> {
            match &v {
                Value::Opaque(_) => Ok(ip_value(as_cidr(&v, "ip")?.addr())),
                _ => Ok(ip_value(as_ip(&v, "ip")?)),
            }
        },
    );
    let _ = ctx.add_function(
        "cidr",
        |This(v): This<Value>| -> Result<Value, ExecutionError> {
            Ok(Value::Opaque(Arc::new(Cidr(as_cidr(&v, "cidr")?))))
        },
    );
    let _ = ctx.add_function(
        "family",
        |This(v): This<Value>| -> Result<i64, ExecutionError> {
            Ok(if as_ip(&v, "family")?.is_ipv4() { 4 } else { 6 })
        },
    );
    let _ = ctx.add_function(
        "isLoopback",
        |This(v): This<Value>| -> Result<bool, ExecutionError> {
            Ok(as_ip(&v, "isLoopback")?.is_loopback())
        },
    );
    let _ = ctx.add_function(
        "isUnspecified",
        |This(v): This<Value>| -> Result<bool, ExecutionError> {
            Ok(as_ip(&v, "isUnspecified")?.is_unspecified())
        },
    );
    let _ = ctx.add_function(
        "isCanonical",
        |This(v): This<Value>| -> Result<bool, ExecutionError> {
            let s = text(&v, "isCanonical")?;
            Ok(parse_ip(&s).is_some_and(|ip| ip.to_string() == s))
        },
    );
    let _ = ctx.add_function(
        "containsIP",
        |This(v): This<Value>, other: Value| -> Result<bool, ExecutionError> {
            Ok(as_cidr(&v, "containsIP")?.contains(&as_ip(&other, "containsIP")?))
        },
    );
    let _ = ctx.add_function(
        "containsCIDR",
        |This(v): This<Value>, other: Value| -> Result<bool, ExecutionError> {
            let outer = as_cidr(&v, "containsCIDR")?;
            let inner = as_cidr(&other, "containsCIDR")?;
            Ok(outer.contains(&inner.network()) && outer.prefix_len() <= inner.prefix_len())
        },
    );
    let _ = ctx.add_function(
        "prefixLength",
        |This(v): This<Value>| -> Result<i64, ExecutionError> {
            Ok(i64::from(as_cidr(&v, "prefixLength")?.prefix_len()))
        },
    );
    let _ = ctx.add_function(
        "masked",
        |This(v): This<Value>| -> Result<Value, ExecutionError> {
            Ok(Value::Opaque(Arc::new(Cidr(
                as_cidr(&v, "masked")?.trunc(),
            ))))
        },
    );
    ctx
}

/// A JSON value as CEL sees it: integers as `int`, objects as maps with string keys.
pub fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(m) => {
            let map: HashMap<Key, Value> = m
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// Whether a rule reads `oldSelf` (a transition rule, evaluated on updates only).
pub fn is_transition(rule: &str) -> bool {
    rule.contains("oldSelf")
}

/// Compiled programs by source: a rule is compiled once per process.
fn compiled(rule: &str) -> Result<Arc<Program>, String> {
    static CACHE: Mutex<Vec<(String, Arc<Program>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = cache.iter().find(|(r, _)| r == rule) {
        return Ok(p.clone());
    }
    let p = Arc::new(Program::compile(rule).map_err(|e| e.to_string())?);
    cache.push((rule.to_string(), p.clone()));
    Ok(p)
}

/// Evaluates `rule` with `self` (and `oldSelf`): `Ok(true)` when it holds, `Err` with the
/// reason when it cannot be evaluated.
pub fn eval(rule: &str, this: &Json, old: Option<&Json>) -> Result<bool, String> {
    let program = compiled(rule)?;
    let mut ctx = context_with_library();
    ctx.add_variable_from_value("self", to_cel(this));
    if let Some(o) = old {
        ctx.add_variable_from_value("oldSelf", to_cel(o));
    }
    match program.execute(&ctx) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("rule did not evaluate to a bool: {other:?}")),
        Err(ExecutionError::FunctionError { message, .. }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

/// Evaluates a `messageExpression` to its string.
pub fn message(expr: &str, this: &Json) -> Option<String> {
    let program = compiled(expr).ok()?;
    let mut ctx = context_with_library();
    ctx.add_variable_from_value("self", to_cel(this));
    match program.execute(&ctx) {
        Ok(Value::String(s)) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubernetes_ip_and_cidr_library() {
        let ok = |rule: &str, v: Json| eval(rule, &v, None).expect("evaluates");
        assert!(ok("isCIDR(self)", json!("10.0.0.0/8")));
        assert!(!ok("isCIDR(self)", json!("10.0.0.0/33")));
        assert!(!ok("isCIDR(self)", json!("010.0.0.0/8")));
        assert!(ok("isIP(self)", json!("2001:db8::1")));
        assert!(!ok("isIP(self)", json!("::ffff:10.0.0.1")));
        assert!(ok("cidr(self).prefixLength() >= 16", json!("10.1.0.0/16")));
        assert!(ok(
            "cidr(self).containsIP('10.1.2.3')",
            json!("10.1.0.0/16")
        ));
        assert!(ok("ip(self).family() == 6", json!("fd00::1")));
        assert!(ok(
            "self.all(c, isCIDR(c) && cidr(c).ip().family() == 4)",
            json!(["10.0.0.0/8", "192.168.0.0/16"])
        ));
        assert!(ok(
            "self.start.size() > 0 && isIP(self.start)",
            json!({"start": "10.0.0.1"})
        ));
        assert!(
            eval(
                "self.x <= oldSelf.x",
                &json!({"x": 1}),
                Some(&json!({"x": 2}))
            )
            .expect("ok")
        );
        // Go durations, as kube-apiserver's CEL has them (a BGPPeer's timers rule).
        let timers = "duration(self.keepaliveTime) < duration(self.holdTime)";
        assert!(ok(
            timers,
            json!({"keepaliveTime": "30s", "holdTime": "1m30s"})
        ));
        assert!(!ok(
            timers,
            json!({"keepaliveTime": "90s", "holdTime": "30s"})
        ));
        assert!(eval("duration(self)", &json!("soon"), None).is_err());
        assert!(eval("cidr(self)", &json!("nope"), None).is_err());
        assert!(eval("self.nosuch()", &json!("x"), None).is_err());
        assert!(eval("self +", &json!(1), None).is_err());
    }

    /// kube-apiserver declares cel-go's strings extension for CRD rules; without it
    /// `split` was an "Undeclared reference" here and Portway's own AddressPool rule
    /// (a range `first-last`) refused every pool on the sim while the real server took it.
    #[test]
    fn the_strings_extension_is_declared_as_on_the_server() {
        let ok = |rule: &str, v: Json| eval(rule, &v, None).expect("evaluates");
        let range = "self.split('-').size() == 2 && isIP(self.split('-')[0]) && \
                     ip(self.split('-')[0]).family() == ip(self.split('-')[1]).family()";
        assert!(ok(range, json!("192.168.10.10-192.168.10.20")));
        assert!(!ok(range, json!("192.168.10.10-fd00::1")));
        assert!(!ok(range, json!("192.168.10.10")));
        assert!(ok("self.split(':', 2).size() == 2", json!("1:2:3")));
        assert!(ok("self.lowerAscii() == 'l2'", json!("L2")));
        assert!(ok("['a', 'b'].join('-') == self", json!("a-b")));
        assert!(ok(
            "self.all(a, isCIDR(a) || isIP(a) || a.split('-').size() == 2)",
            json!(["10.0.0.0/8", "10.0.0.1", "10.0.0.1-10.0.0.9"])
        ));
    }
}
