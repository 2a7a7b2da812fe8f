//! Watch streams: replay from a resourceVersion (or the current state), then live changes,
//! with selector transitions as the watch cache turns them into ADDED/DELETED, bookmarks,
//! the initial-events bookmark of `sendInitialEvents`, Tables when asked for, and `410` for
//! a resourceVersion older than the history.

use crate::error::ApiError;
use crate::kinds::ResourceKind;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{App, Target, include_object};
use crate::store::{Change, EventType, Store};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Whether a change is visible to a watcher, and as what (selector transitions become
/// ADDED/DELETED like the real watch cache does).
fn visible(
    c: &Change,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<EventType> {
    if let Some(ns) = ns
        && c.namespace != ns
    {
        return None;
    }
    let now = labels.matches(&c.object) && fields.matches(&c.object);
    match c.kind {
        EventType::Added | EventType::Deleted => now.then_some(c.kind),
        EventType::Modified => {
            let before = c
                .previous
                .as_ref()
                .is_some_and(|p| labels.matches(p) && fields.matches(p));
            match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        }
    }
}

/// The object a watcher gets for a change seen as `ty`: a selector transition to DELETED
/// carries the object as it last matched, at the change's resourceVersion (the watch
/// cache's `convertToWatchEvent`).
/// [`event_object_plain`], as a one-row Table when the watch asked for tables.
fn event_object_as(
    store: &Store,
    kind: &ResourceKind,
    c: &Change,
    ty: EventType,
    table: Option<&str>,
) -> Value {
    let o = event_object_plain(store, kind, c, ty);
    match table {
        Some(include) => {
            let rv = o
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            crate::tables::table(kind, &[o], json!({"resourceVersion": rv}), include)
        }
        None => o,
    }
}

fn event_object_plain(store: &Store, kind: &ResourceKind, c: &Change, ty: EventType) -> Value {
    match (&c.previous, ty, c.kind) {
        (Some(prev), EventType::Deleted, EventType::Modified) => {
            let mut o = store.view(kind, prev);
            o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
            o
        }
        _ => store.view(kind, &c.object),
    }
}

fn line(ty: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub(crate) fn watch(
    app: &App,
    t: &Target<'_>,
    q: &HashMap<String, String>,
    labels: LabelSelector,
    fields: FieldSelector,
    as_table: bool,
) -> Result<Response, ApiError> {
    let include = include_object(q).to_string();
    let from = q
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0")
        .map(|r| {
            r.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))
        })
        .transpose()?;
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    // sendInitialEvents: the current state as ADDED, then (with bookmarks) a bookmark
    // marking the end of the initial events.
    let initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let from = if initial { None } else { from };
    let kind = t.kind.clone();
    let ns = t.namespace.map(String::from);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let registered = match from {
        Some(rv) if app.faults.take_expired_watch() => {
            Err(ApiError::gone(rv, app.store.resource_version()))
        }
        _ => app.store.watch(&kind, from),
    };
    let store = app.store.clone();
    let mut drops = app.faults.drops();
    drops.mark_unchanged();
    let every = app.bookmark_every;
    let table = as_table.then_some(include);
    tokio::spawn(async move {
        let (replay, mut live, start_rv) = match registered {
            Ok(w) => (w.replay, w.live, w.rv),
            Err(e) => {
                let _ = tx.send(Ok(line("ERROR", &e.to_status()))).await;
                return;
            }
        };
        let mut last = start_rv;
        for c in replay {
            last = last.max(c.rv);
            if let Some(ty) = visible(&c, ns.as_deref(), &labels, &fields)
                && tx
                    .send(Ok(line(
                        ty.as_str(),
                        &event_object_as(&store, &kind, &c, ty, table.as_deref()),
                    )))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if initial && bookmarks {
            let bm = json!({"kind": kind.kind, "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": last.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(Ok(line("BOOKMARK", &bm))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = drops.changed() => break,
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"kind": kind.kind, "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(Ok(line("BOOKMARK", &bm))).await.is_err() {
                        return;
                    }
                }
                msg = live.recv() => match msg {
                    Ok(c) => {
                        if c.rv <= last || c.storage != kind.storage {
                            if c.rv > last { last = c.rv; }
                            continue;
                        }
                        last = c.rv;
                        if let Some(ty) = visible(&c, ns.as_deref(), &labels, &fields)
                            && tx.send(Ok(line(ty.as_str(), &event_object_as(&store, &kind, &c, ty, table.as_deref())))).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher too slow for the broadcast buffer is cut off; it resumes from
                    // its last resourceVersion like after any dropped connection.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let media = if as_table {
        crate::tables::TABLE_MEDIA
    } else {
        "application/json"
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, media)],
        Body::from_stream(stream),
    )
        .into_response())
}
