//! Gives the `taskplane` binary the commit it was built from, for
//! `taskplane --version`: `git rev-parse --short=12 HEAD`, or `unknown`
//! when the source is not a git checkout (a crate tarball, say).

use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TASKPLANE_COMMIT={commit}");
    // Built again when HEAD moves: a new commit (a branch file under
    // refs/heads, or packed-refs in a fresh clone), or another branch. Only
    // paths that exist are watched: cargo reruns the script on every build
    // for one that does not.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for file in ["HEAD", "packed-refs", "refs/heads"] {
            let path = std::path::Path::new(&git_dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// What git prints for `args`, trimmed; `None` when git fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let printed = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !printed.trim().is_empty()).then(|| printed.trim().to_owned())
}
