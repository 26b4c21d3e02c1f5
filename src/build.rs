//! The commit the binary is built from, for `--version` and `fapigate_build_info`: from
//! `FAPIGATE_REVISION` when the build sets it (a tarball has no git), else from git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FAPIGATE_REVISION");
    let revision = std::env::var("FAPIGATE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FAPIGATE_REVISION={revision}");
}

/// The commit of this package's own checkout; none when the package is not the top of a git
/// work tree (a tarball, or vendored inside another project's repository, whose commit would
/// be the wrong one).
fn from_git() -> Option<String> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        output.status.success().then(|| text.trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    if root.join(".git/HEAD").is_file() {
        // A new commit or checkout rebuilds the revision.
        println!("cargo:rerun-if-changed=.git/HEAD");
        println!("cargo:rerun-if-changed=.git/refs/heads");
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
