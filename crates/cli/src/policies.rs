//! `gatehouse policies check`: load, validate and lint a tenant export.

use std::path::PathBuf;

use gatehouse_policy::Diagnostic;
use serde_json::json;

use crate::{Failure, Format, files};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// A tenant export: a folder (every *.json below it) or one JSON file.
    #[arg(long)]
    tenant: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Exit 1 when there are warnings too (for CI gates).
    #[arg(long)]
    deny_warnings: bool,
}

pub fn check(args: &CheckArgs) -> Result<u8, Failure> {
    let sources = files::read_tenant(&args.tenant)?;
    let (policies, locations, errors, warnings) = match gatehouse_policy::load(&sources) {
        Ok(l) => (l.tenant.policies.len(), l.tenant.named_locations.len(), Vec::new(), l.warnings),
        Err(e) => (0, 0, e.errors, e.warnings),
    };
    match args.format {
        Format::Json => {
            let list = |d: &[Diagnostic]| d.iter().map(Diagnostic::to_json).collect::<Vec<_>>();
            let out = json!({
                "policies": policies,
                "namedLocations": locations,
                "errors": list(&errors),
                "warnings": list(&warnings),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Text => {
            for e in &errors {
                println!("error[{}]: {e}", e.code.as_str());
            }
            for w in &warnings {
                println!("warning[{}]: {w}", w.code.as_str());
            }
            if errors.is_empty() {
                println!(
                    "ok: {policies} policies, {locations} named locations, {} warnings",
                    warnings.len()
                );
            } else {
                println!("refused: {} errors, {} warnings", errors.len(), warnings.len());
            }
        }
    }
    let failed = !errors.is_empty() || (args.deny_warnings && !warnings.is_empty());
    Ok(if failed { 1 } else { 0 })
}
