//! The `portway` binary: the controller, the node speaker, the sandbox, the
//! configuration checker and the simulated API server, as subcommands.

use clap::{Parser, Subcommand};
use portway::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portway",
    version,
    about = "A Kubernetes cloud-controller-manager for clusters without a cloud"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "PORTWAY_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the cloud controller (service and node controllers).
    Controller(portway::cli::ControllerArgs),
    /// Start a simulated cluster with every class and demo Services.
    Sandbox(portway::sandbox::SandboxArgs),
    /// Run the node agent: L2 announcements and BGP sessions of this node.
    Speaker(portway::speaker::SpeakerArgs),
    /// Validate a configuration file (without a cluster unless `--cluster`).
    CheckConfig {
        /// The YAML file to check.
        file: PathBuf,
        /// Also read the cluster's Nodes (through `KUBECONFIG` or in-cluster) and refuse
        /// pools that contain a node's own address.
        #[arg(long)]
        cluster: bool,
    },
    /// Translate another load balancer's configuration into Portway's resources.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Print Portway's CustomResourceDefinitions (the YAML committed under deploy/).
    Crds,
    /// Say, node by node, why a Service is (or is not) served.
    Explain(portway::explain::ExplainArgs),
    /// Serve the simulated Kubernetes API server until killed.
    Sim {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where to write a kubeconfig for the server.
        #[arg(long, default_value = "portway-sim.kubeconfig")]
        kubeconfig_out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// MetalLB's IPAddressPools, L2/BGPAdvertisements, BGPPeers and Communities, from a
    /// YAML file (--file) or the cluster, printed as Portway resources.
    Metallb(portway::import::MetallbArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    portway::cli::init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Controller(args) => portway::cli::run_controller(args).await,
            Command::Sandbox(args) => portway::sandbox::run(args).await,
            Command::Speaker(args) => portway::speaker::run(args).await,
            Command::CheckConfig { file, cluster } => check_config(&file, cluster).await,
            Command::Explain(args) => portway::explain::run(args).await,
            Command::Import(ImportCommand::Metallb(args)) => {
                portway::import::run_metallb(args).await
            }
            Command::Crds => portway::crd::yaml()
                .map(|y| print!("{y}"))
                .map_err(|e| anyhow::anyhow!("serializing the CRDs: {e}")),
            Command::Sim {
                listen,
                kubeconfig_out,
            } => {
                portway_sim::serve(listen, &kubeconfig_out, async {
                    portway::cli::shutdown_signal().await;
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check_config(file: &std::path::Path, cluster: bool) -> anyhow::Result<()> {
    let config = match Config::load(Some(file)) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}: {e}", file.display());
            }
            anyhow::bail!("{} problem(s) in {}", errors.0.len(), file.display())
        }
    };
    if cluster {
        let client = portway::process::client(None).await?;
        let overlaps = portway::providers::node_overlaps(&config, &client).await?;
        for o in &overlaps {
            eprintln!(
                "{}: {}: pool {} contains node {}'s address {}: take it out of the range \
                 (Portway would never hand it out)",
                file.display(),
                o.key_path,
                o.pool,
                o.node,
                o.ip
            );
        }
        if !overlaps.is_empty() {
            anyhow::bail!(
                "{} pool address(es) in {} belong to nodes",
                overlaps.len(),
                file.display()
            );
        }
    }
    println!("{}: ok", file.display());
    Ok(())
}
