//! Reading a tenant export from disk: a folder (every `*.json` below it) or one file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use gatehouse_policy::SourceFile;

use crate::Failure;

/// Refuse files larger than this: a tenant export file is kilobytes, not gigabytes.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// And a whole tenant larger than this (parsed JSON takes several times its size in memory).
const MAX_TENANT_BYTES: u64 = 256 * 1024 * 1024;
/// How deep a tenant folder may nest (also stops symlink loops).
const MAX_DEPTH: usize = 16;

pub fn read_tenant(path: &Path) -> Result<Vec<SourceFile>, Failure> {
    let meta = fs::metadata(path)
        .map_err(|e| Failure::input(format!("cannot read tenant `{}`: {e}", path.display())))?;
    let mut found = Vec::new();
    if meta.is_dir() {
        let mut seen = std::collections::HashSet::new();
        collect(path, 0, &mut found, &mut seen)?;
        found.sort();
        if found.is_empty() {
            return Err(Failure::input(format!("no *.json files under `{}`", path.display())));
        }
    } else if meta.is_file() {
        found.push(path.to_path_buf());
    } else {
        return Err(Failure::input(format!(
            "`{}` is neither a folder nor a regular file",
            path.display()
        )));
    }
    let mut total = 0u64;
    found
        .into_iter()
        .map(|file| {
            total += fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if total > MAX_TENANT_BYTES {
                return Err(Failure::input(format!(
                    "the tenant is larger than {} MiB",
                    MAX_TENANT_BYTES / 1024 / 1024
                )));
            }
            let name = if meta.is_dir() {
                file.strip_prefix(path).unwrap_or(&file).display().to_string()
            } else {
                file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            };
            Ok(SourceFile { name, bytes: read_limited(&file)? })
        })
        .collect()
}

/// Every `*.json` below `dir`, following symbolic links (a linked folder of policies must not
/// be skipped silently), each real file once, and only regular files (a FIFO would hang).
fn collect(
    dir: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
    seen: &mut std::collections::HashSet<PathBuf>,
) -> Result<(), Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::input(format!(
            "`{}` nests deeper than {MAX_DEPTH} folders (a symbolic link loop?)",
            dir.display()
        )));
    }
    let entries = fs::read_dir(dir)
        .map_err(|e| Failure::input(format!("cannot list `{}`: {e}", dir.display())))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Failure::input(format!("cannot list `{}`: {e}", dir.display())))?;
        let path = entry.path();
        let meta = fs::metadata(&path)
            .map_err(|e| Failure::input(format!("cannot read `{}`: {e}", path.display())))?;
        if meta.is_dir() {
            // Each real folder once: links fanning out to the same folders would otherwise
            // make the walk exponential.
            let real = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.insert(real) {
                collect(&path, depth + 1, out, seen)?;
            }
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            if !meta.is_file() {
                return Err(Failure::input(format!("`{}` is not a regular file", path.display())));
            }
            let real = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.insert(real) {
                out.push(path);
            }
        }
    }
    Ok(())
}

pub fn read_limited(path: &Path) -> Result<Vec<u8>, Failure> {
    let file = fs::File::open(path)
        .map_err(|e| Failure::input(format!("cannot read `{}`: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::input(format!("cannot read `{}`: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Failure::input(format!(
            "`{}` is larger than {} MiB",
            path.display(),
            MAX_FILE_BYTES / 1024 / 1024
        )));
    }
    Ok(bytes)
}

/// Reads a request from a file or `-` (stdin), with the same size limit as the API.
pub fn read_request(source: &str) -> Result<Vec<u8>, Failure> {
    let limit = gatehouse_policy::request::MAX_REQUEST_BYTES;
    let mut bytes = Vec::new();
    if source == "-" {
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::input(format!("cannot read the request from stdin: {e}")))?;
    } else {
        if !fs::metadata(source).is_ok_and(|m| m.is_file()) {
            return Err(Failure::input(format!(
                "request `{source}` is not a readable regular file"
            )));
        }
        let file = fs::File::open(source)
            .map_err(|e| Failure::input(format!("cannot read request `{source}`: {e}")))?;
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::input(format!("cannot read request `{source}`: {e}")))?;
    }
    if bytes.len() > limit {
        return Err(Failure::input(format!("the request is larger than {} KiB", limit / 1024)));
    }
    Ok(bytes)
}
