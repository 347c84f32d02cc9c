//! `mock-upstream --listen 127.0.0.1:0`: the scriptable mock upstream as a process, for suites in other languages
//! (docs/test-contract.md). Prints `mock-upstream listening on 127.0.0.1:PORT` once bound, then serves the OpenAI Chat,
//! OpenAI Responses, Anthropic and Gemini surfaces and the `/_mock/` control API until SIGTERM or Ctrl-C (exit 0).
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use xai_tests::mock::MockUpstream;

const USAGE: &str = "usage: mock-upstream [--listen ADDR]   (default 127.0.0.1:0)";

fn parse_listen() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = String::from("127.0.0.1:0");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            s if s.starts_with("--listen=") => listen = s["--listen=".len()..].to_owned(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    listen.parse().map_err(|e| format!("bad --listen {listen:?}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match parse_listen() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("mock-upstream: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mock = match MockUpstream::bind(addr).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("mock-upstream: cannot bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("mock-upstream listening on {}", mock.addr());
    let _ = std::io::stdout().flush();

    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mock-upstream: cannot listen for SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(mock);
    ExitCode::SUCCESS
}
