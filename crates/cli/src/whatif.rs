//! `gatehouse whatif`: one sign-in (`--request`) or many (`--cases`) against a tenant export.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use gatehouse_policy::{Case, SignInRequest, Snapshot, json, run_case};

use crate::{Failure, Format, files};

#[derive(clap::Args)]
#[command(
    group(clap::ArgGroup::new("input").required(true).args(["request", "cases"])),
    after_help = "A cases file is JSON Lines: one case per line, each {\"name\", \"request\", \"expect\": {\"applies\": [policy ids], \"exact\": bool, \"blocked\": bool}}. A line with only a request is run and not checked. See examples/contoso/cases.jsonl.\n\nExit codes: 0 success (whatever the outcome of the sign-in); 1 a case failed; 2 bad input."
)]
pub struct Args {
    /// A tenant export: a folder (every *.json below it) or one JSON file.
    #[arg(long)]
    tenant: PathBuf,
    /// The body of Graph POST /identity/conditionalAccess/evaluate, from a file or `-` for stdin.
    #[arg(long)]
    request: Option<String>,
    /// A JSON Lines file of cases (`{"name", "request", "expect"}` or bare requests): one result line each.
    #[arg(long)]
    cases: Option<PathBuf>,
    /// `text` is for people; `json` prints the Graph response (with --request) or one JSON
    /// object per case (with --cases).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(args: &Args) -> Result<u8, Failure> {
    let sources = files::read_tenant(&args.tenant)?;
    let loaded = gatehouse_policy::load(&sources).map_err(|e| Failure {
        code: 2,
        lines: e
            .errors
            .iter()
            .map(|d| d.to_string())
            .chain([format!(
                "the tenant was refused ({}): nothing was evaluated",
                plural(e.errors.len(), "error")
            )])
            .collect(),
    })?;
    let snapshot = Snapshot::compile(&loaded.tenant);
    match (&args.request, &args.cases) {
        (Some(source), _) => one(&snapshot, source, args.format),
        (None, Some(path)) => many(&snapshot, path, args.format),
        (None, None) => Err(Failure::input("give --request FILE|- or --cases FILE.jsonl")),
    }
}

fn one(snapshot: &Snapshot, source: &str, format: Format) -> Result<u8, Failure> {
    let bytes = files::read_request(source)?;
    let label =
        if source == "-" { "request (stdin)".to_owned() } else { format!("request `{source}`") };
    let value = json::decode_text(&bytes).and_then(|t| json::parse(&t)).map_err(|e| {
        let hint = if e.contains("trailing characters") {
            " (several JSON documents: a file of cases goes to --cases)"
        } else {
            ""
        };
        Failure::input(format!("{label}: {e}{hint}"))
    })?;
    let request = SignInRequest::from_json(&value)
        .map_err(|e| Failure::input(format!("{label}: {}: {}", e.path, e.message)))?;
    let eval = snapshot.evaluate(&request);
    for n in &eval.notices {
        eprintln!("note: {n}");
    }
    match format {
        Format::Json => crate::emit(
            &(serde_json::to_string_pretty(&eval.to_graph_json()).unwrap_or_default() + "\n"),
        )?,
        Format::Text => crate::emit(&eval.to_text())?,
    }
    Ok(0)
}

fn many(snapshot: &Snapshot, path: &PathBuf, format: Format) -> Result<u8, Failure> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(Failure::input(format!(
            "cases `{}` is not a readable regular file",
            path.display()
        )));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::input(format!("cannot read cases `{}`: {e}", path.display())))?;
    let name = path.display().to_string();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut passed, mut failed, mut unchecked) = (0usize, 0usize, 0usize);
    let mut reader = BufReader::new(file);
    let limit = gatehouse_policy::request::MAX_REQUEST_BYTES;
    let mut buf = Vec::new();
    for n in 1.. {
        // Read at most one request's worth per line: a huge line must not exhaust memory.
        buf.clear();
        let read = (&mut reader)
            .take(limit as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| Failure::input(format!("{name}:{n}: {e}")))?;
        if read == 0 {
            break;
        }
        if buf.len() > limit {
            return Err(Failure::input(format!(
                "{name}:{n}: the line is longer than {} KiB",
                limit / 1024
            )));
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|_| Failure::input(format!("{name}:{n}: not valid UTF-8")))?;
        let line = line.trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let value = json::parse(line).map_err(|e| {
            Failure::input(format!(
                "{name}:{n}: {e} (a cases file is JSON Lines: one whole case per line)"
            ))
        })?;
        let case = Case::from_json(&value, n)
            .map_err(|e| Failure::input(format!("{name}:{n}: {}: {}", e.path, e.message)))?;
        let result = run_case(snapshot, &case);
        for note in &result.notices {
            eprintln!("note: {name}:{n}: {note}");
        }
        match (result.checked, result.passed()) {
            (false, _) => unchecked += 1,
            (true, true) => passed += 1,
            (true, false) => failed += 1,
        }
        let written = match format {
            Format::Json => writeln!(out, "{}", result.to_json()),
            Format::Text if !result.checked => {
                writeln!(
                    out,
                    "RAN   {} (no expectations; outcome: {})",
                    result.name, result.outcome
                )
            }
            Format::Text if result.passed() => writeln!(out, "PASS  {}", result.name),
            Format::Text => {
                writeln!(out, "FAIL  {} — {}", result.name, result.failures.join("; "))
            }
        };
        match written {
            Ok(()) => {}
            // The reader went away (`| head`): stop quietly with what was decided so far.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(u8::from(failed > 0));
            }
            Err(e) => return Err(Failure::input(format!("cannot write output: {e}"))),
        }
    }
    if passed + failed + unchecked == 0 {
        return Err(Failure::input(format!("{name}: no cases in the file")));
    }
    if unchecked > 0 {
        eprintln!("{passed} passed, {failed} failed, {unchecked} not checked");
    } else {
        eprintln!("{passed} passed, {failed} failed");
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}
