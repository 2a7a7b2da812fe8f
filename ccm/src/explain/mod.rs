//! `portway explain NAMESPACE/NAME`: one place that answers "why is my Service unreachable?".
//!
//! It reads what the controller and the speakers already wrote (the Service's status and
//! `portway.dev/Serving` condition, its announcer annotation, the speakers' events, the svclb
//! pods) plus the inputs they decided from (Nodes, EndpointSlices), and prints one line per
//! node. It needs only read access, so an operator can run it with their own kubeconfig;
//! [`report`] holds the decisions as a pure function so each reason is unit-tested.

pub mod report;

use crate::config::Config;
use crate::k8s::{Node, Service};
use crate::service::rules;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};

/// The arguments of `portway explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The Service, as NAMESPACE/NAME (NAME alone means the `default` namespace).
    pub service: String,
    /// The controller's configuration file, for `defaultClass` and the svclb namespace
    /// (defaults apply without it).
    #[arg(long, env = "PORTWAY_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Kubeconfig to use instead of the usual discovery.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// Splits `NAMESPACE/NAME`; a bare name is in `default`, as kubectl's.
pub fn parse_target(s: &str) -> anyhow::Result<(String, String)> {
    let (ns, name) = s.split_once('/').unwrap_or(("default", s));
    anyhow::ensure!(
        !ns.is_empty() && !name.is_empty() && !name.contains('/'),
        "{s:?} is not NAMESPACE/NAME (for example default/web)"
    );
    Ok((ns.to_string(), name.to_string()))
}

/// Reads what the report needs and computes it.
pub async fn gather(
    client: Client,
    config: &Config,
    ns: &str,
    name: &str,
) -> anyhow::Result<report::Report> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let Some(service) = services.get_opt(name).await? else {
        anyhow::bail!("Service {ns}/{name} not found");
    };
    let class = rules::effective_class(&service, &config.default_class).map(str::to_string);
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await?
        .items;
    let svclb_pods = if class.as_deref() == Some(crate::names::HOSTPORT) {
        Api::<Pod>::namespaced(client.clone(), &config.hostport.namespace)
            .list(&ListParams::default().labels("svccontroller.k3s.cattle.io/svcname"))
            .await?
            .items
    } else {
        Vec::new()
    };
    let mut raw = Api::<Event>::namespaced(client, ns)
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Service,involvedObject.name={name}"
        )))
        .await?
        .items;
    raw.sort_by_key(|e| {
        e.last_timestamp
            .clone()
            .map(|t| t.0)
            .or(e.event_time.clone().map(|t| t.0))
    });
    let uid = service.metadata.uid.clone();
    let events: Vec<(String, String, String)> = raw
        .into_iter()
        .filter(|e| {
            uid.is_none() || e.involved_object.uid.is_none() || e.involved_object.uid == uid
        })
        .map(|e| {
            // The speakers' events name their node; the controller's are said once, for all.
            let source = e.source.unwrap_or_default();
            let host = match source.component.as_deref() {
                Some(crate::names::SPEAKER) => source.host.unwrap_or_default(),
                _ => String::new(),
            };
            (
                host,
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect();
    Ok(report::explain(&report::Input {
        service: &service,
        class: class.as_deref(),
        nodes: &nodes,
        slices: &slices,
        svclb_pods: &svclb_pods,
        events: &events,
    }))
}

/// The subcommand.
pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let (ns, name) = parse_target(&args.service)?;
    let config = match &args.config {
        Some(f) => Config::load(Some(f)).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                f.display(),
                e.0.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?,
        None => Config::default(),
    };
    let client = crate::process::client(args.kubeconfig.as_deref()).await?;
    let r = gather(client, &config, &ns, &name).await?;
    print!("{}", report::render(&r));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets_parse_as_kubectl_names() {
        assert_eq!(
            parse_target("ns/web").expect("valid"),
            ("ns".into(), "web".into())
        );
        assert_eq!(
            parse_target("web").expect("valid"),
            ("default".into(), "web".into())
        );
        assert!(parse_target("a/b/c").is_err());
        assert!(parse_target("/web").is_err());
    }
}
