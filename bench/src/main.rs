//! `crier-bench`: a load generator for Crier and its peers (Nchan). It holds
//! many SSE subscribers in worker processes, publishes stamped messages at a
//! set rate, and reports deliveries/s, end-to-end latency, loss, duplicates,
//! reordering and server memory per connection.
//!
//! # Layout
//! - [`config`]: the command line.
//! - [`coordinator`]: starts the workers, publishes, merges their reports.
//! - [`worker`] + [`subscriber`]: one process's share of the SSE subscribers.
//! - [`publisher`]: paced POSTs over keep-alive connections.
//! - [`http`], [`sse`]: incremental parsers; [`tracker`]: loss accounting.
//! - [`target`]: URL/body templates and channel ids; [`memory`], [`cpu`]: `/proc`.
//! - [`wire`]: the JSON lines between coordinator and workers; [`report`]: output.

mod config;
mod coordinator;
mod cpu;
mod http;
mod memory;
mod publisher;
mod report;
mod sse;
mod subscriber;
mod target;
mod tracker;
mod wire;
mod worker;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    if let Some(config::Command::Worker { spec }) = cli.command {
        return match worker::main(&spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crier-bench worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = cli.run;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crier-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(coordinator::run(&args)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("crier-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("crier-bench: cannot encode the report: {e}"),
    }
    eprint!("{}", report.summary());
    let failed = report.connect_failed > 0 || (args.assert_lossless && !report.lossless);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
