//! The counters and the latency model a benchmark relies on, over HTTP (they live in the
//! HTTP layer: bytes are the bodies as sent and answered).

use crate::bigip::{BigIpSim, Latency, Traffic};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange: the response body.
async fn exchange(sim: &BigIpSim, method: &str, path: &str, token: &str, body: &str) -> String {
    let addr = sim.url().trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bigip\r\nConnection: close\r\nX-F5-Auth-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(!head.contains("chunked"), "{head}");
    body.to_string()
}

#[tokio::test]
async fn calls_and_bytes_are_counted_and_reset() {
    let sim = BigIpSim::start().await.expect("sim");
    let login = r#"{"username":"admin","password":"admin","loginProviderName":"tmos"}"#;
    let out = exchange(&sim, "POST", "/mgmt/shared/authn/login", "", login).await;
    let token: serde_json::Value = serde_json::from_str(&out).expect("json");
    let token = token["token"]["token"].as_str().expect("token").to_string();
    let partition = r#"{"name":"p"}"#;
    let created = exchange(&sim, "POST", "/mgmt/tm/auth/partition", &token, partition).await;
    let listed = exchange(&sim, "GET", "/mgmt/tm/auth/partition", &token, "").await;
    assert_eq!(
        sim.traffic(),
        Traffic {
            calls: 3,
            reads: 1,
            writes: 1,
            request_bytes: (login.len() + partition.len()) as u64,
            response_bytes: (out.len() + created.len() + listed.len()) as u64,
            modelled: Duration::ZERO,
        }
    );
    sim.reset_traffic();
    assert_eq!(sim.traffic(), Traffic::default());

    // With the model on, each call is charged (and takes) 20 ms plus its response's share.
    sim.set_latency(Some(Latency::DEVICE));
    let start = Instant::now();
    let listed = exchange(&sim, "GET", "/mgmt/tm/auth/partition", &token, "").await;
    let took = start.elapsed();
    let charged = Latency::DEVICE.cost(listed.len());
    assert_eq!(sim.traffic().modelled, charged);
    assert!(
        took >= charged,
        "answered after {took:?}, charged {charged:?}"
    );
    sim.set_latency(None);
    sim.reset_traffic();
    exchange(&sim, "GET", "/mgmt/tm/auth/partition", &token, "").await;
    assert_eq!(sim.traffic().modelled, Duration::ZERO);
}
