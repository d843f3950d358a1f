//! Finding `../shared`, loading tenants from disk, running the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use gatehouse_policy::{Loaded, SourceFile};

pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The shared scenarios and corpus beside the repository, or `None` (and a note) when absent:
/// a fresh clone passes `cargo test` alone.
pub fn shared(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GATEHOUSE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    let dir = dir.canonicalize().unwrap_or(dir);
    if dir.join("scenarios").is_dir() {
        Some(dir)
    } else {
        let note = format!(
            "skipped {test}: no shared folder at {} (set GATEHOUSE_SHARED_DIR)\n",
            dir.display()
        );
        // The harness captures eprintln! of passing tests, but not writes to the stderr handle
        // itself: a skip must be seen.
        use std::io::Write;
        let _ = std::io::stderr().write_all(note.as_bytes());
        None
    }
}

/// Every `*.json` under `dir` (or the file itself), named relative to it, sorted.
pub fn sources(path: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    if path.is_file() {
        files.push(path.to_path_buf());
    } else {
        walk(path, &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|f| SourceFile {
            name: f.strip_prefix(path).unwrap_or(&f).display().to_string(),
            bytes: std::fs::read(&f).unwrap(),
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

pub fn load(path: &Path) -> Loaded {
    gatehouse_policy::load(&sources(path))
        .unwrap_or_else(|e| panic!("{} should load: {e}", path.display()))
}

pub fn gatehouse(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.args(args).current_dir(repo_root());
    match stdin {
        None => cmd.output().unwrap(),
        Some(input) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // The child may exit before reading everything (a size limit); that is fine.
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
            child.wait_with_output().unwrap()
        }
    }
}

/// A fresh scratch folder under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
