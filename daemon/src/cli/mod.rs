//! Subcommands. Each lives in its own file and owns its flags.

mod analyze;
mod bench_model;
mod check;
mod dataset;
mod demo;
mod evaluate;
mod evaluate_quality;
mod forward;
mod phantom;
mod provision;
mod realism;
mod serve;

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
    /// Run the main job on an embedded default: a phantom study analysed end to end.
    Demo(demo::Args),
    /// Score the scan-quality checks (rings, scoliosis, clean studies) on held-out phantoms.
    EvaluateQuality(evaluate_quality::Args),
    /// Export CNN training samples (reformat images + keypoint targets) from phantoms.
    Dataset(dataset::Args),
    /// Measure accuracy on held-out phantoms (patient/vertebra AUC, recall, heights, levels).
    Evaluate(evaluate::Args),
    /// Render a synthetic CT study with exactly known anatomy and pathology.
    Phantom(Box<phantom::Args>),
    /// Create this box's identity (serial, key, CSR) and its config for the site.
    Provision(Box<provision::Args>),
    /// Validate a config, its certificates and keys, and C-ECHO every PACS.
    Check(check::Args),
    /// Run the appliance daemon: DICOM receiver, analysis queue, forwarding, status API.
    Serve(serve::Args),
    /// Queue DICOM files for every configured PACS and deliver them (daemon stopped).
    Forward(forward::Args),
    /// Time the keypoint network in tract, f32 and int8 (developer benchmark).
    #[command(hide = true)]
    BenchModel(bench_model::Args),
    /// Compare the phantom's HU statistics with a real CT (developer tool; writes PNGs).
    #[command(hide = true)]
    Realism(realism::Args),
}

/// Human-readable logs on stderr; the service switches to journald when it runs under systemd.
pub fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            // Dependencies (e.g. the JPEG 2000 decoder) chatter at info level per slice:
            // only their warnings and errors reach the operator.
            let ours = m.target().starts_with("vcfd");
            m.level() <= log::max_level() && (ours || m.level() <= log::Level::Warn)
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
    if vcfd::service::journal_requested() && vcfd::service::init_journal(level) {
        return;
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Dataset(a) => dataset::run(a),
        Command::Demo(a) => demo::run(a),
        Command::EvaluateQuality(a) => evaluate_quality::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::BenchModel(a) => bench_model::run(a),
        Command::Phantom(a) => phantom::run(*a),
        Command::Realism(a) => realism::run(a),
        Command::Provision(a) => provision::run(*a),
        Command::Check(a) => check::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Forward(a) => forward::run(a),
    }
}
