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
