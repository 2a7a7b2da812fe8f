//! The rendered objects loaded into the test world's API server with
//! `kubectl apply -f`, then each component's calls made as its
//! ServiceAccount with RBAC enforced.

use super::checks::check_overlay;
use super::{CONTROLLER_SA, NS, OVERLAYS, Rendered, SPEAKER_SA, kubectl, render_text};
use std::path::Path;

pub(crate) async fn run_kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a kube call was allowed (Ok or a non-403 error) or refused (403).
pub(crate) fn forbidden<T>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_objects_load_into_the_sim_and_rbac_holds() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

    let Some(kubectl) = kubectl("deploy manifests load into the sim") else {
        return;
    };
    for overlay in OVERLAYS {
        let r = Rendered::new(&kubectl, overlay);
        let w = check_overlay(&r);
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = dir.path().join("portway.yaml");
        std::fs::write(&manifest, render_text(&kubectl, overlay)).expect("write manifest");

        let sim = portway_tests::TestCluster::builder()
            .kubelet(false)
            .daemonsets(false)
            .start()
            .await
            .expect("sim starts");
        let admin_kc = dir.path().join("admin.kubeconfig");
        sim.write_kubeconfig(&admin_kc, "admin")
            .await
            .expect("kubeconfig");
        let manifest_arg = manifest.to_str().expect("utf-8 path");

        // kube-system exists in every cluster; the hostport Role may live there.
        let kube_system: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}
        }))
        .expect("namespace");
        match Api::<Namespace>::all(sim.client())
            .create(&PostParams::default(), &kube_system)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create kube-system: {e}"),
        }
        let out = run_kubectl(&kubectl, &admin_kc, &["apply", "-f", manifest_arg]).await;
        assert_eq!(
            out.lines().count(),
            r.objects.len(),
            "{overlay}: one line per object applied:\n{out}"
        );
        // Applying again changes nothing (three-way merge against last-applied).
        let again = run_kubectl(&kubectl, &admin_kc, &["apply", "-f", manifest_arg]).await;
        assert!(
            again.lines().all(|l| l.ends_with("unchanged")),
            "{overlay}: second apply:\n{again}"
        );
        let names = run_kubectl(
            &kubectl,
            &admin_kc,
            &["get", "-f", manifest_arg, "-o", "name"],
        )
        .await;
        assert_eq!(
            names.lines().count(),
            r.objects.len(),
            "{overlay}:\n{names}"
        );

        // What the API now holds is what was rendered.
        let admin = sim.client();
        let d: Deployment = Api::namespaced(admin.clone(), NS)
            .get("portway-controller")
            .await
            .expect("deployment stored");
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
        let ds: DaemonSet = Api::namespaced(admin.clone(), NS)
            .get("portway-speaker")
            .await
            .expect("daemonset stored");
        let added = ds
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.into_iter().next())
            .and_then(|c| c.security_context)
            .and_then(|sc| sc.capabilities)
            .and_then(|c| c.add)
            .unwrap_or_default();
        assert_eq!(added, ["NET_RAW"], "{overlay}: {added:?}");
        let _: Namespace = Api::all(admin.clone()).get(NS).await.expect("namespace");
        let _: ServiceAccount = Api::namespaced(admin.clone(), NS)
            .get(CONTROLLER_SA)
            .await
            .expect("sa");
        let _: ClusterRole = Api::all(admin.clone())
            .get("portway-speaker")
            .await
            .expect("clusterrole");
        let _: Role = Api::namespaced(admin.clone(), &w.hostport_namespace)
            .get("portway-hostport")
            .await
            .expect("hostport role");

        // Objects the calls below touch.
        sim.add_node(portway_tests::SimNode::new("node-1").ipv4("10.0.0.11"))
            .await
            .expect("node");
        let svc: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}
        }))
        .expect("service");
        Api::<Service>::namespaced(admin.clone(), "default")
            .create(&PostParams::default(), &svc)
            .await
            .expect("create service");
        for name in ["bigip", "bgp-auth", "unrelated"] {
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": NS},
                "stringData": {"password": "x"}
            }))
            .expect("secret");
            Api::<Secret>::namespaced(admin.clone(), NS)
                .create(&PostParams::default(), &secret)
                .await
                .expect("create secret");
        }

        // RBAC is enforced from here on: only what the manifests bind counts for the
        // ServiceAccounts' calls (on the real server they hold TokenRequest tokens).
        sim.enforce_rbac(true).await.expect("enforce RBAC");

        // The controller's calls, as its ServiceAccount.
        let ctl = sim
            .client_as(&format!("system:serviceaccount:{NS}:{CONTROLLER_SA}"))
            .await
            .expect("client");
        let lp = ListParams::default();
        let pp = PatchParams::default();
        let svcs_all: Api<Service> = Api::all(ctl.clone());
        assert!(svcs_all.list(&lp).await.is_ok(), "{overlay}: list services");
        let one: Api<Service> = Api::namespaced(ctl.clone(), "default");
        assert!(
            forbidden(&one.get("web").await),
            "{overlay}: no provider reads a Service by name any more"
        );
        let svcs: Api<Service> = Api::namespaced(ctl.clone(), "default");
        let finalizer = serde_json::json!({"metadata": {"finalizers": ["service.kubernetes.io/load-balancer-cleanup"]}});
        assert!(
            svcs.patch("web", &pp, &Patch::Merge(&finalizer))
                .await
                .is_ok(),
            "{overlay}: patch service"
        );
        let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.11", "ipMode": "VIP"}]}}});
        assert!(
            svcs.patch_status("web", &pp, &Patch::Merge(&status))
                .await
                .is_ok(),
            "{overlay}: patch service status"
        );
        assert!(
            forbidden(&svcs.delete("web", &Default::default()).await),
            "{overlay}: delete service"
        );
        let nodes: Api<Node> = Api::all(ctl.clone());
        assert!(nodes.list(&lp).await.is_ok(), "{overlay}: list nodes");
        let label = serde_json::json!({"metadata": {"labels": {"node.kubernetes.io/instance-type": "portway"}}});
        let node_patch = nodes.patch("node-1", &pp, &Patch::Merge(&label)).await;
        assert_eq!(
            forbidden(&node_patch),
            !w.cloud_node,
            "{overlay}: patch node: {node_patch:?}"
        );
        assert!(
            forbidden(&nodes.delete("node-1", &Default::default()).await),
            "{overlay}: delete node"
        );
        assert!(
            Api::<Namespace>::all(ctl.clone()).list(&lp).await.is_ok(),
            "{overlay}: list namespaces"
        );
        let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "reason": "EnsuringLoadBalancer", "message": "Ensuring load balancer",
            "type": "Normal", "source": {"component": "service-controller"},
            "involvedObject": {"kind": "Service", "namespace": "default", "name": "web"}
        }))
        .expect("event");
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(ctl.clone(), "default");
        assert!(
            events.create(&PostParams::default(), &event).await.is_ok(),
            "{overlay}: create event"
        );
        let leases: Api<Lease> = Api::namespaced(ctl.clone(), &w.lease_namespace);
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": w.lease_name, "namespace": w.lease_namespace},
            "spec": {"holderIdentity": "test"}
        }))
        .expect("lease");
        assert!(
            leases.create(&PostParams::default(), &lease).await.is_ok(),
            "{overlay}: create lease"
        );
        let mut held = leases.get(&w.lease_name).await.expect("get own lease");
        held.spec
            .get_or_insert_with(Default::default)
            .holder_identity = Some("test-2".into());
        assert!(
            leases
                .replace(&w.lease_name, &PostParams::default(), &held)
                .await
                .is_ok(),
            "{overlay}: update lease"
        );
        assert!(forbidden(&leases.list(&lp).await), "{overlay}: list leases");
        assert!(
            forbidden(
                &Api::<Lease>::namespaced(ctl.clone(), "kube-system")
                    .get(&w.lease_name)
                    .await
            ),
            "{overlay}: lease of another namespace"
        );
        let hp_ds: Api<DaemonSet> = Api::namespaced(ctl.clone(), &w.hostport_namespace);
        assert!(
            hp_ds.list(&lp).await.is_ok(),
            "{overlay}: list svclb daemonsets"
        );
        // The DaemonSet the hostport provider builds (on the real server, the rendered
        // admission policy admits only that shape).
        let svclb_ds: DaemonSet = {
            use portway_provider::testkit::SvcExt as _;
            let view = portway_provider::testkit::svc("default", "web")
                .uid("12345678-0000-0000-0000-000000000000")
                .named_ports(&[("http", portway_provider::Protocol::Tcp, 80, 30080)]);
            let cfg = portway_hostport::HostportConfig {
                namespace: w.hostport_namespace.clone(),
                ..Default::default()
            };
            portway_hostport::build_daemonset(&view, &cfg, false).expect("daemonset")
        };
        assert_eq!(
            svclb_ds.metadata.name.as_deref(),
            Some("svclb-web-12345678")
        );
        assert!(
            hp_ds
                .create(&PostParams::default(), &svclb_ds)
                .await
                .is_ok(),
            "{overlay}: create svclb"
        );
        // A real DaemonSet controller writes the status meanwhile: a 409 is retried on a
        // fresh read, as the hostport provider does.
        let replaced = loop {
            let mut current = hp_ds.get("svclb-web-12345678").await.expect("get svclb");
            current.metadata.annotations =
                Some([("portway.dev/spec-hash".to_string(), "x".to_string())].into());
            match hp_ds
                .replace("svclb-web-12345678", &PostParams::default(), &current)
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                other => break other,
            }
        };
        assert!(replaced.is_ok(), "{overlay}: replace svclb: {replaced:?}");
        assert!(
            forbidden(
                &hp_ds
                    .patch("svclb-web-12345678", &pp, &Patch::Merge(&label))
                    .await
            ),
            "{overlay}: the hostport provider never patches DaemonSets"
        );
        assert!(
            hp_ds
                .delete("svclb-web-12345678", &Default::default())
                .await
                .is_ok(),
            "{overlay}: delete svclb"
        );
        let other_ns = if w.hostport_namespace == NS {
            "kube-system"
        } else {
            NS
        };
        assert!(
            forbidden(
                &Api::<DaemonSet>::namespaced(ctl.clone(), other_ns)
                    .list(&lp)
                    .await
            ),
            "{overlay}: daemonsets outside {}",
            w.hostport_namespace
        );
        let sas: Api<ServiceAccount> = Api::namespaced(ctl.clone(), &w.hostport_namespace);
        let svclb: ServiceAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "svclb", "namespace": w.hostport_namespace}
        }))
        .expect("sa");
        assert!(
            sas.create(&PostParams::default(), &svclb).await.is_ok(),
            "{overlay}: create svclb SA"
        );
        let ctl_secrets: Api<Secret> = Api::namespaced(ctl.clone(), &w.f5_secret.0);
        assert!(
            ctl_secrets.get(&w.f5_secret.1).await.is_ok(),
            "{overlay}: get f5 secret"
        );
        assert!(
            forbidden(&ctl_secrets.get("unrelated").await),
            "{overlay}: other secret"
        );
        assert!(
            forbidden(&ctl_secrets.list(&lp).await),
            "{overlay}: list secrets"
        );

        // The speaker's calls, as its ServiceAccount.
        let spk = sim
            .client_as(&format!("system:serviceaccount:{NS}:{SPEAKER_SA}"))
            .await
            .expect("client");
        assert!(
            Api::<Service>::all(spk.clone()).list(&lp).await.is_ok(),
            "{overlay}: speaker lists services"
        );
        let announced = serde_json::json!({"metadata": {"annotations": {"portway.dev/announced-by": "node-1"}}});
        assert!(
            Api::<Service>::namespaced(spk.clone(), "default")
                .patch("web", &pp, &Patch::Merge(&announced))
                .await
                .is_ok(),
            "{overlay}: speaker annotates"
        );
        assert!(
            forbidden(
                &Api::<Service>::namespaced(spk.clone(), "default")
                    .patch_status("web", &pp, &Patch::Merge(&status))
                    .await
            ),
            "{overlay}: the speaker never writes Service status"
        );
        assert!(
            Api::<Node>::all(spk.clone()).list(&lp).await.is_ok(),
            "{overlay}: speaker lists nodes"
        );
        assert!(
            forbidden(
                &Api::<Node>::all(spk.clone())
                    .patch("node-1", &pp, &Patch::Merge(&label))
                    .await
            ),
            "{overlay}: the speaker never writes Nodes"
        );
        let spk_secrets: Api<Secret> = Api::namespaced(spk.clone(), NS);
        assert!(
            spk_secrets.get("bgp-auth").await.is_ok(),
            "{overlay}: speaker reads bgp-auth"
        );
        assert!(
            forbidden(&spk_secrets.get("bigip").await),
            "{overlay}: speaker reads bigip"
        );
        assert!(
            forbidden(&spk_secrets.list(&lp).await),
            "{overlay}: speaker lists secrets"
        );
    }
}

/// The way users install: `kubectl apply -k` on an overlay, and `--server-side`, each
/// accepted by the API server's validation with no warning, and a second server-side apply
/// changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_apply_with_kubectl_k_and_server_side() {
    let Some(kubectl) = kubectl("kubectl apply -k of each overlay") else {
        return;
    };
    for overlay in OVERLAYS {
        let dir = super::deploy_dir().join("overlays").join(overlay);
        let dir = dir.to_str().expect("utf-8 path");
        for server_side in [false, true] {
            let cluster = portway_tests::TestCluster::start()
                .await
                .expect("cluster starts");
            let tmp = tempfile::tempdir().expect("tempdir");
            let kc = tmp.path().join("admin.kubeconfig");
            cluster
                .write_kubeconfig(&kc, "admin")
                .await
                .expect("kubeconfig");
            ensure_kube_system(&cluster.client()).await;
            let mut args = vec!["apply", "-k", dir];
            if server_side {
                args.push("--server-side");
            }
            let (out, err) = run_kubectl_full(&kubectl, &kc, &args).await;
            let verb = if server_side {
                "serverside-applied"
            } else {
                "created"
            };
            assert!(
                out.lines().all(|l| l.ends_with(verb)),
                "{overlay} {args:?}:\n{out}"
            );
            assert!(
                !err.to_lowercase().contains("warning"),
                "{overlay} {args:?} warned:\n{err}"
            );
            let (again, _) = run_kubectl_full(&kubectl, &kc, &args).await;
            let same = if server_side {
                "serverside-applied"
            } else {
                "unchanged"
            };
            assert!(
                again.lines().all(|l| l.ends_with(same)),
                "{overlay} second {args:?}:\n{again}"
            );
            cluster.shutdown().await;
        }
    }
}

/// kube-system, which every real cluster has and an empty sim lacks.
async fn ensure_kube_system(client: &kube::Client) {
    use k8s_openapi::api::core::v1::Namespace;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "kube-system"}}))
            .expect("namespace");
    match kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create kube-system: {e}"),
    }
}

/// Runs kubectl, fails on a non-zero exit, returns (stdout, stderr).
async fn run_kubectl_full(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "kubectl {} failed:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    (stdout, stderr)
}
