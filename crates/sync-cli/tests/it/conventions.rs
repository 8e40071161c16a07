//! What an operator meets in their first hour: the verdicts say what they compared and refuse to
//! pass on what they could not read, paths mean what the file says wherever the command runs,
//! errors under `-o json` are JSON, colour only on a terminal, completions, a man page and a
//! version that names its build.

use std::path::Path;

use crate::support::*;

/// A port on loopback where nothing listens.
fn closed_url() -> String {
    format!("http://127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_gives_no_verdict_when_a_site_cannot_be_read() {
    let env = Env::start().await;
    let config = env.config().replace(&env.url("site-a"), &closed_url()).replace(&env.url("site-b"), &closed_url());
    env.write_config(&config);
    let out = env.run(&["status"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    let diagnosis = out.stdout.lines().find(|l| l.starts_with("Diagnosis: ")).unwrap_or_default();
    insta::assert_snapshot!("status_both_sites_down", normalize(diagnosis, &env));
    // Each failed read is on stderr too, naming its site.
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("site-sync: ")).collect();
    assert_eq!(errors.len(), 2, "{}", out.stderr);
    assert!(errors[0].starts_with("site-sync: site-a: ") && errors[1].starts_with("site-sync: site-b: "), "{errors:?}");
    let json = env.run(&["-o", "json", "status"]).await;
    assert_eq!(json.code, 3);
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(value["diagnosis"]["diagnosis"], "unreachable");
    assert_eq!(value["exit_code"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_of_one_cache_is_no_verdict_either() {
    let env = Env::start().await;
    assert_eq!(env.run(&["status"]).await.code, 0);
    // Every read of site-b answers 500 from the container read on: the identity still reads.
    env.ispn.world().fail_requests_from(1, 1, fake_ispn::RequestFault::ServerError);
    let out = env.run(&["status"]).await;
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("Diagnosis: healthy"), "{}", out.stdout);
    assert!(out.stdout.contains("Diagnosis: no verdict: cannot read site-b: "), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_say_how_many_caches_were_compared_on_each_site() {
    let env = Env::start().await;
    env.split_brain(20).await;
    assert_eq!(env.run(&["run", "--yes"]).await.code, 0);
    let verify = env.run(&["-o", "json", "verify"]).await;
    let diff = env.run(&["-o", "json", "diff"]).await;
    // The event names the user guide documents, with the fields automation reads.
    let shape = |out: &Output| -> Vec<String> {
        out.stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
                format!("{} {keys:?}", v["type"].as_str().unwrap())
            })
            .collect()
    };
    insta::assert_snapshot!("json_event_names", [shape(&verify), shape(&diff)].concat().join("\n"));
    let last = |out: &Output| serde_json::from_str::<serde_json::Value>(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last(&verify)["caches"], serde_json::json!({"site-a": 4, "site-b": 4}));
    assert_eq!(last(&diff)["caches"], serde_json::json!({"site-a": 4, "site-b": 4}));
    let text = env.run(&["verify"]).await;
    assert!(
        text.stdout.contains("Verification passed (4 cache(s) on site-a and 4 on site-b, keys and values)."),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_under_json_output_are_json() {
    let env = Env::start().await;
    for args in [
        &["-o", "json", "frobnicate"][..],
        &["--output=json", "verify", "--level", "all"],
        &["-o", "json", "watch", "--interval", "soon"],
    ] {
        let out = env.run(args).await;
        assert_eq!(out.code, 2, "{args:?}");
        let value: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.stdout));
        assert_eq!(value["type"], "error");
        assert_eq!(value["exit_code"], 2);
        assert!(!value["message"].as_str().unwrap().is_empty());
    }
    // Help is an answer, not an error.
    assert_eq!(env.run(&["-o", "json", "--help"]).await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_coloured_only_when_asked_or_on_a_terminal() {
    let env = Env::start().await;
    let plain = env.run(&["-vv", "status"]).await;
    assert!(plain.stderr.contains("DEBUG"), "debug logs expected: {}", plain.stderr);
    assert!(!plain.stderr.contains('\u{1b}'), "no terminal, no colour");
    let coloured = env.run(&["-vv", "--color", "always", "status"]).await;
    assert!(coloured.stderr.contains('\u{1b}'), "--color always colours");
    let never = env.command(&["-vv", "--color", "never", "status"]).env("NO_COLOR", "1").output().await.unwrap();
    assert!(!String::from_utf8_lossy(&never.stderr).contains('\u{1b}'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_names_the_commit_and_the_build_date() {
    let out = Output::of(site_sync(Path::new("."), &["--version"])).await;
    assert_eq!(out.code, 0);
    let pattern =
        regex_lite::Regex::new(r"^site-sync \d+\.\d+\.\d+ \(([0-9a-f]{12}(-modified)?|unknown commit), built \d{4}-\d\d-\d\d\)$")
            .unwrap();
    assert!(pattern.is_match(out.stdout.trim()), "{:?}", out.stdout);
}

/// Runs a shell's own syntax check on a completion script.
fn shell_accepts(shell: &str, check: &[&str], script: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let out = std::process::Command::new(shell)
        .args(check)
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{shell} is needed to check its completion script (.ci/run installs it): {e}"));
    assert!(out.status.success(), "{shell} rejects the script: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let dir = Path::new(".");
    let subcommands = ["plan", "run", "resume", "status", "diff", "verify", "watch", "demo", "config", "completions", "manpage"];
    for (shell, check) in [("bash", &["-n"][..]), ("zsh", &["-n"]), ("fish", &["--no-execute"])] {
        let out = Output::of(site_sync(dir, &["completions", shell])).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        for word in subcommands.iter().chain(&["request-timeout", "color"]) {
            assert!(out.stdout.contains(word), "{shell} completion lacks {word}");
        }
        shell_accepts(shell, check, &out.stdout);
    }
    let man = Output::of(site_sync(dir, &["manpage"])).await;
    assert_eq!(man.code, 0);
    assert!(man.stdout.starts_with(".ie \\n(.g .ds Aq \\(aq") || man.stdout.contains(".TH site-sync 1"), "roff expected");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &man.stdout).unwrap();
    // groff renders it; -ww turns on every warning, which must be none.
    let rendered = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .arg(file.path())
        .output()
        .expect("groff (Debian's groff-base) renders the man page");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(rendered.status.success() && rendered.stderr.is_empty(), "{}", String::from_utf8_lossy(&rendered.stderr));
    for word in subcommands.iter().chain(&["Exit codes", "refused by a precondition"]) {
        assert!(text.contains(word), "the man page lacks {word}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_relative_to_the_configuration_file_and_tilde_is_home() {
    let env = Env::start().await;
    env.split_brain(20).await;
    // No journal setting: the default journal goes next to the configuration, whatever the
    // working directory; the kubeconfig is found through ~.
    let home = env.path("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::rename(env.path("kubeconfig"), home.join("kubeconfig")).unwrap();
    let config =
        env.config().replace("journal: journal.json\n", "").replace("kubeconfig: kubeconfig", "kubeconfig: ~/kubeconfig");
    env.write_config(&config);
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str], cwd: &Path| {
        let mut command = env.command(args);
        command.current_dir(cwd).env("HOME", &home);
        Output::of(command)
    };
    let out = run(&["run", "--yes"], elsewhere.path()).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(env.path("site-sync-site-a-site-b.journal.json").exists(), "the journal is next to the configuration");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing written where the command ran");
    // From a third directory, `resume` finds that journal (and says there is nothing left to do).
    let third = tempfile::tempdir().unwrap();
    let resume = run(&["resume", "--yes"], third.path()).await;
    assert!(!resume.stderr.contains("no journal at"), "{}", resume.stderr);
}
