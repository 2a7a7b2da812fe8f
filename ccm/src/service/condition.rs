//! The Service's `portway.dev/Serving` condition: one place (`kubectl get svc -o yaml`,
//! `kubectl describe`, `portway explain`) that says whether the load balancer serves and,
//! when it does not, why, in the words of the step that failed.
//!
//! Services carry `status.conditions` (metav1.Condition, merged by `type`), so a
//! controller can write one beside other controllers' without touching theirs. It is
//! written in the same status patch as the addresses, and only when it changes, so an
//! in-sync Service still costs no write.

use crate::k8s::Service;
use portway_provider::{LbStatus, ProviderError};
use serde_json::{Value, json};

/// The condition's type.
pub const SERVING: &str = "portway.dev/Serving";

/// What the condition says (its time and generation are filled when written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    /// `True` when the Service has an address that some node (or the appliance) serves.
    pub ok: bool,
    /// A CamelCase reason, stable for alerts.
    pub reason: &'static str,
    /// For a person: what is wrong and, from the error, what would fix it.
    pub message: String,
}

/// After an ensure: serving at the published addresses, or not, and why.
pub fn after_ensure(status: &LbStatus, no_nodes: bool) -> Serving {
    let ips: Vec<String> = status.ingress.iter().map(|i| i.ip.to_string()).collect();
    match (ips.is_empty(), status.warnings.first()) {
        (false, None) => Serving {
            ok: true,
            reason: "Serving",
            message: format!("served at {}", ips.join(", ")),
        },
        (false, Some(w)) => Serving {
            ok: true,
            reason: "ServingWithWarnings",
            message: format!("served at {}; {w}", ips.join(", ")),
        },
        (true, _) if no_nodes => Serving {
            ok: false,
            reason: "NoEligibleNodes",
            message: "no node may carry load-balancer traffic: every node is excluded \
                      (node.kubernetes.io/exclude-from-external-load-balancers, which kubeadm \
                      puts on control-plane nodes), uninitialized or being removed"
                .to_string(),
        },
        (true, Some(w)) => Serving {
            ok: false,
            reason: "NotServing",
            message: w.to_string(),
        },
        (true, None) => Serving {
            ok: false,
            reason: "NotServing",
            message: "no node serves it yet (for hostport: no ready svclb pod; under \
                      externalTrafficPolicy Local: no node with a ready endpoint)"
                .to_string(),
        },
    }
}

/// After a failed or refused step.
pub fn after_error(e: &ProviderError) -> Serving {
    let reason = match e {
        ProviderError::Invalid { field, .. } if field == "spec.loadBalancerClass" => {
            "ClassNotConfigured"
        }
        ProviderError::Invalid { .. } => "InvalidRequest",
        ProviderError::Exhausted { .. } => "PoolExhausted",
        ProviderError::Conflict { .. } => "AddressConflict",
        ProviderError::Orphaned { .. } => "AddressOrphaned",
        _ => "ProviderUnavailable",
    };
    Serving {
        ok: false,
        reason,
        message: e.to_string(),
    }
}

fn current(svc: &Service) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == SERVING)
}

/// Whether the Service carries the condition at all.
pub fn is_present(svc: &Service) -> bool {
    current(svc).is_some()
}

/// Whether the Service already says this.
pub fn is_current(svc: &Service, want: &Serving) -> bool {
    current(svc).is_some_and(|c| {
        c.status == if want.ok { "True" } else { "False" }
            && c.reason == want.reason
            && c.message == want.message
    })
}

/// The condition as written, its transition time kept while its status stays.
pub fn to_json(svc: &Service, want: &Serving) -> Value {
    let status = if want.ok { "True" } else { "False" };
    let since = current(svc)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.0.to_string())
        .unwrap_or_else(|| {
            k8s_openapi::jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        });
    let mut message = want.message.clone();
    // metav1.Condition: at most 32,768 bytes.
    if message.len() > 32_768 {
        let mut end = 32_768;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    json!({
        "type": SERVING,
        "status": status,
        "reason": want.reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": svc.metadata.generation.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_provider::LbStatus;

    #[test]
    fn reasons_name_the_cause() {
        let served = after_ensure(&LbStatus::vips(["192.0.2.1".parse().expect("ip")]), false);
        assert!(served.ok);
        assert_eq!(served.reason, "Serving");
        assert_eq!(
            after_ensure(&LbStatus::default(), true).reason,
            "NoEligibleNodes"
        );
        assert_eq!(
            after_ensure(&LbStatus::default(), false).reason,
            "NotServing"
        );
        let e = ProviderError::Exhausted {
            pool: "lan".into(),
            reason: "no free IPv4 address".into(),
        };
        assert_eq!(after_error(&e).reason, "PoolExhausted");
        assert!(after_error(&e).message.contains("lan"));
        let e =
            ProviderError::invalid("spec.loadBalancerClass", "portway.dev/f5 is not configured");
        assert_eq!(after_error(&e).reason, "ClassNotConfigured");
    }

    #[test]
    fn the_transition_time_stays_while_the_status_stays() {
        let mut svc = Service::default();
        let want = after_ensure(&LbStatus::default(), true);
        let first = to_json(&svc, &want);
        svc.status =
            Some(serde_json::from_value(json!({"conditions": [first.clone()]})).expect("status"));
        assert!(is_current(&svc, &want));
        let other = Serving {
            message: "something else".into(),
            ..want.clone()
        };
        assert!(!is_current(&svc, &other));
        assert_eq!(
            to_json(&svc, &other)["lastTransitionTime"],
            first["lastTransitionTime"]
        );
    }
}
