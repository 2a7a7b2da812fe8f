//! Every invariant of one rendered overlay.

use super::rbac::{
    Wiring, assert_same_perms, controller_allow_list, effective, speaker_allow_list,
};
use super::workloads::{
    POD_IP, caps, container, controller_args, mounted_config, pod_spec, speaker_args, tolerates,
    validate_config, wiring,
};
use super::{CONTROLLER_SA, NS, Rendered, SPEAKER_SA, s};
use serde_json::Value;
use std::collections::BTreeSet;

/// Every invariant of one rendered overlay; returns its wiring for the sim part.
pub(crate) fn check_overlay(r: &Rendered) -> Wiring {
    // The overlays make the namespace (the chart leaves it to `helm --create-namespace`
    // and a documented label, as charts do).
    let ns = r.get("Namespace", "", NS);
    assert_eq!(
        s(ns, "/metadata/labels/pod-security.kubernetes.io~1enforce"),
        "privileged",
        "{}: host network and NET_RAW need the privileged Pod Security level",
        r.overlay
    );
    check_objects(r)
}

/// Every invariant of a rendered set of Portway objects in [`NS`] (an overlay or the
/// chart): the workloads, the configuration both read, and RBAC that grants exactly what
/// the code calls for that configuration. The speaker is checked where the configuration
/// needs one (l2 or bgp); without one, nothing may be granted to it.
pub(crate) fn check_objects(r: &Rendered) -> Wiring {
    let o = r.overlay.as_str();
    r.get("ServiceAccount", NS, CONTROLLER_SA);
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "DaemonSet",
        "ConfigMap",
    ] {
        for obj in r.of_kind(kind) {
            assert!(
                !s(obj, "/metadata/namespace").is_empty(),
                "{o}: {kind} {} has no namespace",
                s(obj, "/metadata/name")
            );
        }
    }

    // The controller Deployment.
    let deploy = r.get("Deployment", NS, "portway-controller");
    let replicas = deploy.pointer("/spec/replicas").and_then(Value::as_u64);
    assert!(
        replicas.is_some_and(|n| n >= 2),
        "{o}: {replicas:?} replicas; a standby takes over when the leader dies"
    );
    let spec = pod_spec(deploy);
    assert_eq!(spec.get("hostNetwork"), Some(&Value::Bool(true)), "{o}");
    assert_eq!(s(spec, "/serviceAccountName"), CONTROLLER_SA, "{o}");
    assert_eq!(
        s(spec, "/priorityClassName"),
        "system-cluster-critical",
        "{o}"
    );
    assert!(
        tolerates(
            spec,
            "node.cloudprovider.kubernetes.io/uninitialized",
            "NoSchedule"
        ),
        "{o}: the controller must run on uninitialized nodes"
    );
    assert!(
        tolerates(spec, "node-role.kubernetes.io/control-plane", "NoSchedule"),
        "{o}: the controller must run on control-plane nodes"
    );
    assert_eq!(
        deploy.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        Some(&Value::from(0)),
        "{o}: host-network replicas cannot surge onto a node that has one"
    );
    let c = container(deploy, "controller");
    let args = controller_args(deploy);
    assert!(args.leader_elect, "{o}: two replicas need leader election");
    assert_eq!(args.cloud_provider, "portway");
    let port = args.secure_port;
    assert_ne!(port, 0, "{o}: probes need the health server");
    let named_port = |name: &str| -> u16 {
        c.get("ports")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|p| s(p, "/name") == name))
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("{o}: no container port {name}"))
    };
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        let p = c.get(probe).unwrap_or_else(|| panic!("{o}: no {probe}"));
        assert_eq!(s(p, "/httpGet/path"), path, "{o}: {probe}");
        let probe_port = match p.pointer("/httpGet/port") {
            Some(Value::String(name)) => named_port(name),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            other => panic!("{o}: {probe} port {other:?}"),
        };
        assert_eq!(probe_port, port, "{o}: {probe} must hit --secure-port");
    }
    assert_eq!(
        pod_spec(deploy).pointer("/securityContext/runAsNonRoot"),
        Some(&Value::Bool(true)),
        "{o}: the controller needs no root"
    );
    assert_eq!(caps(c, "drop"), BTreeSet::from(["ALL".to_string()]), "{o}");
    assert!(
        caps(c, "add").is_empty(),
        "{o}: the controller needs no capability"
    );
    assert!(
        !args.bind_address.is_unspecified(),
        "{o}: the unauthenticated health and metrics server listens on every address"
    );
    assert_eq!(
        c.pointer("/securityContext/allowPrivilegeEscalation"),
        Some(&Value::Bool(false)),
        "{o}"
    );

    // No other container anywhere adds a capability or runs privileged.
    for w in r.of_kind("Deployment").chain(r.of_kind("DaemonSet")) {
        for c in pod_spec(w)
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if s(c, "/name") != "speaker" {
                assert!(
                    caps(c, "add").is_empty(),
                    "{o}: {} adds capabilities",
                    s(c, "/name")
                );
            }
            assert_ne!(
                c.pointer("/securityContext/privileged"),
                Some(&Value::Bool(true)),
                "{o}: {} is privileged",
                s(c, "/name")
            );
        }
    }

    // The configuration, and it is valid.
    let config_arg = args
        .config
        .as_ref()
        .and_then(|p| p.to_str())
        .unwrap_or_else(|| panic!("{o}: the controller has no --config"))
        .to_string();
    let text = mounted_config(r, deploy, c, &config_arg);
    let config = validate_config(&format!("{o} ConfigMap"), text);
    let speaker = r.find("DaemonSet", NS, "portway-speaker");
    assert_eq!(
        speaker.is_some(),
        config.l2.is_some() || config.bgp.is_some(),
        "{o}: a speaker runs exactly when l2 or bgp is configured"
    );
    if let Some(ds) = speaker {
        check_speaker(r, ds, text, &config);
    }

    // RBAC: exactly what the code calls, for this wiring; the admission policies that
    // narrow two of its grants.
    let w = wiring(&args, &config);
    check_admission(r, &w, &config);
    if w.hostport {
        r.get("Role", &w.hostport_namespace, "portway-hostport");
    }
    assert_same_perms(
        o,
        CONTROLLER_SA,
        &effective(r, CONTROLLER_SA),
        &controller_allow_list(&w),
    );
    assert_same_perms(
        o,
        SPEAKER_SA,
        &effective(r, SPEAKER_SA),
        &speaker_allow_list(&w),
    );
    // Bindings only name our two ServiceAccounts.
    for b in r
        .of_kind("ClusterRoleBinding")
        .chain(r.of_kind("RoleBinding"))
    {
        for sub in b
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_eq!(s(sub, "/kind"), "ServiceAccount", "{o}: {sub}");
            assert_eq!(s(sub, "/namespace"), NS, "{o}: {sub}");
            assert!(
                [CONTROLLER_SA, SPEAKER_SA].contains(&s(sub, "/name")),
                "{o}: binding to {sub}"
            );
        }
    }
    w
}

/// The speaker DaemonSet: host network, NET_RAW only, its node from `spec.nodeName`, the
/// controller's configuration, the gossip port it uses, metrics on loopback unless a
/// metrics port is declared (then on the pod's address, never every address).
fn check_speaker(r: &Rendered, ds: &Value, text: &str, config: &portway::config::Config) {
    let o = r.overlay.as_str();
    r.get("ServiceAccount", NS, SPEAKER_SA);
    let dspec = pod_spec(ds);
    assert_eq!(dspec.get("hostNetwork"), Some(&Value::Bool(true)), "{o}");
    assert_eq!(s(dspec, "/serviceAccountName"), SPEAKER_SA, "{o}");
    let sc = container(ds, "speaker");
    assert_eq!(
        caps(sc, "add"),
        BTreeSet::from(["NET_RAW".to_string()]),
        "{o}: the speaker gets NET_RAW and nothing else (no code path needs NET_ADMIN)"
    );
    assert_eq!(caps(sc, "drop"), BTreeSet::from(["ALL".to_string()]), "{o}");
    assert_ne!(
        sc.pointer("/securityContext/privileged"),
        Some(&Value::Bool(true)),
        "{o}: the speaker must not be privileged"
    );
    assert_eq!(
        sc.pointer("/securityContext/allowPrivilegeEscalation"),
        Some(&Value::Bool(false)),
        "{o}"
    );
    let sargs = speaker_args(ds);
    assert_eq!(
        sargs.node_name, "node-1",
        "{o}: the speaker learns its node from spec.nodeName"
    );
    assert!(sargs.kubeconfig.is_none(), "{o}: in-cluster configuration");
    let metrics = sargs.metrics_bind_address;
    let declared = sc
        .get("ports")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| s(p, "/name") == "metrics"));
    assert!(
        metrics.ip().is_loopback() || (declared && metrics.ip().to_string() == POD_IP),
        "{o}: the speaker's unauthenticated /metrics on {metrics} (declared port: {declared}): \
         loopback, or the pod's address when it is exposed on purpose"
    );
    let speaker_config = sargs
        .config
        .as_ref()
        .and_then(|p| p.to_str())
        .unwrap_or_else(|| panic!("{o}: the speaker has no --config"));
    assert_eq!(
        mounted_config(r, ds, sc, speaker_config),
        text,
        "{o}: controller and speaker must read the same configuration"
    );

    // The speaker declares the gossip port the configuration uses.
    if let Some(l2) = &config.l2 {
        let gossip = sc
            .get("ports")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|p| s(p, "/name") == "gossip"))
            .unwrap_or_else(|| panic!("{o}: the speaker declares no gossip port"));
        assert_eq!(
            gossip.get("containerPort").and_then(Value::as_u64),
            Some(u64::from(l2.gossip_port)),
            "{o}: l2.gossipPort and the speaker's declared port differ"
        );
        assert_eq!(s(gossip, "/protocol"), "UDP", "{o}");
    }
}

/// The admission policies (deploy/base/admission.yaml, the chart's admission.yaml): where
/// the speaker runs, the policy that lets it change only `portway.dev/announced-by`; where
/// the controller may create svclb DaemonSets, the policy that admits only their shape,
/// with the image the configuration names. Each bound with `Deny` and matched to the
/// ServiceAccount's user name. What they refuse is tested on a real API server
/// (admission_real.rs): the sim does not evaluate CEL.
fn check_admission(r: &Rendered, w: &Wiring, config: &portway::config::Config) {
    let o = r.overlay.as_str();
    let policy = |name: &str, sa: &str, wanted: bool| -> Option<&Value> {
        let vap = r.find("ValidatingAdmissionPolicy", "", name);
        assert_eq!(
            vap.is_some(),
            wanted,
            "{o}: ValidatingAdmissionPolicy {name}"
        );
        let vap = vap?;
        let user = format!("system:serviceaccount:{NS}:{sa}");
        let conditions = vap
            .pointer("/spec/matchConditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| s(c, "/expression") == format!("request.userInfo.username == '{user}'")),
            "{o}: {name} must match {user}: {conditions:?}"
        );
        assert_eq!(s(vap, "/spec/failurePolicy"), "Fail", "{o}: {name}");
        let binding = r.get("ValidatingAdmissionPolicyBinding", "", name);
        assert_eq!(s(binding, "/spec/policyName"), name, "{o}");
        assert_eq!(
            binding.pointer("/spec/validationActions"),
            Some(&serde_json::json!(["Deny"])),
            "{o}: {name} must deny, not only warn or audit"
        );
        assert!(
            binding.pointer("/spec/matchResources").is_none()
                && binding.pointer("/spec/paramRef").is_none(),
            "{o}: {name}'s binding applies everywhere"
        );
        Some(vap)
    };
    policy("portway-speaker-announced-by-only", SPEAKER_SA, w.speaker);
    if let Some(vap) = policy("portway-controller-svclb-only", CONTROLLER_SA, w.hostport) {
        let image = vap
            .pointer("/spec/variables")
            .and_then(Value::as_array)
            .and_then(|vs| vs.iter().find(|v| s(v, "/name") == "image"))
            .map(|v| s(v, "/expression"))
            .unwrap_or_else(|| panic!("{o}: the svclb policy has no image variable"));
        assert_eq!(
            image,
            format!("'{}'", config.hostport.image),
            "{o}: the svclb policy must admit the image hostport.image names"
        );
    }
}
