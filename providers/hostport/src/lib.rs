//! The `portway.dev/hostport` provider: k3s ServiceLB (Klipper) behaviour.
//!
//! Each LoadBalancer Service of this class gets a `svclb-*` DaemonSet in a fixed namespace
//! whose pods bind the Service's ports on the nodes with hostPort and forward them to the
//! Service (klipper-lb); the published addresses are those of the nodes running a Ready pod.
//! It reproduces k3s's objects name for name so a k3s user can switch without noticing, and
//! fixes ServiceLB's known bugs: the node selector is recomputed when the `enablelb` label
//! comes or goes (k3s#14625), other classes' Services are never touched, addresses are
//! ordered numerically, port clashes name the Service that holds the port.
#![forbid(unsafe_code)]

mod api;
mod config;
mod daemonset;
mod provider;
mod status;

pub use api::HostportApi;
pub use config::{ConfigIssue, HostportConfig};
pub use daemonset::{
    ENABLELB, LBPOOL, NODESELECTOR, PRIORITY_ANNOTATION, SVCNAME, SVCNAMESPACE,
    TOLERATIONS_ANNOTATION, build_daemonset, daemonset_name,
};
pub use provider::HostportProvider;
pub use status::{ClashingPod, PodView, compute_status, local_nodes};

/// The class this provider serves.
pub const CLASS: &str = "portway.dev/hostport";
