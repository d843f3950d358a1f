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
    let mut text = String::new();
    match args.format {
        Format::Json => {
            let list = |d: &[Diagnostic]| d.iter().map(Diagnostic::to_json).collect::<Vec<_>>();
            let out = json!({
                "policies": policies,
                "namedLocations": locations,
                "errors": list(&errors),
                "warnings": list(&warnings),
            });
            text = serde_json::to_string_pretty(&out).unwrap_or_default() + "\n";
        }
        Format::Text => {
            for e in &errors {
                text += &format!("error[{}]: {e}\n", e.code.as_str());
            }
            for w in &warnings {
                text += &format!("warning[{}]: {w}\n", w.code.as_str());
            }
            text += &if errors.is_empty() {
                format!(
                    "ok: {policies} policies, {locations} named locations, {} warnings\n",
                    warnings.len()
                )
            } else {
                format!("refused: {} errors, {} warnings\n", errors.len(), warnings.len())
            };
        }
    }
    crate::emit(&text)?;
    let failed = !errors.is_empty() || (args.deny_warnings && !warnings.is_empty());
    Ok(if failed { 1 } else { 0 })
}
