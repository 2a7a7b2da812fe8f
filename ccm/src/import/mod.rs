//! `portway import metallb`: reads MetalLB's resources from a YAML file or from a cluster
//! and prints the equivalent Portway resources (`portway.dev/v1alpha1`) as YAML, with a
//! comment per field it could not translate (also on stderr), so a migration is
//! `portway import metallb --file metallb.yaml > portway.yaml && kubectl apply -f portway.yaml`.

pub mod metallb;

use anyhow::Context as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;
use std::path::PathBuf;

/// Flags of `portway import metallb`.
#[derive(clap::Args, Clone, Debug)]
pub struct MetallbArgs {
    /// A YAML file (or `-` for stdin) of MetalLB resources; without it they are read from
    /// the cluster.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Kubeconfig for reading from a cluster; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace MetalLB's resources live in.
    #[arg(long, default_value = "metallb-system")]
    pub namespace: String,
}

/// Every YAML document of `text` as JSON values (empty documents skipped).
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).with_context(|| format!("YAML document {}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

use serde::Deserialize as _;

/// MetalLB's kinds and the versions read from a cluster (the newest of each).
const KINDS: [(&str, &str); 5] = [
    ("IPAddressPool", "v1beta1"),
    ("L2Advertisement", "v1beta1"),
    ("BGPAdvertisement", "v1beta1"),
    ("BGPPeer", "v1beta2"),
    ("Community", "v1beta1"),
];

async fn from_cluster(args: &MetallbArgs) -> anyhow::Result<Vec<Value>> {
    let client = crate::process::client(args.kubeconfig.as_deref()).await?;
    let mut out = Vec::new();
    for (kind, version) in KINDS {
        let gvk = GroupVersionKind::gvk("metallb.io", version, kind);
        let ar = ApiResource::from_gvk(&gvk);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &args.namespace, &ar);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for o in list.items {
                    let mut v = serde_json::to_value(&o)?;
                    v["kind"] = Value::from(kind);
                    out.push(v);
                }
            }
            // MetalLB without this kind (no Community CRD in old releases): nothing to read.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("listing {kind}s")),
        }
    }
    Ok(out)
}

/// The Portway resources as one YAML stream, notes first as comments.
pub fn render(imported: &metallb::Imported) -> anyhow::Result<String> {
    let mut out = String::from("# Translated from MetalLB by `portway import metallb`.\n");
    for n in &imported.notes {
        out.push_str(&format!("# NOTE {n}\n"));
    }
    let mut push = |v: &dyn erased::Yaml| -> anyhow::Result<()> {
        out.push_str("---\n");
        out.push_str(&v.yaml()?);
        Ok(())
    };
    for p in &imported.pools {
        push(p)?;
    }
    for p in &imported.l2 {
        push(p)?;
    }
    for p in &imported.peers {
        push(p)?;
    }
    for p in &imported.advertisements {
        push(p)?;
    }
    Ok(out)
}

/// A tiny object-safe face over `Serialize`, so resources of four types share one loop.
mod erased {
    /// Serializes itself as YAML.
    pub trait Yaml {
        /// The YAML text.
        fn yaml(&self) -> Result<String, serde_yaml::Error>;
    }
    impl<T: serde::Serialize> Yaml for T {
        fn yaml(&self) -> Result<String, serde_yaml::Error> {
            serde_yaml::to_string(self)
        }
    }
}

/// `portway import metallb`.
pub async fn run_metallb(args: MetallbArgs) -> anyhow::Result<()> {
    let docs = match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            parse_documents(&text)?
        }
        Some(p) => parse_documents(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => from_cluster(&args).await?,
    };
    let imported = metallb::translate(&docs);
    for n in &imported.notes {
        eprintln!("portway import metallb: {n}");
    }
    print!("{}", render(&imported)?);
    Ok(())
}

#[cfg(test)]
mod tests;
