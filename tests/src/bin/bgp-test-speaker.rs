//! A `portway-bgp` speaker driven over stdin/stdout, so interop tests can run
//! it inside a network namespace with `ip netns exec` (a process cannot move
//! its sockets between namespaces, and this keeps `unsafe` setns out of the
//! tests) and kill it like a crashing node agent.
//!
//! Protocol, one JSON object per line:
//! - first line: `{"config": <bgp section>, "node": {"name", "ipv4", "ipv6"},
//!   "password": "<md5 key, optional>"}`; answers `{"ok": true}` once running.
//! - `{"routes": {"203.0.113.10/32": {"communities": ["64512:100"]}}}`: the
//!   full route set; answers `{"ok": true}` after handing it to the speaker.
//! - `{"add": {...}}` / `{"remove": ["203.0.113.10/32"]}`: change the set
//!   this process holds and hand the full set over again (so a benchmark
//!   does not measure JSON of 10,000 routes); answers `{"ok": true}`.
//! - `{"status": true}`: answers `{"peers": [<PeerStatus>...]}`.
//! - `{"shutdown": true}` or end of input: Cease to every peer, answer
//!   `{"ok": true}`, exit 0.
#![forbid(unsafe_code)]

use anyhow::Context;
use portway_bgp::{BgpConfig, NodeInfo, Routes, Speaker};
use serde_json::{Value, json};
use std::io::{BufRead, Write};

fn reply(v: Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    // Stdin is read on a plain thread: the workspace's tokio has no io-std.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let init: Value = serde_json::from_str(&lines.recv().await.context("no init line")?)?;
    let config = BgpConfig::from_value(init["config"].clone())
        .map_err(|e| anyhow::anyhow!("invalid config: {e:?}"))?;
    let node = NodeInfo {
        name: init["node"]["name"].as_str().unwrap_or("node").to_string(),
        ipv4: init["node"]["ipv4"].as_str().and_then(|s| s.parse().ok()),
        ipv6: init["node"]["ipv6"].as_str().and_then(|s| s.parse().ok()),
        labels: Default::default(),
    };
    let password = init["password"].as_str().map(str::to_string);
    let speaker = Speaker::spawn(&config, &node, |_| password.clone())?;
    reply(json!({ "ok": true }))?;
    let mut current = Routes::new();
    while let Some(line) = lines.recv().await {
        let cmd: Value = serde_json::from_str(&line)?;
        if let Some(routes) = cmd.get("routes") {
            current = serde_json::from_value(routes.clone())?;
            speaker.set_routes(current.clone());
            reply(json!({ "ok": true }))?;
        } else if let Some(add) = cmd.get("add") {
            current.extend(serde_json::from_value::<Routes>(add.clone())?);
            speaker.set_routes(current.clone());
            reply(json!({ "ok": true }))?;
        } else if let Some(remove) = cmd.get("remove") {
            for p in serde_json::from_value::<Vec<ipnet::IpNet>>(remove.clone())? {
                current.remove(&p);
            }
            speaker.set_routes(current.clone());
            reply(json!({ "ok": true }))?;
        } else if cmd.get("status").is_some() {
            reply(json!({ "peers": speaker.peer_states() }))?;
        } else if cmd.get("shutdown").is_some() {
            break;
        }
    }
    speaker.shutdown().await;
    reply(json!({ "ok": true }))?;
    Ok(())
}
