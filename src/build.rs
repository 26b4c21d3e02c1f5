//! The commit the binary is built from, for `--version` and `fapigate_build_info`: from
//! `FAPIGATE_REVISION` when the build sets it (a tarball has no git), else from git.

fn main() {
    println!("cargo:rerun-if-env-changed=FAPIGATE_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let revision = std::env::var("FAPIGATE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let output = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            let text = String::from_utf8(output.stdout).ok()?;
            output.status.success().then(|| text.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FAPIGATE_REVISION={revision}");
}
