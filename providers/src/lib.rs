//! The contract between Portway's service controller and its load-balancer providers.
//!
//! The controller watches Kubernetes; providers do not. For every Service of
//! `type: LoadBalancer` whose class a provider serves, the controller builds one
//! [`LbService`] view and the list of eligible [`LbNode`]s, and calls the
//! provider through [`LoadBalancerProvider`]. The provider answers with an
//! [`LbStatus`] to publish, or a [`ProviderError`] that says whether retrying
//! can help. This keeps providers free of Kubernetes types (this crate depends on
//! neither `kube` nor `k8s-openapi`) and lets the controller own retries,
//! events, finalizers and status writes in one place.
//!
//! ```text
//!   Service, Nodes --(controller builds views)--> LbService, [LbNode]
//!        ^                                              |
//!        | status patch, events                         v
//!   controller <---- LbStatus | ProviderError ---- provider.ensure()
//! ```
#![forbid(unsafe_code)]

pub mod diff;
pub mod ipam;
pub mod mock;
mod service;
pub mod testkit;

/// The label that ties an EndpointSlice to its Service (set by the EndpointSlice
/// controller): every provider and the speaker find a Service's endpoints by it.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Set to a true value by a user who lets Portway move the Service to another address when
/// a speaker finds another host using its address (issue 24): off by default, because the
/// Service's clients, DNS records and firewall rules know the address.
pub const REALLOCATE_ANNOTATION: &str = "portway.dev/reallocate-on-conflict";

/// Written by the speaker on a Service that set [`REALLOCATE_ANNOTATION`] when another host
/// uses one of its addresses: `"<ip> <who>"` (who: MAC, node, interface). The controller
/// then gives the Service a new address and never hands that one out again.
pub const CONFLICT_ANNOTATION: &str = "portway.dev/address-conflict";

/// The spellings Go's `strconv.ParseBool` reads as true and as false. Upstream parses the
/// node exclusion label with it; the controller's node set and the svclb pods' node
/// affinity must agree on them, so both read them here.
pub const GO_BOOL_TRUE: [&str; 6] = ["1", "t", "T", "TRUE", "true", "True"];
/// See [`GO_BOOL_TRUE`].
pub const GO_BOOL_FALSE: [&str; 6] = ["0", "f", "F", "FALSE", "false", "False"];

pub use service::{
    IpFamily, IpFamilyPolicy, LbEndpoint, LbEndpointPort, LbIngress, LbNode, LbPort, LbService,
    LbStatus, Protocol, ServiceKey, TrafficPolicy,
};

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::time::Duration;

/// A load-balancer implementation for one `spec.loadBalancerClass`.
///
/// Modelled on the upstream `cloudprovider.LoadBalancer` interface. Every
/// method must be idempotent: the controller calls `ensure` again after every
/// restart, on every relevant Service change and after every retryable error.
#[async_trait]
pub trait LoadBalancerProvider: Send + Sync + 'static {
    /// The loadBalancerClass this provider serves, e.g. `portway.dev/l2`; the
    /// controller's registry dispatches on it.
    fn class(&self) -> &str;

    /// Called once, before the first `ensure`, with every Service of this class
    /// that already exists. Providers that hold state derived from the cluster
    /// (the address allocator) rebuild it from the published statuses here, so
    /// that a restart never hands out an address twice. Problems found (two
    /// Services claiming one address) are returned per Service for the
    /// controller to report as Warning events.
    async fn adopt(&self, existing: &[LbService]) -> Vec<(ServiceKey, ProviderError)> {
        let _ = existing;
        Vec::new()
    }

    /// Which Services' `ensure` and `update` need their endpoints
    /// ([`LbService::endpoints`]); the controller fills them from its one EndpointSlice
    /// cache (watched only if some provider asks) and calls `ensure` again, quietly, when
    /// they change.
    fn endpoints_use(&self) -> EndpointsUse {
        EndpointsUse::Never
    }

    /// Whether what the provider makes depends on the eligible nodes' addresses or labels
    /// (hostport publishes the addresses and selects nodes by label): the controller then
    /// calls `ensure` again, quietly, when they change, which is not a change of the node
    /// set. Readiness is not among them (KEP-3458).
    fn follows_node_details(&self) -> bool {
        false
    }

    /// Create or converge the load balancer and return the status to publish.
    async fn ensure(&self, svc: &LbService, nodes: &[LbNode]) -> Result<LbStatus, ProviderError>;

    /// The eligible node set changed: converge backend members only.
    async fn update(&self, svc: &LbService, nodes: &[LbNode]) -> Result<(), ProviderError>;

    /// Remove everything this provider made for the Service. Succeeds when
    /// nothing exists.
    async fn ensure_deleted(&self, svc: &LbService) -> Result<(), ProviderError>;

    /// The controller is stopping (after its last reconcile): release what the provider
    /// holds outside the cluster, such as an appliance session token, which counts
    /// against a per-user limit until it expires. Best effort; it cannot fail.
    async fn shutdown(&self) {}

    /// Services to reconcile again when something the provider watches changes
    /// (svclb pods becoming ready, an appliance drifting). Called once at start.
    fn triggers(&self) -> Option<BoxStream<'static, ServiceKey>> {
        None
    }
}

/// Which Services a provider needs the endpoints of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EndpointsUse {
    /// None (the address providers: which node serves is the speakers' business).
    #[default]
    Never,
    /// Those with `externalTrafficPolicy: Local` (only nodes with a ready local endpoint
    /// may carry their traffic).
    LocalPolicy,
    /// Every one (pool members that are the pods themselves).
    Always,
}

impl EndpointsUse {
    /// Whether a Service with this traffic policy needs its endpoints.
    pub fn applies_to(self, policy: TrafficPolicy) -> bool {
        match self {
            Self::Never => false,
            Self::LocalPolicy => policy == TrafficPolicy::Local,
            Self::Always => true,
        }
    }
}

/// Why a provider call failed, and so what the controller does next.
///
/// `Transient` errors are retried with per-Service exponential backoff; every
/// other kind needs a user's fix: the controller records one Warning event
/// naming the field and waits for the Service or the configuration to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// Worth retrying as is: an API or appliance was unreachable, busy or
    /// answered 5xx. `retry_after` asks for a fixed delay instead of backoff.
    #[error("transient failure: {message}")]
    Transient {
        /// What failed, for logs and the event message.
        message: String,
        /// A fixed delay requested by the provider (e.g. still provisioning).
        retry_after: Option<Duration>,
    },
    /// The Service (or an annotation on it) asks for something impossible.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or annotation to fix, e.g. `metadata.annotations[portway.dev/address-pool]`.
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// No address is left in the pools this Service may use.
    #[error("address pool {pool} exhausted: {reason}")]
    Exhausted {
        /// The pool (or pools, comma-joined) that was tried.
        pool: String,
        /// Which family ran out, or why no pool applied.
        reason: String,
    },
    /// The Service keeps an address that lies in no configured pool (a pool was removed
    /// or narrowed): it is not moved, and the user decides.
    #[error(
        "address {ip} is kept but lies in no configured pool; add it back to a pool, or request \
         another address to move the Service"
    )]
    Orphaned {
        /// The address kept.
        ip: std::net::IpAddr,
    },
    /// What the Service asks for is held by another Service that may not share it.
    #[error("{what} is held by {holder}")]
    Conflict {
        /// The contested resource, e.g. `address 192.168.1.240` or `port TCP/80`.
        what: String,
        /// Who holds it, e.g. `default/web`.
        holder: String,
    },
}

impl ProviderError {
    /// Shorthand for a transient error with no fixed retry delay.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    /// Shorthand for a needs-a-fix error on one field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether retrying without any change can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// A stable label for metrics and the Warning event's reason suffix.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transient { .. } => "transient",
            Self::Invalid { .. } => "invalid",
            Self::Exhausted { .. } => "exhausted",
            Self::Conflict { .. } => "conflict",
            Self::Orphaned { .. } => "orphaned",
        }
    }
}

/// One problem in a provider's configuration section, with the key path to fix
/// (`f5.partition`, `hostport.image`), so `check-config` and start-up report every problem
/// in the same shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigIssue {
    /// Key path such as `f5.partition`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Deserializes one section of the configuration file, naming the failing key by its full
/// path (`prefix` is where the section sits, e.g. `f5` or `pools[2]`), so every section
/// reports a type error the same way.
pub fn parse_section<'de, T, D>(prefix: &str, value: D) -> Result<T, ConfigIssue>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        ConfigIssue::new(path, e.inner().to_string())
    })
}
