//! Reading the rendered workloads: containers, args as the pod sees them,
//! the mounted configuration, and what the configuration decides about RBAC.

use super::rbac::Wiring;
use super::{NS, Rendered, s, strs};
use clap::Parser;
use portway::cli::ControllerArgs;
use portway::config::Config;
use portway::speaker::SpeakerArgs;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn pod_spec(workload: &Value) -> &Value {
    workload
        .pointer("/spec/template/spec")
        .expect("workload has a pod template")
}

pub(crate) fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    pod_spec(workload)
        .get("containers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(c, "/name") == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// What `status.podIP` stands for in the rendered args.
pub(crate) const POD_IP: &str = "192.0.2.10";

/// The container's args with every `$(VAR)` replaced by a sample value; a
/// reference to a variable the container does not define is an error,
/// because kubelet would pass it on literally.
pub(crate) fn expanded_args(c: &Value) -> Vec<String> {
    let env: BTreeMap<String, String> = c
        .get("env")
        .and_then(Value::as_array)
        .map(|env| {
            env.iter()
                .map(|e| {
                    let sample = match s(e, "/valueFrom/fieldRef/fieldPath") {
                        "status.podIP" => POD_IP.to_string(),
                        "metadata.namespace" => NS.to_string(),
                        "spec.nodeName" => "node-1".to_string(),
                        "" => s(e, "/value").to_string(),
                        other => format!("<{other}>"),
                    };
                    (s(e, "/name").to_string(), sample)
                })
                .collect()
        })
        .unwrap_or_default();
    strs(c.get("args"))
        .into_iter()
        .map(|arg| {
            let mut out = arg.clone();
            while let Some(start) = out.find("$(") {
                let end = out[start..]
                    .find(')')
                    .map(|e| start + e)
                    .unwrap_or_else(|| panic!("unclosed $( in {arg:?}"));
                let var = &out[start + 2..end];
                let value = env
                    .get(var)
                    .unwrap_or_else(|| panic!("{arg:?} refers to $({var}), not in env"));
                out.replace_range(start..=end, value);
            }
            out
        })
        .collect()
}

/// `portway <args>` parsed as the binary parses its two in-cluster commands.
#[derive(Parser, Debug)]
struct Cli {
    /// The binary's global flag (ccm/src/main.rs), accepted after the subcommand too.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    Controller(ControllerArgs),
    Speaker(SpeakerArgs),
}

fn parse(args: &[String]) -> Cmd {
    let argv = std::iter::once("portway".to_string()).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli.command,
        Err(e) => panic!("`portway {}` is refused: {e}", args.join(" ")),
    }
}

/// The speaker's flags as `portway speaker` sees them in the pod (node
/// `node-1` stands for `spec.nodeName`).
pub(crate) fn speaker_args(daemonset: &Value) -> SpeakerArgs {
    let args = expanded_args(container(daemonset, "speaker"));
    match parse(&args) {
        Cmd::Speaker(a) => a,
        other => panic!("the speaker container runs {other:?}"),
    }
}

/// The controller's flags as `portway controller` sees them in the pod,
/// including `POD_NAMESPACE` (clap reads it for the Lease namespace).
pub(crate) fn controller_args(deployment: &Value) -> ControllerArgs {
    let c = container(deployment, "controller");
    let mut args = expanded_args(c);
    let env_ns = c
        .get("env")
        .and_then(Value::as_array)
        .and_then(|env| env.iter().find(|e| s(e, "/name") == "POD_NAMESPACE"))
        .map(|e| s(e, "/valueFrom/fieldRef/fieldPath"));
    if env_ns == Some("metadata.namespace")
        && !args
            .iter()
            .any(|a| a.starts_with("--leader-elect-resource-namespace"))
    {
        args.push(format!(
            "--leader-elect-resource-namespace={}",
            s(deployment, "/metadata/namespace")
        ));
    }
    match parse(&args) {
        Cmd::Controller(a) => a,
        other => panic!("the controller container runs {other:?}"),
    }
}

pub(crate) fn caps(c: &Value, which: &str) -> BTreeSet<String> {
    strs(c.pointer(&format!("/securityContext/capabilities/{which}")))
        .into_iter()
        .collect()
}

pub(crate) fn tolerates(spec: &Value, key: &str, effect: &str) -> bool {
    spec.get("tolerations")
        .and_then(Value::as_array)
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                s(t, "/key") == key && (s(t, "/effect") == effect || s(t, "/effect").is_empty())
            })
        })
}

/// The configuration text mounted into `workload` and the path `--config`
/// names, checked to be the same file.
pub(crate) fn mounted_config<'a>(
    r: &'a Rendered,
    workload: &Value,
    c: &Value,
    config_arg: &str,
) -> &'a str {
    let volume = pod_spec(workload)
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v.get("configMap").is_some()))
        .expect("a ConfigMap volume");
    let mount = c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .and_then(|ms| ms.iter().find(|m| s(m, "/name") == s(volume, "/name")))
        .expect("the ConfigMap volume is mounted");
    let key = config_arg
        .strip_prefix(s(mount, "/mountPath"))
        .map(|k| k.trim_start_matches('/'))
        .unwrap_or_else(|| panic!("--config={config_arg} is not under the ConfigMap mount"));
    let cm = r.get(
        "ConfigMap",
        s(workload, "/metadata/namespace"),
        s(volume, "/configMap/name"),
    );
    cm.pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("ConfigMap has no key {key}"))
}

// ---------------------------------------------------------------- configuration

/// Parses and validates a configuration file as the controller and the speaker do: one
/// parse gives every section typed, pool references checked.
pub(crate) fn validate_config(what: &str, text: &str) -> Config {
    Config::from_yaml(text).unwrap_or_else(|e| panic!("{what}: invalid:\n{e}"))
}

/// What the configuration decides about RBAC.
pub(crate) fn wiring(args: &ControllerArgs, config: &Config) -> Wiring {
    let f5_secret = config
        .f5
        .as_ref()
        .map(|f5| {
            (
                f5.credentials_secret.namespace.clone(),
                f5.credentials_secret.name.clone(),
            )
        })
        .unwrap_or_else(|| (NS.into(), "bigip".into()));
    let mut bgp_secrets: BTreeSet<(String, String)> = config
        .bgp
        .iter()
        .flat_map(|b| &b.peers)
        .filter_map(|p| p.password_secret.as_ref())
        .map(|sr| (sr.namespace.clone(), sr.name.clone()))
        .collect();
    if bgp_secrets.is_empty() {
        bgp_secrets.insert((NS.into(), "bgp-auth".into()));
    }
    Wiring {
        cloud_node: args.enabled("cloud-node"),
        lease_namespace: args.leader_elect_resource_namespace.clone(),
        lease_name: args.leader_elect_resource_name.clone(),
        hostport_namespace: config.hostport.namespace.clone(),
        hostport: config.hostport.enabled,
        speaker: config.l2.is_some() || config.bgp.is_some(),
        f5_secret,
        bgp_secrets,
    }
}
