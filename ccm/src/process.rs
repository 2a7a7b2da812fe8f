//! What every `portway` process needs from its surroundings: an API client (from a
//! kubeconfig, else in-cluster) and the signal that asks it to stop. Kept apart from the
//! CLI so the controllers and the node agent depend on this, not on the CLI.

use anyhow::Context as _;
use kube::Client;
use std::path::Path;

/// A client from a kubeconfig file, or the in-cluster/default configuration.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    Client::try_from(config(kubeconfig).await?).context("building the Kubernetes client")
}

/// A client whose writes go out only while `fence` is open (the controllers' client; the
/// elector keeps a plain one to renew the Lease).
pub async fn fenced_client(
    kubeconfig: Option<&Path>,
    fence: crate::fence::Fence,
) -> anyhow::Result<Client> {
    let builder = kube::client::ClientBuilder::try_from(config(kubeconfig).await?)
        .context("building the Kubernetes client")?;
    Ok(builder.with_layer(&crate::fence::FenceLayer(fence)).build())
}

/// The client configuration from a kubeconfig file, or in-cluster/default.
pub async fn config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and no in-cluster configuration found")?,
    };
    Ok(config)
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
