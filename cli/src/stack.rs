//! The local stack as the CLI sees it: `local/up` run from the checkout, its environment parsed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The checkout's `local/` folder: found from the working directory upwards, else next to the
/// crate this binary was built from.
pub fn local_dir() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok();
    while let Some(d) = dir {
        if d.join("local/up").is_file() {
            return Some(d.join("local"));
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../local");
    built_from.join("up").is_file().then_some(built_from)
}

/// What `local/up` reported.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    /// The `export` lines, as a map.
    pub env: BTreeMap<String, String>,
    /// Whether every service was already running (so `dev` must not stop them at exit).
    pub was_running: bool,
}

/// Runs `local/up` (installing what is missing) and reads its environment.
pub fn up() -> Result<Stack, crate::error::Error> {
    use crate::error::Error;
    let local = local_dir().ok_or_else(|| {
        Error::Stack("cannot find local/up: run spillway from a spillway checkout".into())
    })?;
    let out = Command::new(local.join("up"))
        .output()
        .map_err(|e| Error::Stack(format!("cannot run {}: {e}", local.join("up").display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(Error::Stack(format!("local/up failed:\n{stderr}")));
    }
    let env = parse_exports(&String::from_utf8_lossy(&out.stdout));
    let was_running = !stderr.contains(": starting ");
    Ok(Stack { env, was_running })
}

/// Stops the stack (`local/down`).
pub fn down() {
    if let Some(local) = local_dir() {
        let _ = Command::new(local.join("down")).status();
    }
}

/// `export KEY=value` lines → a map.
pub fn parse_exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_read_and_other_lines_ignored() {
        let env = parse_exports("export A=1\nnoise\nexport B=x=y\n");
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(env.len(), 2);
    }
}
