//! `cargo xtask mutants`: mutation testing of the procedure and the client with cargo-mutants
//! (pinned, installed once under target/tools). Every mutant of the listed files is built and
//! tested by the test binary of its crate; the simulation runs with fewer schedules so that a
//! mutant takes seconds, not a minute. Not part of CI: on 2 cores a full run takes hours.
//!
//! Writes the generated part of docs/mutants.md (between markers) from cargo-mutants' lists of
//! caught, missed, timed-out and unviable mutants; what to make of each missed mutant is written
//! by hand around it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root, run};

const VERSION: &str = "27.1.0";

/// The files under test, per crate, and the test packages that judge their mutants: the
/// procedure by sync-core's tests (rules, driver, simulation); the client by its own tests and
/// fake-ispn's contract suite, which drives the HTTP transport.
const GROUPS: [(&str, &[&str], &str); 3] = [
    ("procedure", &["crates/sync-core/src/decide.rs", "crates/sync-core/src/driver.rs"], "sync-core"),
    ("records", &["crates/sync-core/src/journal.rs", "crates/sync-core/src/compare.rs"], "sync-core"),
    (
        "client",
        &["crates/ispn-xsite/src/requests.rs", "crates/ispn-xsite/src/client.rs", "crates/ispn-xsite/src/model.rs"],
        "ispn-xsite,fake-ispn",
    ),
];

/// Tests left out of every mutant's run: the planted-fault proofs search up to 2,000 schedules for
/// a violation, which a mutant that breaks the procedure turns into minutes; the simulation's
/// own invariants judge those mutants.
const SKIPPED: [&str; 4] = [
    "sim::a_clear_that_reaches_the_active_site_is_caught",
    "sim::scaling_keycloak_up_before_the_push_is_caught",
    "sim::waits_nobody_announces_are_caught",
    "sim::a_run_that_outlives_its_deadlines_is_caught",
];

/// Schedules of the simulation per mutant (CI runs 10,000).
const SIM_CASES: &str = "400";

const OUTCOMES: [&str; 4] = ["caught", "missed", "timeout", "unviable"];

const BEGIN: &str = "<!-- cargo xtask mutants: results begin -->";
const END: &str = "<!-- cargo xtask mutants: results end -->";

fn tool() -> Result<PathBuf> {
    let root = project_root().join("target").join("tools");
    let binary = root.join("bin").join("cargo-mutants");
    let installed = Command::new(&binary).args(["mutants", "--version"]).output().ok().filter(|o| o.status.success());
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(VERSION)) {
        return Ok(binary);
    }
    eprintln!("installing cargo-mutants {VERSION} under {} (once)", root.display());
    run(cargo().args(["install", "cargo-mutants", "--version", VERSION, "--locked", "--root"]).arg(&root))?;
    Ok(binary)
}

/// `cargo xtask mutants [--only procedure|records|client] [--iterate]`: every group by default;
/// `--iterate` tests again only the mutants the last run did not catch (after new tests), and
/// keeps that run's caught and unviable ones in the lists.
pub fn mutants(args: &[&str]) -> Result<()> {
    let (mut only, mut iterate) = (None, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (*arg, rest.clone().next()) {
            ("--iterate", _) => iterate = true,
            ("--only", Some(group)) if GROUPS.iter().any(|(name, ..)| name == group) => {
                only = Some(*group);
                rest.next();
            }
            (other, _) => bail!("unknown argument {other:?} (mutants takes --only procedure|records|client and --iterate)"),
        }
    }
    let binary = tool()?;
    let started = Instant::now();
    for (name, files, tests) in GROUPS.iter().filter(|(name, ..)| only.is_none_or(|o| o == *name)) {
        let output = project_root().join("target").join("mutants").join(name);
        std::fs::create_dir_all(&output)?;
        let mut command = Command::new(&binary);
        // A mutant's tests take 2-12 s here; one that hangs a test is stopped (and counted) at 60 s.
        command.arg("mutants").arg("--output").arg(&output).args(["--timeout", "60", "--build-timeout", "900", "--no-shuffle"]);
        for file in *files {
            command.args(["--file", file]);
        }
        // Mutants are built in this tree, against its warm build: in a copy, the client group's
        // baseline alone took 17 min here (every dependency rebuilt), and its first mutant's build
        // passed the 15-min build timeout. The tree must not be edited while a run goes on.
        command.arg("--in-place");
        if iterate {
            let previous = output.join("mutants.out");
            std::fs::create_dir_all(&previous)?;
            skip_timeouts(&previous)?;
            // The previous run's baseline passed.
            command.args(["--iterate", "--baseline", "skip"]);
        }
        command.args(["--test-package", tests]).env("SITE_SYNC_SIM_CASES", SIM_CASES).current_dir(project_root());
        command.args(["--", "--"]).args(SKIPPED.iter().flat_map(|test| ["--skip", test]));
        eprintln!("$ {command:?}");
        // cargo-mutants exits non-zero when a mutant is missed; the lists say which.
        let status = command.status().context("cannot start cargo-mutants")?;
        if !output.join("mutants.out").join("caught.txt").exists() {
            bail!("cargo-mutants ended with {status} and wrote no results under {}", output.display());
        }
        if iterate {
            // The mutants of today's source: a mutant whose line moved since the last run was
            // tested again under its new name, and its old name must not count twice.
            let mut list = Command::new(&binary);
            list.args(["mutants", "--list"]).current_dir(project_root());
            for file in *files {
                list.args(["--file", file]);
            }
            let listed = list.output().context("cannot list the mutants")?;
            let current: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect();
            carry_over(&output.join("mutants.out.old"), &output.join("mutants.out"), &current)?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lists: Vec<PathBuf> =
        GROUPS.iter().map(|(name, ..)| project_root().join("target").join("mutants").join(name).join("mutants.out")).collect();
    let table = results(&lists, elapsed, iterate)?;
    write_results(&project_root().join("docs").join("mutants.md"), &table)?;
    eprintln!("mutants: done in {:.0} min; wrote docs/mutants.md", elapsed / 60.0);
    Ok(())
}

/// cargo-mutants' `--iterate` tests again what its lists do not call caught or unviable; a
/// mutant that hung the tests was noticed already, and would only hang them again for a minute.
fn skip_timeouts(results: &Path) -> Result<()> {
    let timeouts = std::fs::read_to_string(results.join("timeout.txt")).unwrap_or_default();
    let path = results.join("previously_caught.txt");
    let mut skipped = std::fs::read_to_string(&path).unwrap_or_default();
    skipped.push_str(&timeouts);
    std::fs::write(path, skipped)?;
    Ok(())
}

/// An iteration tests only what the previous run (kept by cargo-mutants as `mutants.out.old`)
/// did not catch; its caught, timed-out and unviable mutants still count, so they join the new
/// lists.
fn carry_over(previous: &Path, current: &Path, mutants_now: &BTreeSet<String>) -> Result<()> {
    for list in ["caught.txt", "timeout.txt", "unviable.txt"] {
        let old = std::fs::read_to_string(previous.join(list)).unwrap_or_default();
        let new = std::fs::read_to_string(current.join(list)).unwrap_or_default();
        let still_there = old.lines().filter(|l| mutants_now.contains(*l));
        let mut lines: Vec<&str> = still_there.chain(new.lines()).filter(|l| !l.trim().is_empty()).collect();
        lines.sort_unstable();
        lines.dedup();
        std::fs::write(current.join(list), lines.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    }
    Ok(())
}

/// A mutant line of cargo-mutants' lists: `crates/x/src/f.rs:12:5: replace ... with ...`.
fn file_of(line: &str) -> Option<&str> {
    line.split(':').next().filter(|f| f.ends_with(".rs"))
}

/// The generated part: per file, how many mutants of each outcome, the score, and every missed
/// or timed-out mutant by name.
fn results(lists: &[PathBuf], seconds: f64, iterate: bool) -> Result<String> {
    let mut counts: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut named: Vec<(&str, String)> = Vec::new();
    for (index, outcome) in OUTCOMES.iter().enumerate() {
        let text: String =
            lists.iter().map(|dir| std::fs::read_to_string(dir.join(format!("{outcome}.txt"))).unwrap_or_default()).collect();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some(file) = file_of(line) else { continue };
            counts.entry(file.to_owned()).or_default()[index] += 1;
            if matches!(*outcome, "missed" | "timeout") {
                named.push((outcome, line.to_owned()));
            }
        }
    }
    let mut out = format!(
        "Measured by `cargo xtask mutants` (cargo-mutants {VERSION}, the simulation at {SIM_CASES} schedules per mutant); the last run{} took {:.0} min on 2 cores.\n\n\
         | File | Caught | Missed | Timeout | Unviable | Caught of viable |\n|---|---|---|---|---|---|\n",
        if iterate { " (`--iterate`: only what the run before it did not catch)" } else { "" },
        seconds / 60.0
    );
    let mut total = [0usize; 4];
    for (file, c) in &counts {
        out.push_str(&format!("| `{file}` | {} | {} | {} | {} | {} |\n", c[0], c[1], c[2], c[3], score(c)));
        for (t, n) in total.iter_mut().zip(c) {
            *t += n;
        }
    }
    out.push_str(&format!("| all | {} | {} | {} | {} | {} |\n", total[0], total[1], total[2], total[3], score(&total)));
    if !named.is_empty() {
        out.push_str("\nNot caught (each is answered below):\n\n");
        for (outcome, line) in named {
            out.push_str(&format!("- {outcome}: `{line}`\n"));
        }
    }
    Ok(out)
}

/// Caught (timeouts included: a mutant that hangs the tests is noticed) of the viable mutants.
fn score(c: &[usize; 4]) -> String {
    let viable = c[0] + c[1] + c[2];
    if viable == 0 { "-".to_owned() } else { format!("{:.1}%", (c[0] + c[2]) as f64 * 100.0 / viable as f64) }
}

fn write_results(path: &Path, generated: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{generated}{END}");
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!("{}{block}{}", &existing[..begin], &existing[end + END.len()..]),
        _ => format!("# Mutation testing\n\n{block}\n"),
    };
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_per_file_and_the_missed_ones_named() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("caught.txt"),
            "crates/a/src/x.rs:1:1: replace f -> bool with true\ncrates/a/src/x.rs:2:1: delete !\n",
        )
        .unwrap();
        std::fs::write(dir.join("missed.txt"), "crates/a/src/x.rs:3:1: replace + with -\n").unwrap();
        std::fs::write(dir.join("unviable.txt"), "crates/b/src/y.rs:4:1: replace g -> Foo with Default::default()\n").unwrap();
        let table = results(std::slice::from_ref(&dir), 120.0, false).unwrap();
        assert!(table.contains("| `crates/a/src/x.rs` | 2 | 1 | 0 | 0 | 66.7% |"), "{table}");
        assert!(table.contains("| `crates/b/src/y.rs` | 0 | 0 | 0 | 1 | - |"), "{table}");
        assert!(table.contains("| all | 2 | 1 | 0 | 1 | 66.7% |"), "{table}");
        assert!(table.contains("- missed: `crates/a/src/x.rs:3:1: replace + with -`"), "{table}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_iteration_keeps_what_the_run_before_it_caught() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-iterate-{}", std::process::id()));
        let (old, new) = (dir.join("old"), dir.join("new"));
        for d in [&old, &new] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(old.join("caught.txt"), "a.rs:1:1: one\na.rs:2:1: two\n").unwrap();
        std::fs::write(old.join("unviable.txt"), "a.rs:3:1: three\n").unwrap();
        std::fs::write(old.join("timeout.txt"), "a.rs:6:1: six\n").unwrap();
        std::fs::write(new.join("caught.txt"), "a.rs:4:1: four\na.rs:1:1: one\n").unwrap();
        std::fs::write(new.join("missed.txt"), "a.rs:5:1: five\n").unwrap();
        skip_timeouts(&old).unwrap();
        assert_eq!(std::fs::read_to_string(old.join("previously_caught.txt")).unwrap(), "a.rs:6:1: six\n");
        // a.rs:2 moved to a.rs:4 since: tested again there, its old name is dropped.
        let now: BTreeSet<String> =
            ["a.rs:1:1: one", "a.rs:3:1: three", "a.rs:4:1: four", "a.rs:5:1: five", "a.rs:6:1: six"].map(str::to_owned).into();
        carry_over(&old, &new, &now).unwrap();
        assert_eq!(std::fs::read_to_string(new.join("caught.txt")).unwrap(), "a.rs:1:1: one\na.rs:4:1: four\n");
        assert_eq!(std::fs::read_to_string(new.join("unviable.txt")).unwrap(), "a.rs:3:1: three\n");
        assert_eq!(std::fs::read_to_string(new.join("missed.txt")).unwrap(), "a.rs:5:1: five\n");
        assert_eq!(std::fs::read_to_string(new.join("timeout.txt")).unwrap(), "a.rs:6:1: six\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
