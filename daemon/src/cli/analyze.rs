//! `vcfd analyze PATH`: load, describe and (later) analyse a CT series.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DICOM files or folders (searched recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("analyze: not implemented yet")
}
