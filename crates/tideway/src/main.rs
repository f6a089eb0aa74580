//! `tideway`: the command line. Wiring only: each command parses its arguments, opens the
//! project and calls into the library crates.

mod bench;
mod bench_collect;
mod bench_forward;
mod bench_kafka;
mod bench_load;
mod bench_profile;
mod bench_sync;
mod cli;
mod demo;
mod demo_extract;
mod demo_models;
mod demo_streams;
mod demo_sync;
mod demo_traffic;
mod demo_unify;
mod extract;
mod models;
mod output;
mod profile_api;
mod project;
mod scaffold;
mod sync;
mod tail;
mod unify;

use std::process::ExitCode;

/// mimalloc: the loader allocates many small strings per event; glibc's allocator spent a
/// quarter of the collector's CPU in malloc/free and fragmented (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            if let Some(hint) = cli::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The whole cause chain, each cause once: a cause whose text the message already holds
/// (DataFusion's errors repeat their inner error in their own text) is not printed again.
fn chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn init_tracing(verbose: u8) {
    // deltalake warns on every commit of a table with a binary column (the sync state's
    // hashes) that it keeps no statistics for it: expected, and nothing to act on.
    let default = match verbose {
        0 => "warn,deltalake_core::operations::merge=error,deltalake_core::writer::stats=error",
        1 => "info,deltalake=warn,datafusion=warn,deltalake_core::writer::stats=error",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
