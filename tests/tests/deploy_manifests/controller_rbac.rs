//! The real controllers, run as the controller's ServiceAccount with only the permissions the
//! rendered manifests grant (RBAC enforced by the test world), serve a hostport and an l2 Service and
//! (where the overlay enables it) initialize a tainted node.

use super::workloads::{container, controller_args, mounted_config, validate_config};
use super::{CONTROLLER_SA, NS, OVERLAYS, Rendered, kubectl, render_text};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::api::{Api, PostParams};
use portway_tests::{SimNode, TestCluster};
use std::time::Duration;

fn has_ip(s: &Service) -> bool {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_work_with_only_the_rendered_rbac() {
    let Some(kubectl) = kubectl("controllers under the rendered RBAC") else {
        return;
    };
    for overlay in OVERLAYS {
        let r = Rendered::new(&kubectl, overlay);
        let deploy = r.get("Deployment", NS, "portway-controller");
        let c = container(deploy, "controller");
        let args = controller_args(deploy);
        let config_path = args.config.clone().expect("--config");
        let text = mounted_config(&r, deploy, c, config_path.to_str().expect("utf-8"));
        let config = validate_config(overlay, text);

        let sim = TestCluster::start().await.expect("cluster");
        let dir = tempfile::tempdir().expect("tmp");
        let manifest = dir.path().join("portway.yaml");
        std::fs::write(&manifest, render_text(&kubectl, overlay)).expect("manifest");
        let kc = dir.path().join("admin.kubeconfig");
        sim.write_kubeconfig(&kc, "admin")
            .await
            .expect("kubeconfig");
        let _ = Api::<Namespace>::all(sim.client())
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": "kube-system"}}))
                    .expect("ns"),
            )
            .await;
        super::sim::run_kubectl(
            &kubectl,
            &kc,
            &["apply", "-f", manifest.to_str().expect("utf-8")],
        )
        .await;
        for i in 1..=2 {
            sim.add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("192.168.1.{}", 10 + i)))
                .await
                .expect("node");
        }
        sim.enforce_rbac(true).await.expect("enforce RBAC");

        let sa = sim
            .client_as(&format!("system:serviceaccount:{NS}:{CONTROLLER_SA}"))
            .await
            .expect("client");
        let built = portway::providers::build(&config, &sa)
            .await
            .expect("providers");
        let running = portway_tests::start_service_controller_with(
            sa.clone(),
            built.providers,
            &config.default_class,
            portway_tests::fast_config(),
        );
        let nodes_stop = tokio::sync::oneshot::channel::<()>();
        let node_task = args.enabled("cloud-node").then(|| {
            let ctl = portway::node::NodeController::new(
                sa.clone(),
                Default::default(),
                Duration::from_secs(60),
            );
            let rx = nodes_stop.1;
            tokio::spawn(ctl.run(async move {
                let _ = rx.await;
            }))
        });

        let admin: Api<Service> = Api::namespaced(sim.client(), "default");
        admin
            .create(&PostParams::default(), &portway_tests::svc("web").build())
            .await
            .expect("create");
        admin
            .create(
                &PostParams::default(),
                &portway_tests::svc("vip")
                    .ports([8443])
                    .class(portway_tests::L2)
                    .build(),
            )
            .await
            .expect("create");
        for name in ["web", "vip"] {
            portway_tests::eventually(
                &format!("{overlay}: {name} served under RBAC"),
                Duration::from_secs(30),
                || async { admin.get(name).await.ok().filter(has_ip).map(|_| ()) },
            )
            .await;
        }
        if node_task.is_some() {
            let taint = "node.cloudprovider.kubernetes.io/uninitialized";
            sim.add_node(
                SimNode::new("fresh")
                    .ipv4("192.168.1.30")
                    .taint(taint, "NoSchedule"),
            )
            .await
            .expect("node");
            let nodes: Api<Node> = Api::all(sim.client());
            portway_tests::eventually(
                &format!("{overlay}: node initialized under RBAC"),
                Duration::from_secs(30),
                || async {
                    let n = nodes.get("fresh").await.ok()?;
                    let tainted = n
                        .spec
                        .as_ref()?
                        .taints
                        .as_ref()
                        .is_some_and(|t| t.iter().any(|t| t.key == taint));
                    (!tainted && n.spec.as_ref()?.provider_id.is_some()).then_some(())
                },
            )
            .await;
        }
        let forbidden: Vec<_> = sim
            .writes()
            .await
            .all()
            .into_iter()
            .filter(|w| w.user.contains(CONTROLLER_SA))
            .collect();
        assert!(
            !forbidden.is_empty(),
            "{overlay}: the controller wrote as its ServiceAccount"
        );
        let _ = nodes_stop.0.send(());
        if let Some(t) = node_task {
            let _ = t.await;
        }
        running.stop().await;
        sim.shutdown().await;
    }
}
