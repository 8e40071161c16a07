//! `cargo xtask tidy`: the architecture's rooms, checked mechanically (ARCHITECTURE.md,
//! "Invariants"). Clippy's print lints cover "only sync-cli prints" inside each crate; this covers
//! what no lint sees: which crate may depend on what, which TLS stack is built, and what the
//! README promises on its first lines.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, project_root};

/// Direct dependencies only these workspace crates may declare (any section; see
/// [`TEST_CLIENTS`] for the one exception).
const OWNED_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("kube", &["keycloak-scale"]),
    // sync-cli picks the Kubernetes API version feature; nothing else may use the types.
    ("k8s-openapi", &["keycloak-scale", "sync-cli"]),
    ("reqwest", &["ispn-xsite"]),
    // The fakes' servers, and `site-sync watch`'s /metrics.
    ("axum", &["fake-ispn", "keycloak-scale", "sync-cli"]),
];

/// Dev-dependencies a test binary may use to drive a real server other than Infinispan: sync-cli's
/// Keycloak suite talks to Keycloak's HTTP API with reqwest. Product code still cannot.
const TEST_CLIENTS: &[(&str, &str)] = &[("reqwest", "sync-cli")];

/// Features of a workspace crate that only test and harness builds may enable: the stand-in
/// Keycloak Operator is a test double, never part of the shipped binary (the `fake` API server
/// is, for the demo).
const TEST_ONLY_FEATURES: &[(&str, &str)] = &[("keycloak-scale", "standin")];

/// Packages that must never be built: the TLS stack is rustls on aws-lc-rs, and the one YAML
/// parser is serde-saphyr (kube's).
const FORBIDDEN_PACKAGES: &[&str] = &["ring", "openssl", "openssl-sys", "native-tls", "serde_yaml", "serde_yml", "yaml-rust"];

/// What sync-core's build (normal dependencies, its own features) must not contain: it does no IO.
const IO_PACKAGES: &[&str] = &["reqwest", "hyper", "hyper-util", "kube", "kube-client", "axum", "mio", "socket2"];

/// Source patterns that mean IO, forbidden in sync-core's sources.
const IO_PATTERNS: &[&str] =
    &["std::fs", "std::net", "std::process", "tokio::fs", "tokio::net", "tokio::process", "std::io::stdout"];

/// The README's first fenced block: exactly these two commands, in this order.
const README_COMMANDS: [&str; 2] = ["cargo run -p sync-cli -- demo", "cargo xtask ci"];

pub fn tidy(args: &[&str]) -> Result<()> {
    if !args.is_empty() {
        bail!("tidy takes no arguments");
    }
    let mut problems = Vec::new();

    let metadata = command_output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let metadata: Value = serde_json::from_str(&metadata).context("cargo metadata printed something that is not JSON")?;
    problems.extend(dependency_rooms(&metadata));

    let whole_tree =
        command_output(cargo().args(["tree", "--workspace", "--target", "all", "-e", "normal,build,dev", "--prefix", "none"]))?;
    problems.extend(forbidden_packages(&whole_tree, FORBIDDEN_PACKAGES, "the workspace"));

    let core_tree = command_output(cargo().args(["tree", "-p", "sync-core", "-e", "normal", "--prefix", "none"]))?;
    problems.extend(forbidden_packages(&core_tree, IO_PACKAGES, "sync-core (it does no IO)"));

    let core_src = project_root().join("crates/sync-core/src");
    for entry in std::fs::read_dir(&core_src).with_context(|| format!("cannot read {}", core_src.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)?;
            problems.extend(io_in_source(&path.display().to_string(), &text));
        }
    }

    problems.extend(module_layers(&core_src)?);
    problems.extend(xtask_cycles(&project_root().join("xtask/src"))?);

    let readme = std::fs::read_to_string(project_root().join("README.md")).context("cannot read README.md")?;
    problems.extend(readme_first_commands(&readme));

    if !problems.is_empty() {
        bail!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    eprintln!("tidy: rooms, TLS stack and README hold");
    Ok(())
}

fn command_output(command: &mut Command) -> Result<String> {
    let out = command.current_dir(project_root()).output().with_context(|| format!("cannot start {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn dependency_rooms(metadata: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        let test_client =
            |d: &Value| d["kind"] == "dev" && TEST_CLIENTS.iter().any(|(dep, user)| d["name"] == *dep && name == *user);
        let declared: BTreeSet<&str> = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| !test_client(d))
            .filter_map(|d| d["name"].as_str())
            .collect();
        for (dependency, owners) in OWNED_DEPENDENCIES {
            if declared.contains(dependency) && !owners.contains(&name) {
                problems.push(format!("{name} depends on {dependency}, which only {} may use", owners.join(" and ")));
            }
        }
        for dependency in package["dependencies"].as_array().into_iter().flatten().filter(|d| d["kind"].is_null()) {
            for (crate_name, feature) in TEST_ONLY_FEATURES {
                let enabled = dependency["features"].as_array().into_iter().flatten().any(|f| f == *feature);
                if dependency["name"] == *crate_name && enabled {
                    problems.push(format!(
                        "{name} enables {crate_name}'s `{feature}` feature in its normal dependencies; it is for tests only"
                    ));
                }
            }
        }
    }
    problems
}

/// `tree` is `cargo tree --prefix none` output: one `name vX.Y.Z ...` per line.
fn forbidden_packages(tree: &str, forbidden: &[&str], whose: &str) -> Vec<String> {
    let built: BTreeSet<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    forbidden.iter().filter(|p| built.contains(*p)).map(|p| format!("{whose} builds {p}")).collect()
}

fn io_in_source(file: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for pattern in IO_PATTERNS {
            if code.contains(pattern) {
                problems.push(format!("{file}:{}: sync-core uses {pattern}; IO belongs behind a port trait", number + 1));
            }
        }
    }
    problems
}

/// sync-core's modules form layers: `lib.rs` declares them in order, and each may use only the
/// ones declared before it. Without the rule, the vocabulary drifts back into the modules that
/// use it and they start importing each other.
fn module_layers(src: &std::path::Path) -> Result<Vec<String>> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).context("cannot read sync-core's lib.rs")?;
    let order = declared_modules(&lib);
    let mut problems = Vec::new();
    for (position, module) in order.iter().enumerate() {
        let path = src.join(format!("{module}.rs"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        problems.extend(upward_uses(module, &text, &order[position + 1..]));
    }
    Ok(problems)
}

/// The xtask's modules must not import each other in a circle: a harness (ispn, keycloak, kube)
/// never reaches for the suites that use it, which live in `e2e`, `bench` and `lab`.
fn xtask_cycles(src: &std::path::Path) -> Result<Vec<String>> {
    let main = std::fs::read_to_string(src.join("main.rs")).context("cannot read xtask's main.rs")?;
    let modules = declared_modules(&main);
    let mut uses = std::collections::BTreeMap::new();
    for module in &modules {
        let text = std::fs::read_to_string(src.join(format!("{module}.rs")))?;
        let code: String = text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        let used: Vec<&String> =
            modules.iter().filter(|other| *other != module && code.contains(&format!("crate::{other}::"))).collect();
        uses.insert(module.clone(), used);
    }
    Ok(cycles(&uses))
}

/// Each circle in a module graph, once, as `a -> b -> a`.
fn cycles(uses: &std::collections::BTreeMap<String, Vec<&String>>) -> Vec<String> {
    fn walk<'a>(
        at: &'a String,
        uses: &'a std::collections::BTreeMap<String, Vec<&'a String>>,
        path: &mut Vec<&'a String>,
        found: &mut BTreeSet<String>,
    ) {
        if let Some(start) = path.iter().position(|m| *m == at) {
            let mut circle: Vec<&String> = path[start..].to_vec();
            // The same circle from any of its modules is reported once, from its smallest name.
            let smallest = (0..circle.len()).min_by_key(|i| circle[*i]).unwrap_or(0);
            circle.rotate_left(smallest);
            let names: Vec<&str> = circle.iter().chain(circle.first()).map(|m| m.as_str()).collect();
            found.insert(format!("xtask's modules import each other in a circle: {}", names.join(" -> ")));
            return;
        }
        path.push(at);
        for next in uses.get(at).into_iter().flatten() {
            walk(next, uses, path, found);
        }
        path.pop();
    }
    let mut found = BTreeSet::new();
    for module in uses.keys() {
        walk(module, uses, &mut Vec::new(), &mut found);
    }
    found.into_iter().collect()
}

fn declared_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|l| l.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

/// Uses of `crate::<later>` in `module`'s code (comments aside), where `later` is declared after it.
fn upward_uses(module: &str, text: &str, later: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for other in later {
            if code.contains(&format!("crate::{other}::")) || code.contains(&format!("crate::{other};")) {
                problems.push(format!(
                    "sync-core/src/{module}.rs:{}: {module} uses {other}, which lib.rs declares after it; move the shared type down a layer",
                    number + 1
                ));
            }
        }
    }
    problems
}

fn readme_first_commands(readme: &str) -> Vec<String> {
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    if block == README_COMMANDS {
        return Vec::new();
    }
    vec![format!(
        "README's first code block must hold exactly `{}` then `{}`, found {block:?}",
        README_COMMANDS[0], README_COMMANDS[1]
    )]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_circle_of_modules_is_found_once() {
        let (a, b, c) = ("ispn".to_owned(), "keycloak".to_owned(), "kube".to_owned());
        let uses = std::collections::BTreeMap::from([(a.clone(), vec![&b]), (b.clone(), vec![&c]), (c.clone(), vec![&a])]);
        assert_eq!(cycles(&uses), ["xtask's modules import each other in a circle: ispn -> keycloak -> kube -> ispn"]);
        let acyclic = std::collections::BTreeMap::from([(a.clone(), vec![&b]), (b.clone(), vec![&c]), (c.clone(), vec![])]);
        assert!(cycles(&acyclic).is_empty());
    }

    #[test]
    fn a_crate_outside_the_room_using_kube_is_named() {
        let metadata = json!({"packages": [
            {"name": "keycloak-scale", "dependencies": [{"name": "kube"}]},
            {"name": "sync-core", "dependencies": [{"name": "kube"}, {"name": "serde"}]},
        ]});
        assert_eq!(dependency_rooms(&metadata), ["sync-core depends on kube, which only keycloak-scale may use"]);
        let tests = json!({"packages": [
            {"name": "sync-cli", "dependencies": [{"name": "reqwest", "kind": "dev"}]},
            {"name": "sync-core", "dependencies": [{"name": "reqwest", "kind": "dev"}]},
            {"name": "keycloak-scale", "dependencies": [{"name": "reqwest", "kind": null}]},
        ]});
        assert_eq!(
            dependency_rooms(&tests),
            [
                "sync-core depends on reqwest, which only ispn-xsite may use",
                "keycloak-scale depends on reqwest, which only ispn-xsite may use"
            ],
            "only sync-cli's tests may drive Keycloak with reqwest"
        );
    }

    #[test]
    fn the_stand_in_operator_stays_out_of_the_binary() {
        let metadata = json!({"packages": [
            {"name": "sync-cli", "dependencies": [
                {"name": "keycloak-scale", "kind": null, "features": ["fake", "standin"]},
            ]},
            {"name": "keycloak-scale", "dependencies": [
                {"name": "keycloak-scale", "kind": "dev", "features": ["fake", "standin"]},
            ]},
        ]});
        assert_eq!(
            dependency_rooms(&metadata),
            ["sync-cli enables keycloak-scale's `standin` feature in its normal dependencies; it is for tests only"]
        );
    }

    #[test]
    fn forbidden_packages_match_whole_names_only() {
        let tree = "ring v0.17.14\nringbuf v0.3.0\nrustls v0.23.1 (*)\n";
        assert_eq!(forbidden_packages(tree, &["ring", "openssl"], "x"), ["x builds ring"]);
        assert!(forbidden_packages("ringbuf v0.3.0\n", &["ring"], "x").is_empty());
    }

    #[test]
    fn io_in_sync_core_sources_is_found_but_comments_are_not() {
        let text = "use std::fs::File;\n// std::net is fine to mention in a comment\nlet x = 1;\n";
        assert_eq!(io_in_source("a.rs", text), ["a.rs:1: sync-core uses std::fs; IO belongs behind a port trait"]);
    }

    #[test]
    fn a_module_using_one_declared_after_it_is_named() {
        let order = declared_modules("pub mod vocabulary;\npub mod journal;\n\npub use journal::Journal;\nmod decide;\n");
        assert_eq!(order, ["vocabulary", "journal", "decide"]);
        let journal = "use crate::vocabulary::Step;\nuse crate::decide::{Action, Note};\n// crate::decide::x in a comment\n";
        assert_eq!(
            upward_uses("journal", journal, &order[2..]),
            [
                "sync-core/src/journal.rs:2: journal uses decide, which lib.rs declares after it; move the shared type down a layer"
            ]
        );
        assert!(upward_uses("decide", "use crate::journal::Journal;\n", &[]).is_empty());
    }

    #[test]
    fn sync_core_modules_form_layers() {
        let problems = module_layers(&project_root().join("crates/sync-core/src")).expect("sync-core sources");
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn the_readme_must_start_with_the_two_commands() {
        let good = "# site-sync\n\n```sh\ncargo run -p sync-cli -- demo   # demo\ncargo xtask ci  # tests\n```\n";
        assert!(readme_first_commands(good).is_empty());
        let extra = "```sh\ncargo run -p sync-cli -- demo\ncargo build\ncargo xtask ci\n```\n";
        assert_eq!(readme_first_commands(extra).len(), 1);
        assert_eq!(readme_first_commands("no code at all").len(), 1);
    }

    #[test]
    fn this_repository_passes_its_own_readme_check() {
        let readme = std::fs::read_to_string(project_root().join("README.md")).expect("README.md");
        assert_eq!(readme_first_commands(&readme), Vec::<String>::new());
    }
}
