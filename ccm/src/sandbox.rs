//! The sandbox (being written: waits on the simulated API server).

/// Flags of `portway sandbox`.
#[derive(clap::Args, Clone, Debug)]
pub struct SandboxArgs {}

/// `portway sandbox`.
pub async fn run(_args: SandboxArgs) -> anyhow::Result<()> {
    anyhow::bail!("the sandbox is not built yet")
}
