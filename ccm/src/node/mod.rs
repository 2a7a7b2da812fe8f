//! The cloud node controller: initializes nodes kubelet tainted as
//! uninitialized, and keeps node addresses current.
//!
//! Watched: Nodes. Derived: a [`plan::NodePlan`] per node (pure). Written: the
//! whole `status.addresses` list with a merge patch (never a strategic merge
//! by `type`, which would collapse dual-stack addresses), then one guarded
//! JSON patch for providerID, labels and the taint removal. Initialized nodes
//! are revisited every `--node-status-update-frequency` and written only when
//! their addresses differ. Nodes are never deleted: on bare metal the
//! "instance" always exists, so the upstream shutdown/lifecycle handling does
//! not apply.

pub mod plan;

use crate::events::{Events, Reason};
use crate::k8s::{
    Action, Api, Controller, Node, Patch, PatchParams, Resource, ResourceExt, watcher,
};
use futures::{Future, StreamExt};
use kube::Client;
use plan::{NodePlan, NodeSettings, UNINITIALIZED_TAINT};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

struct Ctx {
    client: Client,
    settings: NodeSettings,
    refresh: Duration,
    events: Events,
}

/// The cloud node controller, ready to run.
pub struct NodeController {
    client: Client,
    settings: NodeSettings,
    refresh: Duration,
    workers: u16,
}

impl NodeController {
    /// A controller with the given settings and address refresh period.
    pub fn new(client: Client, settings: NodeSettings, refresh: Duration) -> Self {
        Self {
            client,
            settings,
            refresh,
            workers: 1,
        }
    }

    /// Nodes handled at once (`--concurrent-node-syncs`).
    pub fn workers(mut self, n: u16) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
        let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "portway".into());
        let ctx = Arc::new(Ctx {
            events: Events::new(
                self.client.clone(),
                crate::names::NODE_CONTROLLER,
                &instance,
            ),
            client: self.client.clone(),
            settings: self.settings,
            refresh: self.refresh,
        });
        Controller::new(Api::<Node>::all(self.client), watcher::Config::default())
            .with_config(kube::runtime::controller::Config::default().concurrency(self.workers))
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()))
            .await;
        // What the last reconciles said is written before the process goes.
        ctx.events.flush(std::time::Duration::from_secs(5)).await;
    }
}

/// A failed node write, retried after a short delay.
#[derive(Debug, thiserror::Error)]
#[error("node update failed: {0}")]
struct Error(#[from] kube::Error);

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.name_any();
    let plan = match plan::plan(&node, &ctx.settings) {
        Ok(p) => p,
        Err(e) => {
            warn!(node = %name, %e, "cannot initialize node");
            ctx.events
                .publish(
                    &node.object_ref(&()),
                    Reason::NodeInitializationFailed,
                    &e.to_string(),
                )
                .await;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let initializing = plan.needs_spec_write();
    // Addresses go first, so that whoever sees the taint gone (the scheduler,
    // a test, a user) also sees the addresses the node will keep. The spec
    // patch is then guarded by the resourceVersion the status write returned.
    let mut current = node;
    if let Some((from, to)) = &plan.renumbered {
        let note = format!(
            "kubelet's provided node IP changed: InternalIP {} -> {} (annotation {})",
            from.join(","),
            to.join(","),
            plan::PROVIDED_NODE_IP
        );
        info!(node = %name, %note, "node renumbered");
        ctx.events
            .publish(
                &current.object_ref(&()),
                Reason::NodeAddressesChanged,
                &note,
            )
            .await;
    }
    if let Some(addresses) = &plan.addresses {
        let patch = json!({ "status": { "addresses": addresses } });
        current = Arc::new(
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?,
        );
    }
    if initializing {
        let patch = spec_patch(&current, &plan);
        let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
        api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await?;
        info!(node = %name, "node initialized");
        ctx.events
            .publish(
                &current.object_ref(&()),
                Reason::Synced,
                "Node synced successfully",
            )
            .await;
    }
    Ok(Action::requeue(ctx.refresh))
}

fn error_policy(_node: Arc<Node>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(%e, "node reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// One JSON patch for providerID, labels and taint removal, guarded by the
/// resourceVersion it was computed from.
fn spec_patch(node: &Node, plan: &NodePlan) -> serde_json::Value {
    let mut ops = vec![json!({
        "op": "test", "path": "/metadata/resourceVersion",
        "value": node.metadata.resource_version.clone().unwrap_or_default()
    })];
    if let Some(id) = &plan.provider_id {
        ops.push(json!({ "op": "add", "path": "/spec/providerID", "value": id }));
    }
    if !plan.labels.is_empty() {
        if node.metadata.labels.is_none() {
            ops.push(json!({ "op": "add", "path": "/metadata/labels", "value": {} }));
        }
        for (k, v) in &plan.labels {
            let escaped = k.replace('~', "~0").replace('/', "~1");
            ops.push(
                json!({ "op": "add", "path": format!("/metadata/labels/{escaped}"), "value": v }),
            );
        }
    }
    if plan.remove_taint {
        let kept: Vec<_> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key != UNINITIALIZED_TAINT)
            .collect();
        ops.push(json!({ "op": "replace", "path": "/spec/taints", "value": kept }));
    }
    serde_json::Value::Array(ops)
}
