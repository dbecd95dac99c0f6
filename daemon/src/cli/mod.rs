//! Subcommands. Each lives in its own file and owns its flags.

mod analyze;
mod phantom;

use clap::{Parser, Subcommand};

/// vcfd: finds vertebral compression fractures in chest CT by morphometry.
#[derive(Debug, Parser)]
#[command(name = "vcfd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a CT series from DICOM files or folders, describe it, and analyse it.
    Analyze(analyze::Args),
    /// Render a synthetic CT study with exactly known anatomy and pathology.
    Phantom(phantom::Args),
}

/// Human-readable logs on stderr; the service switches to journald when it runs under systemd.
pub fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!("[{}] {}", r.level(), r.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = match std::env::var("VCFD_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Phantom(a) => phantom::run(a),
    }
}
