//! The one place Kubernetes types are imported from, so the rest of the crate
//! names them briefly and a k8s-openapi upgrade touches one file.

pub use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Namespace, Node, NodeAddress, ObjectReference,
    Service, ServicePort, ServiceSpec, ServiceStatus, Taint,
};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
pub use kube::runtime::controller::{Action, Controller};
pub use kube::runtime::events::{Event, EventType, Recorder, Reporter};
pub use kube::runtime::reflector::{ObjectRef, Store};
pub use kube::runtime::watcher;
pub use kube::{Client, Resource, ResourceExt};

/// Waits until a reflector store has its first full list.
///
/// `Store::wait_until_ready` in kube-runtime 5.0 wakes only the last task that polled it (its
/// `DelayedInit` keeps one waker), and the `Controller` itself waits on the same store, so a
/// second waiter can sleep forever. Re-polling on a short timer makes the wait robust; once
/// the store is ready each poll returns at once.
pub async fn wait_until_ready<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(50),
            store.wait_until_ready(),
        )
        .await
        {
            Ok(_) => return,
            Err(_) => continue,
        }
    }
}
