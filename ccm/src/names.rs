//! The names the controllers and the node agent share: the finalizer, Portway's
//! annotations, and the well-known node labels and taints. One module that imports
//! nothing, so that the service controller, the node controller and the speaker depend on
//! it and never on each other.

/// The hostport class (k3s ServiceLB behaviour), the default.
pub const HOSTPORT: &str = "portway.dev/hostport";
/// The l2 class.
pub const L2: &str = "portway.dev/l2";
/// The bgp class.
pub const BGP: &str = "portway.dev/bgp";
/// The f5 class.
pub const F5: &str = "portway.dev/f5";
/// The classes Portway serves, the default first; `defaultClass` must name one of them,
/// and a Service moving to a class outside this list is cleaned up.
pub const CLASSES: [&str; 4] = [HOSTPORT, L2, BGP, F5];

/// The classes that draw virtual IPs from address pools (a pool change concerns them).
pub const POOL_CLASSES: [&str; 3] = [L2, BGP, F5];

/// The upstream CCM's finalizer; Portway uses the same so that a switch from another CCM
/// keeps working.
pub const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

/// Which node announces an l2 address, written by the speaker that owns it.
pub const ANNOUNCED_BY: &str = "portway.dev/announced-by";

/// The class that last served the Service, written with the finalizer: after a restart
/// it tells whose resources and addresses the Service holds, so a class changed while no
/// controller ran is released from the old class instead of adopted by the new one.
pub const SERVED_CLASS: &str = "portway.dev/served-class";

/// Annotations Portway writes on Services itself: feedback, never input, so a change of
/// one never re-triggers a provider.
pub const OWN_ANNOTATIONS: [&str; 2] = [ANNOUNCED_BY, SERVED_CLASS];

/// A node label that keeps a node out of every load balancer when it parses as true (or
/// does not parse), per the upstream controller.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The cluster autoscaler's taint on nodes it is about to remove.
pub const AUTOSCALER_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// kubelet's taint on nodes no cloud controller has initialized yet.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// The `source.component` of the service controller's events, as upstream records them;
/// `kubectl get events --field-selector source=service-controller` finds them.
pub const SERVICE_CONTROLLER: &str = "service-controller";
/// The node agents' event source; their events name the node as host, which is how
/// `portway explain` tells one node's word from another's.
pub const SPEAKER: &str = "portway-speaker";

/// The `source.component` of the cloud node controller's events, as upstream.
pub const NODE_CONTROLLER: &str = "cloud-node-controller";

/// Go's `strconv.ParseBool`, which upstream uses for [`EXCLUDE_LABEL`]: `Some(true)` for
/// `1 t T TRUE true True`, `Some(false)` for `0 f F FALSE false False`, `None` otherwise.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    if portway_provider::GO_BOOL_TRUE.contains(&value) {
        Some(true)
    } else if portway_provider::GO_BOOL_FALSE.contains(&value) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::parse_go_bool;

    #[test]
    fn go_parse_bool_accepts_exactly_its_spellings() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for other in ["", "yes", "no", "fAlSe", " false", "false ", "tRUE"] {
            assert_eq!(parse_go_bool(other), None, "{other:?}");
        }
    }
}
