//! The Service's `status.loadBalancer`: what to publish and whether it changed.
//!
//! The API server defaults `ipMode` to `VIP` on every entry with an IP, so the
//! desired status always spells `ipMode` out; otherwise the comparison with
//! the stored status would differ on every sync and write every time.

use crate::k8s::{LoadBalancerIngress, Service};
use portway_provider::LbStatus;

/// The ingress list to publish for a provider's status.
pub fn desired_ingress(status: &LbStatus) -> Vec<LoadBalancerIngress> {
    status
        .ingress
        .iter()
        .map(|i| LoadBalancerIngress {
            ip: Some(i.ip.to_string()),
            ip_mode: Some(if i.proxy { "Proxy" } else { "VIP" }.to_string()),
            ..Default::default()
        })
        .collect()
}

/// The ingress list the Service has now.
pub fn current_ingress(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

/// Semantic equality of two ingress lists, treating a missing `ipMode` on an
/// entry with an IP as the API server's default `VIP`.
pub fn ingress_equal(a: &[LoadBalancerIngress], b: &[LoadBalancerIngress]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| norm(x) == norm(y))
}

fn norm(i: &LoadBalancerIngress) -> LoadBalancerIngress {
    let mut i = i.clone();
    if i.ip.is_some() && i.ip_mode.is_none() {
        i.ip_mode = Some("VIP".into());
    }
    if i.ports.as_ref().is_some_and(|p| p.is_empty()) {
        i.ports = None;
    }
    i
}

/// A digest of an ingress list that two [`ingress_equal`] lists share: what the controller
/// remembers of the status it last decided on, in eight bytes a Service.
pub fn ingress_digest(list: &[LoadBalancerIngress]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    list.len().hash(&mut h);
    // Field by field (the API type has no `Hash`): every reconcile of a settled Service
    // takes this digest of its cached status.
    for i in list.iter().map(norm) {
        (&i.ip, &i.hostname, &i.ip_mode).hash(&mut h);
        for p in i.ports.iter().flatten() {
            (p.port, &p.protocol, &p.error).hash(&mut h);
        }
    }
    h.finish()
}

/// Whether `desired` must be written, given the cached status and the digest of the status
/// this controller wrote last (see [`super::context::SvcState::published`]): when it
/// differs from the cache, or when the last write was another status, which a cache that
/// has not caught up with it hides (the write then carries the stale copy's
/// resourceVersion and is refused until the cache catches up).
pub fn needs_write(
    desired: &[LoadBalancerIngress],
    cached: &[LoadBalancerIngress],
    last_written: Option<u64>,
) -> bool {
    !ingress_equal(desired, cached) || last_written.is_some_and(|d| d != ingress_digest(desired))
}

/// A JSON merge patch for the status subresource that replaces the ingress
/// list (an atomic list) as a whole.
pub fn ingress_patch(ingress: &[LoadBalancerIngress]) -> serde_json::Value {
    serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_provider::LbIngress;

    #[test]
    fn equal_lists_share_a_digest_and_different_ones_do_not() {
        let ip = |a: &str, mode: Option<&str>| LoadBalancerIngress {
            ip: Some(a.into()),
            ip_mode: mode.map(String::from),
            ..Default::default()
        };
        let a = [ip("10.0.0.2", None)];
        let b = [ip("10.0.0.2", Some("VIP"))];
        assert!(ingress_equal(&a, &b));
        assert_eq!(ingress_digest(&a), ingress_digest(&b));
        assert_ne!(ingress_digest(&a), ingress_digest(&[]));
        assert_ne!(
            ingress_digest(&a),
            ingress_digest(&[ip("10.0.0.2", None), ip("10.0.0.3", None)])
        );
    }

    /// The race the real control plane showed (hostport, a DaemonSet rolling its pods): an
    /// ensure decided the status the cache still showed, while the server already held
    /// this controller's newer write; "already so" left the newer status for good.
    #[test]
    fn a_status_the_stale_cache_shows_is_written_when_the_last_write_was_another() {
        let ip = |a: &str| LoadBalancerIngress {
            ip: Some(a.into()),
            ..Default::default()
        };
        let (older, newer) = ([ip("10.0.0.1")], [ip("10.0.0.1"), ip("10.0.0.2")]);
        assert!(needs_write(&older, &older, Some(ingress_digest(&newer))));
        assert!(!needs_write(&older, &older, Some(ingress_digest(&older))));
        assert!(
            !needs_write(&older, &older, None),
            "after a start the cache is the truth"
        );
        assert!(needs_write(&newer, &older, Some(ingress_digest(&newer))));
    }

    #[test]
    fn missing_ip_mode_equals_vip() {
        let desired = desired_ingress(&LbStatus::vips(["10.0.0.1".parse().expect("ip")]));
        let stored = vec![LoadBalancerIngress {
            ip: Some("10.0.0.1".into()),
            ..Default::default()
        }];
        assert!(ingress_equal(&desired, &stored));
        assert_eq!(desired[0].ip_mode.as_deref(), Some("VIP"));
    }

    #[test]
    fn proxy_mode_and_order_matter() {
        let a = desired_ingress(&LbStatus {
            ingress: vec![LbIngress {
                ip: "10.0.0.1".parse().expect("ip"),
                proxy: true,
            }],
            ..Default::default()
        });
        let b = desired_ingress(&LbStatus::vips(["10.0.0.1".parse().expect("ip")]));
        assert!(!ingress_equal(&a, &b));
        let x = desired_ingress(&LbStatus::vips([
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ]));
        let y = desired_ingress(&LbStatus::vips([
            "10.0.0.2".parse().expect("ip"),
            "10.0.0.1".parse().expect("ip"),
        ]));
        assert!(!ingress_equal(&x, &y));
        assert!(ingress_equal(&x, &x));
    }
}
