//! The corpus format and how one step runs against one server.
//!
//! A step is one HTTP request (method, path with `${var}`s, headers, a body given as YAML
//! and sent as JSON, or `raw` text sent as is). `save` keeps values of this server's answer
//! for later steps (a resourceVersion for a precondition, a uid); `until` repeats the
//! request until the answer has a status code or a value (what controllers do in their own
//! time: garbage collection, namespace deletion), then compares the last answer; `watch`
//! reads that many events of a watch stream (or what came within `within_ms`).

use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How many changes the sim's watch history keeps in this test (its builder's `history`).
/// The real server's watch cache starts with the server and holds at least this many
/// events per resource, so a watch from a resourceVersion before either is `410 Gone` on
/// both, and one from a recent version replays on both.
pub const SIM_HISTORY: usize = 1_000;

/// One request of the corpus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Shown on failure.
    pub name: String,
    /// `GET` (default), `POST`, `PUT`, `PATCH`, `DELETE`.
    #[serde(default = "get")]
    pub method: String,
    /// Path and query, `${name}` replaced by saved values.
    pub path: String,
    /// Request headers (`Content-Type`, `Accept`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A body, sent as JSON (`Content-Type: application/json` unless a header says else).
    pub body: Option<serde_yaml::Value>,
    /// A body sent as is.
    pub raw: Option<String>,
    /// The status code the real server gives (a check of the corpus itself).
    pub status: Option<u16>,
    /// Values to keep from this server's answer: name -> JSON pointer.
    #[serde(default)]
    pub save: BTreeMap<String, String>,
    /// Repeat until the answer matches, for at most 60 s.
    pub until: Option<Until>,
    /// Read a watch stream.
    pub watch: Option<Watch>,
    /// JSON pointers left out of the comparison, each with the reason in the corpus.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// The kinds this step exercises, for the corpus statistics (default: from the path).
    pub kind: Option<String>,
    /// Compact the history first (etcd compaction on the real server), then send.
    #[serde(default)]
    pub compact: bool,
    /// Also restart the API server after compacting (the real one's watch cache starts
    /// over from etcd; the sim keeps serving).
    #[serde(default)]
    pub restart: bool,
}

fn get() -> String {
    "GET".into()
}

/// A condition on an answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Until {
    /// The status code.
    pub status: Option<u16>,
    /// A JSON pointer into the body ...
    pub pointer: Option<String>,
    /// ... and the value it must have (absent: must be missing).
    pub equals: Option<Value>,
}

/// How much of a watch stream to read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// Stop after this many events.
    pub events: usize,
    /// Or after this long.
    #[serde(default = "within")]
    pub within_ms: u64,
}

fn within() -> u64 {
    3_000
}

/// What one server answered.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// HTTP status.
    pub status: u16,
    /// The media type of the answer, with its parameters (`as=Table;g=...`).
    pub content_type: String,
    /// `Warning` headers.
    pub warnings: Vec<String>,
    /// The body as JSON (a string when it is not JSON; watch streams: the list of events).
    pub body: Value,
}

/// Counts for the report.
pub fn stats(steps: &[Step]) -> String {
    // Kinds a step reaches with a success (the unknown-resource cases do not count).
    let kinds: std::collections::BTreeSet<String> = steps
        .iter()
        .filter(|s| s.status.is_some_and(|c| c < 300))
        .filter_map(kind_of)
        .collect();
    let errors = steps
        .iter()
        .filter(|s| s.status.is_some_and(|c| c >= 400))
        .count();
    format!(
        "{} requests, {} kinds ({}), {} error cases",
        steps.len(),
        kinds.len(),
        kinds.into_iter().collect::<Vec<_>>().join(" "),
        errors
    )
}

fn kind_of(step: &Step) -> Option<String> {
    if let Some(k) = &step.kind {
        return Some(k.clone());
    }
    let path = step.path.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", g, _, rest @ ..] => (*g, rest),
        _ => return None,
    };
    let resource = match rest {
        ["namespaces", _, r, ..] => *r,
        [r, ..] => *r,
        [] => return None,
    };
    Some(if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    })
}

fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// Runs one step against one server.
pub async fn run(step: &Step, side: &mut super::Side<'_>) -> anyhow::Result<Exchange> {
    if step.compact {
        match side.world {
            super::World::Sim(s) => {
                s.compact();
            }
            super::World::Real(r) => {
                r.compact_etcd().await?;
                if step.restart {
                    r.restart_apiserver().await?;
                }
            }
        }
    }
    let start = Instant::now();
    loop {
        let ex = once(step, side).await?;
        let done = match &step.until {
            None => true,
            Some(u) => {
                u.status.is_none_or(|s| s == ex.status)
                    && u.pointer
                        .as_ref()
                        .is_none_or(|p| ex.body.pointer(p) == u.equals.as_ref())
            }
        };
        if done {
            for (var, ptr) in &step.save {
                let v = ex.body.pointer(ptr).ok_or_else(|| {
                    anyhow::anyhow!("{}: nothing at {ptr} to save as {var}", side.name)
                })?;
                let text = v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string());
                side.vars.insert(var.clone(), text);
            }
            return Ok(ex);
        }
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "{}: the condition {:?} did not hold after 60 s; last answer {} {}",
                side.name,
                step.until,
                ex.status,
                ex.body
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn once(step: &Step, side: &super::Side<'_>) -> anyhow::Result<Exchange> {
    let path = expand(&step.path, &side.vars);
    let mut req = http::Request::builder()
        .method(step.method.as_str())
        .uri(path);
    let mut has_ct = false;
    for (k, v) in &step.headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.header(k.as_str(), expand(v, &side.vars));
    }
    let body: Vec<u8> = match (&step.body, &step.raw) {
        (Some(b), _) => {
            if !has_ct {
                req = req.header("Content-Type", "application/json");
            }
            let json: Value = serde_json::to_value(b)?;
            expand(&serde_json::to_string(&json)?, &side.vars).into_bytes()
        }
        (None, Some(raw)) => expand(raw, &side.vars).into_bytes(),
        (None, None) => Vec::new(),
    };
    let resp = side
        .client
        .send(req.body(kube::client::Body::from(body))?)
        .await?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|h| h.to_str().ok().map(String::from))
        .collect();
    let mut body = resp.into_body();
    let bytes = match &step.watch {
        None => body.collect().await?.to_bytes().to_vec(),
        Some(w) => {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(w.within_ms);
            let mut buf = Vec::new();
            loop {
                if buf.iter().filter(|b| **b == b'\n').count() >= w.events {
                    break;
                }
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            buf.extend_from_slice(&data);
                        }
                    }
                    Ok(Some(Err(e))) => return Err(e.into()),
                    Ok(None) | Err(_) => break,
                }
            }
            buf
        }
    };
    let body = if let Some(w) = step.watch.as_ref().filter(|_| (200..300).contains(&status)) {
        Value::Array(
            bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .take(w.events)
                .map(|l| {
                    serde_json::from_slice(l)
                        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(l).into()))
                })
                .collect(),
        )
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(Exchange {
        status,
        content_type: content_type.replace(' ', ""),
        warnings,
        body,
    })
}
