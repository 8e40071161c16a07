//! `cargo xtask image`: site-sync's container image built here, with podman, without pulling
//! anything: the Containerfile's final stage, on a base assembled from Debian packages (the
//! files of libc6 and libgcc-s1, the CA bundle of ca-certificates, a non-root user) instead of
//! the registry's distroless image that the Containerfile names.
//!
//! podman needs, on these machines, the flags of `PODMAN`: no overlay mounts (vfs), runc with
//! cgroupfs on a hybrid cgroup layout, rlimits under the VM's hard limits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::dist::{Build, binary};
use crate::project_root;

/// The image's name, as CI and the docs use it.
pub const NAME: &str = "localhost/site-sync";

/// podman with the flags that work here (../shared/reference/containers.md).
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--storage-driver", "vfs"]);
    command
}

/// `podman run`'s flags for these machines, then the image's own: non-root, read-only root
/// filesystem, the host's network (the servers are on 127.0.0.1).
pub fn run_flags() -> Vec<String> {
    ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "run", "--rm", "--network", "host"]
        .iter()
        .chain(&["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", "--read-only", "--user", "65532:65532"])
        .map(|s| (*s).to_owned())
        .collect()
}

/// `cargo xtask image [--tested]`.
pub fn image(args: &[&str]) -> Result<()> {
    let build = match args {
        [] => Build::Release,
        ["--tested"] => Build::Tested,
        _ => bail!("usage: cargo xtask image [--tested]"),
    };
    let tag = build_image(build)?;
    check(&tag)?;
    Ok(())
}

/// Debian packages whose files make the base: what distroless/cc-debian12 holds.
const BASE_PACKAGES: [&str; 2] = ["libc6", "libgcc-s1"];

/// The base's root filesystem, assembled once under target/image/rootfs.
fn rootfs() -> Result<PathBuf> {
    let dir = project_root().join("target/image");
    let root = dir.join("rootfs");
    let marker = dir.join("rootfs.done");
    if marker.exists() {
        return Ok(root);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    let status = Command::new("apt-get")
        .arg("download")
        .args(BASE_PACKAGES)
        .current_dir(&debs)
        .status()
        .context("apt-get is needed to fetch the base's Debian packages")?;
    if !status.success() {
        bail!("apt-get download {} failed (run `apt-get update` first?)", BASE_PACKAGES.join(" "));
    }
    std::fs::create_dir_all(&root)?;
    for deb in std::fs::read_dir(&debs)?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "deb")) {
        let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status()?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
    }
    // The CA bundle ca-certificates' postinst generates from its certificates (the host's, from
    // the same package), a user and group for 65532, and a writable /tmp.
    let certs = root.join("etc/ssl/certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", certs.join("ca-certificates.crt"))
        .context("the CA bundle of Debian's ca-certificates is needed (apt-get install ca-certificates)")?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n")?;
    for dir in ["tmp", "home/nonroot"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    // What the image does not need: documentation and locales.
    for unneeded in ["usr/share/doc", "usr/share/lintian", "usr/share/locale"] {
        let _ = std::fs::remove_dir_all(root.join(unneeded));
    }
    std::fs::write(&marker, "")?;
    Ok(root)
}

/// The Containerfile's final stage with its `COPY --from=build` lines taken from the local
/// context: the same instructions, on the local base.
fn final_stage(containerfile: &str) -> Result<String> {
    let lines: Vec<&str> = containerfile.lines().collect();
    let start = lines.iter().rposition(|l| l.starts_with("FROM ")).context("no FROM in the Containerfile")?;
    let mut out = vec!["FROM scratch".to_owned(), "COPY rootfs/ /".to_owned()];
    for line in &lines[start + 1..] {
        match line.strip_prefix("COPY --from=build ") {
            Some(rest) => {
                let target = rest.split_whitespace().last().context("a COPY without a target")?;
                let name = Path::new(target).file_name().and_then(|n| n.to_str()).context("a COPY target without a name")?;
                out.push(format!("COPY {name} {target}"));
            }
            None => out.push((*line).to_owned()),
        }
    }
    Ok(out.join("\n") + "\n")
}

/// Builds the image from `build`'s binary; its tag.
pub fn build_image(build: Build) -> Result<String> {
    let started = Instant::now();
    let (binary, _) = binary(build)?;
    let root = rootfs()?;
    let context = project_root().join("target/image/context");
    if context.exists() {
        std::fs::remove_dir_all(&context)?;
    }
    std::fs::create_dir_all(&context)?;
    let status = Command::new("cp").arg("-a").arg(&root).arg(context.join("rootfs")).status()?;
    if !status.success() {
        bail!("cannot copy the base's root filesystem");
    }
    std::fs::copy(&binary, context.join("site-sync"))?;
    if build == Build::Tested {
        let status = Command::new("strip").args(["--strip-debug"]).arg(context.join("site-sync")).status()?;
        if !status.success() {
            bail!("strip failed");
        }
    }
    let containerfile = std::fs::read_to_string(project_root().join("Containerfile"))?;
    std::fs::write(context.join("Containerfile"), final_stage(&containerfile)?)?;
    let tag = format!("{NAME}:{}", if build == Build::Tested { "test" } else { "latest" });
    let status = podman()
        .args(["build", "--quiet", "-t", &tag])
        .arg(&context)
        .status()
        .context("podman is needed (Debian: apt-get install podman runc uidmap)")?;
    if !status.success() {
        bail!("podman build failed");
    }
    let size =
        Command::new("podman").args(["--storage-driver", "vfs", "image", "inspect", "--format", "{{.Size}}", &tag]).output()?;
    let bytes: f64 = String::from_utf8_lossy(&size.stdout).trim().parse().unwrap_or(0.0);
    eprintln!("image: {tag} built in {:.0} s, {:.1} MiB", started.elapsed().as_secs_f64(), bytes / 1_048_576.0);
    Ok(tag)
}

/// Runs the image as it will run in a cluster (non-root, read-only root filesystem): its
/// `--version`, and how long it takes to answer.
pub fn check(tag: &str) -> Result<()> {
    let started = Instant::now();
    let output = podman().args(run_flags()).arg(tag).arg("--version").output()?;
    if !output.status.success() {
        bail!("the image's --version failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    eprintln!(
        "image: {} answered `--version` ({}) in {:.2} s, as user 65532 on a read-only root filesystem",
        tag,
        String::from_utf8_lossy(&output.stdout).trim(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::final_stage;

    #[test]
    fn the_final_stage_copies_from_the_local_context() {
        let file = "FROM rust AS build\nRUN cargo build\n\nFROM gcr.io/distroless/cc-debian12:nonroot\nCOPY --from=build /src/target/dist/site-sync /usr/local/bin/site-sync\nUSER 65532:65532\nENTRYPOINT [\"/usr/local/bin/site-sync\"]\n";
        assert_eq!(
            final_stage(file).unwrap(),
            "FROM scratch\nCOPY rootfs/ /\nCOPY site-sync /usr/local/bin/site-sync\nUSER 65532:65532\nENTRYPOINT [\"/usr/local/bin/site-sync\"]\n"
        );
    }
}
