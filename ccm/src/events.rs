//! Events on Services (events.k8s.io/v1), aggregated into series.
//!
//! kube-runtime's `Recorder` aggregates by reason alone, so a second, different
//! error with the same reason would show the first message with a higher
//! count. Users read these events to learn what to fix, so Portway keys the
//! series by the message too: the same message again bumps `series.count`
//! with one patch; a new message is a new event.

use crate::k8s::{ObjectReference, Patch, PatchParams, PostParams};
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::warn;

/// Identical events within this window are one series.
const SERIES_WINDOW: Duration = Duration::from_secs(600);
/// The cache is pruned past this many series.
const MAX_SERIES: usize = 20_000;

/// Normal or Warning, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Progress a user may like to see.
    Normal,
    /// Something a user must look at.
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    kind: Kind,
    reason: String,
    note: String,
}

struct Series {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Publishes events for one reporting controller.
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<HashMap<Key, Series>>,
}

impl Events {
    /// A publisher reporting as `controller` (e.g. `portway`) from `instance`
    /// (the pod or host name).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            series: Mutex::default(),
        }
    }

    /// Records an event on `regarding`; failures are logged, never returned:
    /// an event is feedback, not part of the reconcile's correctness.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        kind: Kind,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        if let Err(e) = self
            .try_publish(regarding, kind, reason, action, note)
            .await
        {
            warn!(%e, reason, "could not record event");
        }
    }

    async fn try_publish(
        &self,
        regarding: &ObjectReference,
        kind: Kind,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            kind,
            reason: reason.to_string(),
            note: note.to_string(),
        };
        let now = Timestamp::now();
        let mut series = self.series.lock().await;
        if series.len() > MAX_SERIES {
            series.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
        }
        if let Some(s) = series
            .get_mut(&key)
            .filter(|s| s.last.elapsed() < SERIES_WINDOW)
        {
            s.count += 1;
            s.last = Instant::now();
            let patch = serde_json::json!({
                "series": EventSeries { count: s.count, last_observed_time: MicroTime(now) }
            });
            let (ns, name) = (s.namespace.clone(), s.name.clone());
            drop(series);
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &ns);
            return api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ());
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        series.insert(
            key,
            Series {
                namespace: namespace.clone(),
                name: name.clone(),
                count: 1,
                last: Instant::now(),
            },
        );
        drop(series);
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                ..Default::default()
            },
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(truncate_note(note)),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .to_string(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

/// The server refuses a note over 1024 bytes (bytes, not characters): cut at the
/// last character boundary that fits.
fn truncate_note(note: &str) -> String {
    // `str::floor_char_boundary` is newer than the crate's MSRV (1.89).
    let mut end = note.len().min(1024);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_string()
}

#[cfg(test)]
mod note_tests {
    #[test]
    fn a_long_note_is_cut_to_1024_bytes_on_a_character_boundary() {
        let long = "é".repeat(600); // 1200 bytes
        let cut = super::truncate_note(&long);
        assert!(cut.len() <= 1024 && cut.len() >= 1023, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(super::truncate_note("short"), "short");
    }
}
