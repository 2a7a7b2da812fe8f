//! The sandbox (being written).

/// Flags of `portway sandbox`.
#[derive(clap::Args, Clone, Debug)]
pub struct SandboxArgs {}

/// `portway sandbox`.
pub async fn run(_args: SandboxArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
