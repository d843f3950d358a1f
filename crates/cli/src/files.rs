//! Reading a tenant export from disk: a folder (every `*.json` below it) or one file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use gatehouse_policy::SourceFile;

use crate::Failure;

/// Refuse files larger than this: a tenant export file is kilobytes, not gigabytes.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// How deep a tenant folder may nest (also stops symlink loops).
const MAX_DEPTH: usize = 16;

pub fn read_tenant(path: &Path) -> Result<Vec<SourceFile>, Failure> {
    let meta = fs::metadata(path)
        .map_err(|e| Failure::input(format!("cannot read tenant `{}`: {e}", path.display())))?;
    let mut found = Vec::new();
    if meta.is_dir() {
        collect(path, 0, &mut found)?;
        found.sort();
        if found.is_empty() {
            return Err(Failure::input(format!(
                "no *.json files under `{}`",
                path.display()
            )));
        }
    } else {
        found.push(path.to_path_buf());
    }
    found
        .into_iter()
        .map(|file| {
            let name = if meta.is_dir() {
                file.strip_prefix(path)
                    .unwrap_or(&file)
                    .display()
                    .to_string()
            } else {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            Ok(SourceFile {
                name,
                bytes: read_limited(&file)?,
            })
        })
        .collect()
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::input(format!(
            "`{}` nests deeper than {MAX_DEPTH} folders",
            dir.display()
        )));
    }
    let entries = fs::read_dir(dir)
        .map_err(|e| Failure::input(format!("cannot list `{}`: {e}", dir.display())))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Failure::input(format!("cannot list `{}`: {e}", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Failure::input(format!("cannot read `{}`: {e}", path.display())))?;
        if kind.is_dir() {
            collect(&path, depth + 1, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            out.push(path);
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
        let file = fs::File::open(source)
            .map_err(|e| Failure::input(format!("cannot read request `{source}`: {e}")))?;
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::input(format!("cannot read request `{source}`: {e}")))?;
    }
    if bytes.len() > limit {
        return Err(Failure::input(format!(
            "the request is larger than {} KiB",
            limit / 1024
        )));
    }
    Ok(bytes)
}
