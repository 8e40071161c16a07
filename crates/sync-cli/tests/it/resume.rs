use std::time::Duration;

use fake_ispn::{ClusterSpec, TransferSpec};

use crate::support::*;

/// A pair whose pushes are slow enough to interrupt.
async fn slow_env() -> Env {
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
        chunk_size: 16,
        entries_per_second: Some(2_000),
        ..TransferSpec::default()
    });
    let env = Env::with(spec, |k| k).await;
    env.split_brain(2_000).await;
    env
}

async fn wait_for_step(env: &Env, step: &str) {
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(env.path("journal.json"))
            && text.contains(&format!("\"step\": \"{step}\""))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the run never reached {step}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_finishes_a_run_killed_in_the_middle_of_the_push() {
    let env = slow_env().await;
    let expected = env.entries("site-a");
    let mut child = env.command(&["run", "--yes"]).spawn().unwrap();
    wait_for_step(&env, "await-push").await;
    child.kill().await.unwrap();
    let _ = child.wait().await;
    assert_eq!(env.kube_b.keycloak_state(NS, "keycloak").unwrap().0, 0, "killed while Keycloak was down");

    let again = env.run(&["run", "--yes"]).await;
    assert_eq!(again.code, 3, "a new run must not start over a half-done one: {}", again.stderr);
    assert!(again.last_error_line().contains("site-sync resume"), "{}", again.stderr);

    let out = env.run(&["resume", "--yes"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("resuming at await-push"), "{}", out.stderr);
    assert_eq!(env.entries("site-b"), expected);
    assert_eq!(env.entries("site-a"), expected);
    assert_eq!(env.kube_b.keycloak_state(NS, "keycloak"), Some((3, 3, 3, None)));
}

/// Sends `signal` to a run in its push phase: it must stop at a safe point with exit 130, say
/// why, record the interruption, and leave a journal that `resume` finishes from.
async fn signal_stops_at_a_safe_point_and_resume_continues(signal: &str, announced: &str) {
    let env = slow_env().await;
    let child = env.command(&["run", "--yes"]).spawn().unwrap();
    wait_for_step(&env, "await-push").await;
    let pid = child.id().unwrap();
    std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    let out = Output::of_child(child).await;
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{announced}: stopping at the next safe point")), "{}", out.stderr);
    let journal: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(env.path("journal.json")).unwrap()).unwrap();
    assert_eq!(journal["finished"]["outcome"], "interrupted");
    let out = env.run(&["resume", "--yes"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(env.entries("site-b"), env.entries("site-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_at_a_safe_point_with_exit_130_and_resume_continues() {
    signal_stops_at_a_safe_point_and_resume_continues("INT", "Ctrl-C").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_at_a_safe_point_like_ctrl_c() {
    signal_stops_at_a_safe_point_and_resume_continues("TERM", "SIGTERM").await;
}
