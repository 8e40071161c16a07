//! The cross-site link lost in the middle of a push, as the operator sees it: announced within a
//! second of being read (text and JSON), waited for with its bound, its return reported; or, when
//! it stays lost, the run stopped within `link_wait` with a resumable journal.

use std::time::{Duration, Instant};

use fake_ispn::{ClusterSpec, TransferSpec};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::support::*;

/// A split-brained pair whose pushes take a few seconds (2000 entries per cache at 500/s).
async fn slow_pair(settings: &str) -> Env {
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
        chunk_size: 16,
        entries_per_second: Some(500),
        ..TransferSpec::default()
    });
    let env = Env::with(spec, |k| k).await;
    env.split_brain(2000).await;
    env.write_config(&env.config().replace("  request_timeout: 5s\n", &format!("  request_timeout: 5s\n{settings}")));
    env
}

/// Collects the lines `stream` prints, each with when it arrived.
fn lines_of(stream: impl AsyncRead + Unpin + Send + 'static) -> tokio::task::JoinHandle<Vec<(Instant, String)>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push((Instant::now(), line));
        }
        seen
    })
}

fn first_line<'a>(lines: &'a [(Instant, String)], fragment: &str) -> &'a (Instant, String) {
    lines.iter().find(|(_, l)| l.contains(fragment)).unwrap_or_else(|| {
        panic!("no line with {fragment:?} in:\n{}", lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_lost_mid_push_is_shown_at_once_waited_for_and_its_return_reported() {
    let env = slow_pair("").await;
    let mut child = env.command(&["run", "--yes"]).spawn().unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    pushing(&env).await;
    env.ispn.cut_link("site-a", "site-b");
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.ispn.heal_link("site-a", "site-b");
    let healed = Instant::now();
    let status = child.wait().await.unwrap();
    let lines = stderr.await.unwrap();
    assert_eq!(status.code(), Some(0), "{lines:?}");

    let (shown, down) = first_line(&lines, "cannot see each other across the bridge since");
    assert!(shown.duration_since(cut) < Duration::from_secs(1), "shown {:?} after the cut", shown.duration_since(cut));
    assert!(down.contains("waiting up to 5m for it (until"), "{down}");
    assert!(down.contains("Ctrl-C stops safely, `site-sync resume` continues"), "{down}");
    let (back_at, back) = first_line(&lines, "the cross-site link is back after");
    assert!(back_at.duration_since(healed) < Duration::from_secs(1), "{back}");
    assert_eq!(env.entries("site-a"), env.entries("site-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_lost_link_with_each_site_view_and_its_return() {
    let env = slow_pair("").await;
    let mut child = env.command(&["-o", "json", "run", "--yes"]).spawn().unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    pushing(&env).await;
    env.ispn.cut_link("site-a", "site-b");
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.ispn.heal_link("site-a", "site-b");
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    let lines = stdout.await.unwrap();

    let (shown, down) = first_line(&lines, r#""type":"link_down""#);
    assert!(shown.duration_since(cut) < Duration::from_secs(1));
    let down: serde_json::Value = serde_json::from_str(down).unwrap();
    assert_eq!(down["message"], "site-a and site-b cannot see each other across the bridge");
    assert_eq!(down["views"][0]["site"], "site-a");
    assert_eq!(down["views"][0]["sites_view"], serde_json::json!(["site-a"]));
    assert_eq!(down["views"][1]["sees_other"], false);
    assert_eq!(down["until_ms"].as_u64().unwrap() - down["since_ms"].as_u64().unwrap(), 300_000);
    let waiting = lines.iter().filter(|(_, l)| l.contains(r#""type":"waiting""#) && l.contains("cross-site link")).count();
    assert!(waiting >= 1, "the wait for the link was not announced");
    let (_, up) = first_line(&lines, r#""type":"link_up""#);
    let up: serde_json::Value = serde_json::from_str(up).unwrap();
    assert!((1_500..=3_500).contains(&up["down_ms"].as_u64().unwrap()), "{up}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_stays_lost_stops_the_run_within_link_wait_and_resume_finishes_it() {
    let env = slow_pair("  link_wait: 2s\n").await;
    let mut child = env.command(&["run", "--yes"]).spawn().unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    pushing(&env).await;
    env.ispn.cut_link("site-a", "site-b");
    let cut = Instant::now();
    let status = child.wait().await.unwrap();
    let ended = cut.elapsed();
    let lines = stderr.await.unwrap();
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(ended >= Duration::from_secs(2) && ended < Duration::from_secs(4), "the run ended {ended:?} after the cut");
    let last = &lines.last().unwrap().1;
    assert!(last.starts_with("site-sync: the cross-site link is lost: site-a and site-b cannot see each other"), "{last}");
    assert!(last.contains("longer than link_wait (2.00 s)") && last.contains("`site-sync resume`"), "{last}");
    assert!(journal(&env).is_some_and(|j| j.has_progress() && !j.is_complete()));

    env.ispn.heal_link("site-a", "site-b");
    let resumed = env.run(&["resume", "--yes"]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(env.entries("site-a"), env.entries("site-b"));
}
