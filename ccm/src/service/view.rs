//! Builds the provider views (`LbService`, `LbNode`) from Kubernetes objects.
//!
//! All annotation parsing happens here, once, so every provider sees the same
//! resolved values and a bad annotation becomes one needs-a-fix error naming
//! the annotation, before any provider is called. MetalLB and k3s aliases are
//! resolved here too (DESIGN §3).

use crate::k8s::{Node, Service};
use ipnet::IpNet;
use portway_provider::ipam::{IPS_ANNOTATIONS, POOL_ANNOTATIONS, SHARING_ANNOTATIONS};
use portway_provider::{
    IpFamily, IpFamilyPolicy, LbNode, LbPort, LbService, Protocol, ProviderError, ServiceKey,
    TrafficPolicy,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The legacy annotation form of `spec.loadBalancerSourceRanges`.
pub const SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// The first of `keys` present on the Service, with the key it was found under.
fn annotation<'a>(
    annotations: &'a BTreeMap<String, String>,
    keys: &[&'static str],
) -> Option<(&'static str, &'a str)> {
    keys.iter()
        .find_map(|k| annotations.get(*k).map(|v| (*k, v.trim())))
        .filter(|(_, v)| !v.is_empty())
}

/// The addresses published in `status.loadBalancer.ingress` (entries without a parsable
/// `ip` skipped): what the Service holds now, for the allocator and the speakers alike.
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// `spec.externalTrafficPolicy`; anything but `Local` is `Cluster`, the API default.
pub fn traffic_policy(svc: &Service) -> TrafficPolicy {
    match svc
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
    {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

/// Builds the provider's view of a Service, or the needs-a-fix error that
/// names the field to correct.
pub fn service_view(
    svc: &Service,
    class: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<LbService, ProviderError> {
    let meta = &svc.metadata;
    let spec = svc.spec.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let key = ServiceKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );

    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                return Err(ProviderError::invalid(
                    format!("spec.ports[{i}].protocol"),
                    format!("{other:?} is not TCP, UDP or SCTP"),
                ));
            }
        };
        let port = u16::try_from(p.port).map_err(|_| {
            ProviderError::invalid(format!("spec.ports[{i}].port"), "must be 1-65535")
        })?;
        ports.push(LbPort {
            name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
        });
    }

    let cluster_ips = spec
        .cluster_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();

    let ip_families: Vec<IpFamily> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        })
        .collect();
    let ip_family_policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
        _ => IpFamilyPolicy::SingleStack,
    };
    let external_traffic_policy = traffic_policy(svc);

    let source_ranges = source_ranges(&spec.load_balancer_source_ranges, &annotations)?;
    let requested_ips = requested_ips(spec.load_balancer_ip.as_deref(), &annotations)?;
    let sharing_key = annotation(&annotations, &SHARING_ANNOTATIONS).map(|(_, v)| v.to_string());
    let pool = annotation(&annotations, &POOL_ANNOTATIONS).map(|(_, v)| v.to_string());

    let current_ips = status_ips(svc);

    Ok(LbService {
        key,
        uid: meta.uid.clone().unwrap_or_default(),
        class: class.to_string(),
        created: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        ports,
        cluster_ips,
        ip_families,
        ip_family_policy,
        external_traffic_policy,
        health_check_node_port: spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok()),
        source_ranges,
        requested_ips,
        sharing_key,
        pool,
        selector: spec.selector.clone().unwrap_or_default(),
        current_ips,
        labels: meta.labels.clone().unwrap_or_default(),
        namespace_labels: namespace_labels.clone(),
        annotations,
        endpoints: Vec::new(),
    })
}

/// A view with only identity and status, for cleanup and adoption when the
/// Service's annotations no longer parse: deletion must never be blocked by
/// a bad annotation. Every annotation [`service_view`] reads is dropped, the
/// MetalLB aliases included, so the view cannot fail and its key is the Service's.
pub fn minimal_view(svc: &Service, class: &str) -> LbService {
    use portway_provider::ipam::{IPS_ANNOTATIONS, POOL_ANNOTATIONS, SHARING_ANNOTATIONS};
    let mut bare = svc.clone();
    if let Some(a) = bare.metadata.annotations.as_mut() {
        a.retain(|k, _| {
            let read = IPS_ANNOTATIONS
                .iter()
                .chain(&POOL_ANNOTATIONS)
                .chain(&SHARING_ANNOTATIONS)
                .chain(&[SOURCE_RANGES]);
            !k.starts_with("portway.dev/") && !read.into_iter().any(|r| r == k)
        });
    }
    if let Some(spec) = bare.spec.as_mut() {
        spec.load_balancer_ip = None;
        spec.load_balancer_source_ranges = None;
        spec.ports = None;
    }
    service_view(&bare, class, &Default::default()).unwrap_or_default()
}

fn source_ranges(
    spec: &Option<Vec<String>>,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<IpNet>, ProviderError> {
    if let Some(ranges) = spec.as_ref().filter(|r| !r.is_empty()) {
        return ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                parse_cidr(r).ok_or_else(|| {
                    ProviderError::invalid(
                        format!("spec.loadBalancerSourceRanges[{i}]"),
                        format!("{r:?} is not a CIDR such as 192.168.0.0/16"),
                    )
                })
            })
            .collect();
    }
    let Some((key, value)) = annotation(annotations, &[SOURCE_RANGES]) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            parse_cidr(r).ok_or_else(|| {
                ProviderError::invalid(
                    annotation_field(key),
                    format!("{r:?} is not a CIDR such as 192.168.0.0/16"),
                )
            })
        })
        .collect()
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn requested_ips(
    spec_ip: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<IpAddr>, ProviderError> {
    let (field, list) = match annotation(annotations, &IPS_ANNOTATIONS) {
        Some((key, value)) => (annotation_field(key), value.to_string()),
        None => match spec_ip.map(str::trim).filter(|s| !s.is_empty()) {
            Some(ip) => ("spec.loadBalancerIP".to_string(), ip.to_string()),
            None => return Ok(Vec::new()),
        },
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| {
            ProviderError::invalid(
                field.clone(),
                format!("{part:?} is not an IP address; write e.g. 192.168.1.240 or 192.168.1.240,fd00::10"),
            )
        })?;
        if ips.iter().any(|x| IpFamily::of(x) == IpFamily::of(&ip)) {
            return Err(ProviderError::invalid(
                field.clone(),
                "at most one address per IP family may be requested",
            ));
        }
        ips.push(ip);
    }
    Ok(ips)
}

/// Builds the provider's view of a node.
pub fn node_view(node: &Node) -> LbNode {
    let mut internal_ips = Vec::new();
    let mut external_ips = Vec::new();
    let status = node.status.as_ref();
    for addr in status
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        let Ok(ip) = addr.address.parse::<IpAddr>() else {
            continue;
        };
        match addr.type_.as_str() {
            "InternalIP" => internal_ips.push(ip),
            "ExternalIP" => external_ips.push(ip),
            _ => {}
        }
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    LbNode {
        name: node.metadata.name.clone().unwrap_or_default(),
        provider_id: node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default(),
        internal_ips,
        external_ips,
        labels: node.metadata.labels.clone().unwrap_or_default(),
        ready,
    }
}

/// The controller's key of a Service (its work queue, its state): namespace and name only.
/// `ObjectRef::from_obj` also copies the resourceVersion and uid in, which are not part of
/// the key (not compared, not hashed); at ten thousand Services those two strings in each
/// key of the state, the queue's sets and the relist list were megabytes of the peak.
pub fn object_key(svc: &Service) -> kube::runtime::reflector::ObjectRef<Service> {
    let name = kube::runtime::reflector::ObjectRef::new(&kube::ResourceExt::name_any(svc));
    match svc.metadata.namespace.as_deref() {
        Some(ns) => name.within(ns),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{ObjectMeta, ServicePort, ServiceSpec};

    fn svc(annotations: &[(&str, &str)], spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn lb() -> ServiceSpec {
        ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ports: Some(vec![ServicePort {
                port: 80,
                node_port: Some(30080),
                ..Default::default()
            }]),
            ip_families: Some(vec!["IPv4".into(), "IPv6".into()]),
            ip_family_policy: Some("PreferDualStack".into()),
            ..Default::default()
        }
    }

    #[test]
    fn plain_service() {
        let v = service_view(&svc(&[], lb()), "portway.dev/l2", &BTreeMap::new()).expect("ok");
        assert_eq!(v.key, ServiceKey::new("default", "web"));
        assert_eq!(v.ports[0].protocol, Protocol::Tcp);
        assert_eq!(v.ports[0].node_port, Some(30080));
        assert_eq!(v.ip_families, [IpFamily::V4, IpFamily::V6]);
        assert_eq!(v.ip_family_policy, IpFamilyPolicy::PreferDualStack);
        assert!(v.requested_ips.is_empty() && v.pool.is_none() && v.sharing_key.is_none());
    }

    #[test]
    fn portway_annotations_win_over_metallb_aliases() {
        let v = service_view(
            &svc(
                &[
                    (POOL_ANNOTATIONS[0], "lan"),
                    (POOL_ANNOTATIONS[1], "old"),
                    (IPS_ANNOTATIONS[1], "10.0.0.5, fd00::5"),
                    (SHARING_ANNOTATIONS[1], "k"),
                ],
                lb(),
            ),
            "c",
            &BTreeMap::new(),
        )
        .expect("ok");
        assert_eq!(v.pool.as_deref(), Some("lan"));
        assert_eq!(v.sharing_key.as_deref(), Some("k"));
        let want: Vec<IpAddr> = vec![
            "10.0.0.5".parse().expect("ip"),
            "fd00::5".parse().expect("ip"),
        ];
        assert_eq!(v.requested_ips, want);
    }

    #[test]
    fn bad_requested_ip_names_the_annotation() {
        let err = service_view(
            &svc(&[(IPS_ANNOTATIONS[0], "10.0.0.300")], lb()),
            "c",
            &BTreeMap::new(),
        )
        .expect_err("bad");
        assert!(
            matches!(&err, ProviderError::Invalid { field, .. } if field == "metadata.annotations[portway.dev/load-balancer-ips]"),
            "{err:?}"
        );
        let err = service_view(
            &svc(&[(IPS_ANNOTATIONS[0], "10.0.0.1,10.0.0.2")], lb()),
            "c",
            &BTreeMap::new(),
        )
        .expect_err("two v4");
        assert!(
            err.to_string().contains("one address per IP family"),
            "{err}"
        );
    }

    #[test]
    fn spec_load_balancer_ip_is_honoured() {
        let mut spec = lb();
        spec.load_balancer_ip = Some("10.1.1.1".into());
        let v = service_view(&svc(&[], spec), "c", &BTreeMap::new()).expect("ok");
        assert_eq!(
            v.requested_ips,
            vec!["10.1.1.1".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn source_ranges_from_spec_then_annotation() {
        let mut spec = lb();
        spec.load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
        let v = service_view(
            &svc(&[(SOURCE_RANGES, "192.168.0.0/16")], spec),
            "c",
            &BTreeMap::new(),
        )
        .expect("ok");
        assert_eq!(
            v.source_ranges,
            vec!["10.0.0.0/8".parse::<IpNet>().expect("net")]
        );
        let v = service_view(
            &svc(&[(SOURCE_RANGES, "192.168.0.0/16, 1.2.3.4")], lb()),
            "c",
            &BTreeMap::new(),
        )
        .expect("ok");
        assert_eq!(v.source_ranges.len(), 2);
        let err = service_view(
            &svc(&[(SOURCE_RANGES, "nope")], lb()),
            "c",
            &BTreeMap::new(),
        )
        .expect_err("bad");
        assert!(err.to_string().contains(SOURCE_RANGES), "{err}");
    }

    #[test]
    fn bad_protocol_names_the_port() {
        let mut spec = lb();
        spec.ports = Some(vec![ServicePort {
            port: 80,
            protocol: Some("ICMP".into()),
            ..Default::default()
        }]);
        let err = service_view(&svc(&[], spec), "c", &BTreeMap::new()).expect_err("bad");
        assert!(
            matches!(&err, ProviderError::Invalid { field, .. } if field == "spec.ports[0].protocol")
        );
    }

    /// A bad value under any spelling of the annotations (MetalLB's `metallb.io/` ones
    /// included) must still give the Service's own key, or cleanup would release nothing.
    #[test]
    fn minimal_view_survives_every_spelling_of_a_bad_annotation() {
        use portway_provider::ServiceKey;
        use portway_provider::ipam::{IPS_ANNOTATIONS, POOL_ANNOTATIONS, SHARING_ANNOTATIONS};
        use std::net::IpAddr;
        for key in IPS_ANNOTATIONS
            .iter()
            .chain(&POOL_ANNOTATIONS)
            .chain(&SHARING_ANNOTATIONS)
            .chain(&[SOURCE_RANGES])
        {
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "prod",
                    "annotations": {*key: "not-an-ip,,300.1.1.1,x/99"}},
                "spec": {"type": "LoadBalancer", "loadBalancerIP": "nonsense"},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}}
            }))
            .expect("fixture");
            let v = minimal_view(&svc, "portway.dev/l2");
            assert_eq!(v.key, ServiceKey::new("prod", "web"), "{key}");
            assert_eq!(
                v.current_ips,
                ["10.0.0.7".parse::<IpAddr>().expect("ip")],
                "{key}"
            );
        }
    }
}
