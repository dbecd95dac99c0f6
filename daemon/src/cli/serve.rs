//! `vcfd serve`: the appliance daemon (DICOM receiver, analysis queue, forwarding, status API).

use anyhow::Context;
use std::path::PathBuf;
use vcfd::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file; without one the embedded defaults apply (SCP 127.0.0.1:11112 as VCFD,
    /// loopback peers only, status API 127.0.0.1:8080, state in ./var, no PACS).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    vcfd::service::run(config).context("vcfd serve")
}
