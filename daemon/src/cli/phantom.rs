//! `vcfd phantom`: render a synthetic CT study and its ground truth.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created); receives one DICOM file per slice and truth.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed: the same seed and options give the same study, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("phantom: not implemented yet")
}
