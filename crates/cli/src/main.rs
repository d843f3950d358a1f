//! The `gatehouse` binary: the edge where files, stdin and exit codes live.
//!
//! Exit codes: 0 success; 1 the check or a case failed; 2 bad input (unreadable tenant, malformed
//! request, wrong arguments).

mod files;
mod policies;
mod server;
mod totp;
mod whatif;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Self-hosted Conditional Access, Temporary Access Pass and a Microsoft-Graph-compatible API",
    after_help = "Examples:\n  gatehouse serve --demo\n  gatehouse admin bootstrap --upn admin@example.test\n  gatehouse import --tenant path/to/export\n  gatehouse whatif --tenant examples/contoso/tenant --cases examples/contoso/cases.jsonl\n  gatehouse whatif --tenant examples/contoso/tenant --request signin.json --format json\n  gatehouse policies check --tenant path/to/export\n\nExit codes: 0 success; 1 a check or a case failed; 2 bad input.\nDocumentation: README.md and docs/ in the repository."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate sign-ins against a tenant export, exactly as Graph's conditionalAccess/evaluate.
    Whatif(whatif::Args),
    /// Work with Conditional Access policies.
    Policies {
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// Run the server: Graph API, sign-in, Conditional Access (SQLite in ./data by default).
    Serve(server::ServeArgs),
    /// Load a tenant export (the What-If format) into the store.
    Import(server::ImportArgs),
    /// Administration of the store.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Authenticator-app (TOTP) helpers.
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
}

#[derive(Subcommand)]
enum TotpCommand {
    /// Print the current six-digit code for a base32 secret (what an Authenticator app shows).
    Code(totp::CodeArgs),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make a user Global Administrator (creating them if needed) and print an API token once.
    Bootstrap(server::BootstrapArgs),
}

#[derive(Subcommand)]
enum PoliciesCommand {
    /// Load, validate and lint a tenant export.
    Check(policies::CheckArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// A failure to report on stderr, with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub lines: Vec<String>,
}

impl Failure {
    pub fn input(message: impl Into<String>) -> Self {
        Failure { code: 2, lines: vec![message.into()] }
    }
}

/// Writes to stdout. A reader that went away (`gatehouse … | head`) is not an error; anything
/// else is reported, never a panic.
pub fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::input(format!("cannot write output: {e}"))),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Whatif(args) => whatif::run(&args),
        Command::Policies { command: PoliciesCommand::Check(args) } => policies::check(&args),
        Command::Serve(args) => server::serve(&args),
        Command::Import(args) => server::import(&args),
        Command::Admin { command: AdminCommand::Bootstrap(args) } => server::bootstrap(&args),
        Command::Totp { command: TotpCommand::Code(args) } => totp::code(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            for line in &f.lines {
                eprintln!("error: {line}");
            }
            ExitCode::from(f.code)
        }
    }
}
