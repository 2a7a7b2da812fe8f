//! The churn: one operation per step on a bounded set of Services, chosen by a seeded
//! generator so a failing run can be replayed. Each hostport Service binds ports of its
//! own (a clash between two hostport Services is a legitimate pending state, not what this
//! suite looks for); requested addresses come from a pool nothing is allocated from
//! automatically, one per Service name.

use super::world::{L2_REQUESTED_PREFIX, World};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use portway_tests::{BGP, F5, HOSTPORT, L2, svc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;

/// How many names the churn plays with.
pub const NAMES: usize = 24;

/// What the churn believes a Service's spec is.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub class: &'static str,
    pub load_balancer: bool,
}

pub struct Churn {
    rng: StdRng,
    pub operations: u64,
    pub failed: u64,
    /// name -> spec of the Services that exist.
    pub live: BTreeMap<String, Spec>,
}

const CLASSES: [&str; 4] = [HOSTPORT, L2, BGP, F5];

fn name(i: usize) -> String {
    format!("chaos-{i:02}")
}

/// A hostport Service's own ports (two per name, never shared with another name).
fn own_ports(i: usize, second: bool) -> Vec<i32> {
    let base = 20_000 + 2 * i as i32;
    if second {
        vec![base, base + 1]
    } else {
        vec![base]
    }
}

impl Churn {
    pub fn new(seed: u64, _w: &World) -> Churn {
        Churn {
            rng: StdRng::seed_from_u64(seed),
            operations: 0,
            failed: 0,
            live: BTreeMap::new(),
        }
    }

    /// One operation; API errors (a fault, a conflict) are counted, not fatal.
    pub async fn step(&mut self, w: &World) {
        let api: Api<Service> = Api::namespaced(w.cluster.client(), "default");
        let i = self.rng.random_range(0..NAMES);
        let n = name(i);
        self.operations += 1;
        let ok = match self.live.get(&n).cloned() {
            None => self.create(&api, i, &n).await,
            Some(spec) => match self.rng.random_range(0..10u8) {
                0 | 1 => self.delete(&api, &n).await,
                2 | 3 => self.ports(&api, i, &n, &spec).await,
                4 => self.label(&api, &n).await,
                5 if spec.class == L2 && spec.load_balancer => self.request(&api, i, &n).await,
                6 | 7 => self.toggle_type(&api, i, &n, &spec).await,
                _ if spec.load_balancer => self.change_class(&api, i, &n).await,
                _ => self.toggle_type(&api, i, &n, &spec).await,
            },
        };
        if !ok {
            self.failed += 1;
        }
    }

    fn pick_class(&mut self) -> &'static str {
        CLASSES[self.rng.random_range(0..CLASSES.len())]
    }

    async fn create(&mut self, api: &Api<Service>, i: usize, n: &str) -> bool {
        let class = self.pick_class();
        let mut b = svc(n).ports(own_ports(i, false));
        if class != HOSTPORT || self.rng.random_bool(0.5) {
            b = b.class(class);
        }
        match api.create(&PostParams::default(), &b.build()).await {
            Ok(_) => {
                self.live.insert(
                    n.to_string(),
                    Spec {
                        class,
                        load_balancer: true,
                    },
                );
                true
            }
            Err(_) => false,
        }
    }

    async fn delete(&mut self, api: &Api<Service>, n: &str) -> bool {
        match api.delete(n, &DeleteParams::default()).await {
            Ok(_) => {
                self.live.remove(n);
                true
            }
            Err(_) => false,
        }
    }

    async fn patch(&self, api: &Api<Service>, n: &str, patch: serde_json::Value) -> bool {
        api.patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .is_ok()
    }

    fn ports_json(i: usize, second: bool, load_balancer: bool) -> serde_json::Value {
        serde_json::Value::Array(
            own_ports(i, second)
                .into_iter()
                .map(|p| {
                    let mut port = serde_json::json!({"name": format!("tcp-{p}"), "port": p, "protocol": "TCP"});
                    if !load_balancer {
                        port["nodePort"] = serde_json::Value::Null;
                    }
                    port
                })
                .collect(),
        )
    }

    async fn ports(&mut self, api: &Api<Service>, i: usize, n: &str, spec: &Spec) -> bool {
        let second = self.rng.random_bool(0.5);
        let ports = Self::ports_json(i, second, spec.load_balancer);
        self.patch(api, n, serde_json::json!({"spec": {"ports": ports}}))
            .await
    }

    async fn label(&mut self, api: &Api<Service>, n: &str) -> bool {
        let v = self.rng.random_range(0..1000u32).to_string();
        self.patch(
            api,
            n,
            serde_json::json!({"metadata": {"labels": {"chaos": v}}}),
        )
        .await
    }

    async fn request(&mut self, api: &Api<Service>, i: usize, n: &str) -> bool {
        let ip = format!("{L2_REQUESTED_PREFIX}{}", i + 1);
        self.patch(
            api,
            n,
            serde_json::json!({"metadata": {"annotations": {"portway.dev/load-balancer-ips": ip}}}),
        )
        .await
    }

    async fn toggle_type(&mut self, api: &Api<Service>, i: usize, n: &str, spec: &Spec) -> bool {
        let to_lb = !spec.load_balancer;
        let class = if to_lb { self.pick_class() } else { spec.class };
        let patch = if to_lb {
            serde_json::json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": class,
                "ports": Self::ports_json(i, false, true)}})
        } else {
            serde_json::json!({"spec": {"type": "ClusterIP", "loadBalancerClass": null,
                "ports": Self::ports_json(i, false, false)},
                "metadata": {"annotations": {"portway.dev/load-balancer-ips": null}}})
        };
        let ok = self.patch(api, n, patch).await;
        if ok {
            self.live.insert(
                n.to_string(),
                Spec {
                    class,
                    load_balancer: to_lb,
                },
            );
        }
        ok
    }

    /// `loadBalancerClass` is immutable on a LoadBalancer: a class change is a trip
    /// through ClusterIP, as a user does it.
    async fn change_class(&mut self, api: &Api<Service>, i: usize, n: &str) -> bool {
        let class = self.pick_class();
        let down = Spec {
            class: HOSTPORT,
            load_balancer: true,
        };
        if !self.toggle_type(api, i, n, &down).await {
            return false;
        }
        let patch = serde_json::json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": class,
            "ports": Self::ports_json(i, false, true)}});
        let ok = self.patch(api, n, patch).await;
        if ok {
            self.live.insert(
                n.to_string(),
                Spec {
                    class,
                    load_balancer: true,
                },
            );
        }
        ok
    }
}
