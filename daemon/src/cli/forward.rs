//! `vcfd forward`: puts DICOM files into the outbox of every configured PACS and runs the
//! forwarder until each is delivered or dead-lettered (or the timeout passes). For re-sending
//! results by hand and for testing delivery; it uses the daemon's database, so run it while
//! `vcfd serve` is stopped (sled allows one process).

use anyhow::{bail, Context};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vcfd::config::Config;
use vcfd::forward::{self, Backoff, Destination};
use vcfd::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file naming the PACS destinations and the state folder.
    #[arg(long)]
    pub config: PathBuf,
    /// Give up after this many seconds (entries stay queued for the daemon).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// DICOM files to deliver.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if config.pacs.is_empty() {
        bail!("{} has no [[pacs]] destination", args.config.display());
    }
    let dests = config
        .pacs
        .iter()
        .map(|p| Destination::new(&config, p).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let state = &config.storage.state_dir;
    std::fs::create_dir_all(state).with_context(|| state.display().to_string())?;
    let store = Store::open(state)?;
    let names: Vec<String> = config.pacs.iter().map(|p| p.name.clone()).collect();
    let mut files = HashSet::new();
    let mut queued = 0;
    for f in &args.files {
        let f = std::fs::canonicalize(f).with_context(|| f.display().to_string())?;
        queued += vcfd::worker::enqueue_file(&store, &names, &f)?;
        files.insert(f);
    }
    println!(
        "queued {queued} delivery(ies) of {} file(s) to {} destination(s)",
        files.len(),
        names.len()
    );
    let backoff = Backoff {
        initial: Duration::from_secs(config.forward.backoff_initial_s),
        max: Duration::from_secs(config.forward.backoff_max_s),
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut delivered = 0;
    loop {
        let s = forward::round(&store, &dests, backoff)?;
        delivered += s.delivered;
        if s.retried > 0 {
            for e in store.outbox()?.iter().filter(|e| files.contains(&e.path)) {
                if let Some(err) = &e.last_error {
                    eprintln!("retrying later ({} attempt(s)): {err}", e.attempts);
                }
            }
        }
        let pending = store
            .outbox()?
            .into_iter()
            .filter(|e| files.contains(&e.path))
            .collect::<Vec<_>>();
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for e in &pending {
                eprintln!(
                    "not delivered to {:?} after {} attempt(s): {}",
                    e.destination,
                    e.attempts,
                    e.last_error.as_deref().unwrap_or("not tried yet")
                );
            }
            bail!(
                "{} delivery(ies) still pending after {} s (left in the outbox)",
                pending.len(),
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let dead: Vec<_> = store
        .dead_letters()?
        .into_iter()
        .filter(|d| files.contains(&d.entry.path))
        .collect();
    println!("delivered {delivered}, dead-lettered {}", dead.len());
    if !dead.is_empty() {
        for d in &dead {
            eprintln!("dead letter ({}): {}", d.entry.destination, d.reason);
        }
        bail!("{} delivery(ies) failed permanently", dead.len());
    }
    Ok(())
}
