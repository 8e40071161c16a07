//! Behaviour of the fake that a real pair cannot be made to show on demand: split brain, injected
//! faults, delayed status propagation, state transfer pacing. These run on the model directly
//! (no HTTP) under a paused clock, except where HTTP itself is the subject.

use std::time::Duration;

use fake_ispn::{
    AuthMechanism, CacheFaults, ClusterSpec, FailurePolicy, FakeCluster, ModelSite, Personality, RequestFault, TransferSpec,
};
use ispn_xsite::{
    BackupStatus, CacheName, ClearScope, Client, ClientConfig, ContainerSiteStatus, Credentials, Error, Mechanism, PushStatus,
    SiteAction, SiteApi, SiteName, TakeOfflineConfig,
};

fn c(name: &str) -> CacheName {
    CacheName::new(name).unwrap()
}

fn s(name: &str) -> SiteName {
    SiteName::new(name).unwrap()
}

fn model(spec: ClusterSpec) -> (FakeCluster, ModelSite, ModelSite) {
    let fake = FakeCluster::model(spec);
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    (fake, a, b)
}

fn pair() -> (FakeCluster, ModelSite, ModelSite) {
    model(ClusterSpec::two_sites("site-a", "site-b"))
}

async fn push_status(site: &ModelSite, cache: &CacheName, to: &str) -> PushStatus {
    site.push_state_status(cache).await.unwrap().for_site(&s(to)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn split_brain_with_fail_policy_rejects_writes_and_keeps_sites_equal() {
    let (fake, a, b) = pair();
    let work = c("work");
    a.put(&work, "before", "1").await.unwrap();
    fake.cut_link("site-a", "site-b");
    let err = a.put(&work, "during", "2").await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 500, .. }), "{err:?}");
    assert_eq!(a.get(&work, "during").await.unwrap(), None, "a failed SYNC+FAIL write is rolled back");
    assert!(!a.container_info().await.unwrap().sees(&s("site-b")));
    fake.heal_link("site-a", "site-b");
    a.put(&work, "after", "3").await.unwrap();
    assert_eq!(b.get(&work, "after").await.unwrap().as_deref(), Some("3"));
}

#[tokio::test(start_paused = true)]
async fn split_brain_with_warn_policy_lets_the_sites_diverge() {
    let (fake, a, b) = model(ClusterSpec::two_sites("site-a", "site-b").failure_policy(FailurePolicy::Warn));
    let work = c("work");
    fake.cut_link("site-a", "site-b");
    a.put(&work, "k", "from-a").await.unwrap();
    b.put(&work, "k", "from-b").await.unwrap();
    fake.heal_link("site-a", "site-b");
    assert_eq!(a.get(&work, "k").await.unwrap().as_deref(), Some("from-a"));
    assert_eq!(b.get(&work, "k").await.unwrap().as_deref(), Some("from-b"));
}

#[tokio::test(start_paused = true)]
async fn taking_the_backup_offline_fences_a_split_so_writes_succeed_locally() {
    let (fake, a, _b) = pair();
    let work = c("work");
    fake.cut_link("site-a", "site-b");
    a.cache_site_action(&work, &s("site-b"), SiteAction::TakeOffline).await.unwrap();
    a.put(&work, "k", "v").await.unwrap();
    assert_eq!(a.size(&work).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn automatic_take_offline_after_consecutive_failures() {
    let (fake, a, _b) = pair();
    let work = c("work");
    let config = TakeOfflineConfig { after_failures: 2, min_wait: 0 };
    a.set_take_offline_config(&work, &s("site-b"), config).await.unwrap();
    fake.cut_link("site-a", "site-b");
    assert!(a.put(&work, "1", "x").await.is_err());
    assert!(a.put(&work, "2", "x").await.is_err());
    assert_eq!(a.cache_backups(&work).await.unwrap()[&s("site-b")], BackupStatus::Offline);
    a.put(&work, "3", "x").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_clear_log_shows_which_sites_a_clear_reached() {
    let (fake, a, b) = pair();
    let work = c("work");
    a.put(&work, "k", "v").await.unwrap();
    b.clear(&work, ClearScope::Replicated).await.unwrap();
    b.cache_site_action(&work, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    b.clear(&work, ClearScope::Replicated).await.unwrap();
    b.cache_site_action(&work, &s("site-a"), SiteAction::BringOnline).await.unwrap();
    b.clear(&work, ClearScope::LocalOnly).await.unwrap();
    let clears = fake.world().clears().to_vec();
    let reached: Vec<Vec<&str>> = clears.iter().map(|r| r.reached.iter().map(|s| s.as_str()).collect()).collect();
    assert_eq!(reached, vec![vec!["site-b", "site-a"], vec!["site-b"], vec!["site-b"]]);
    assert!(clears[2].skip_xsite);
}

#[tokio::test(start_paused = true)]
async fn state_transfer_is_paced_by_the_configured_rate() {
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
        chunk_size: 10,
        entries_per_second: Some(1000),
        ..TransferSpec::default()
    });
    let (fake, a, b) = model(spec);
    let work = c("work");
    fake.world().load(0, &work, (0..1000).map(|i| (format!("k{i}"), format!("v{i}"))));
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    tokio::time::advance(Duration::from_millis(105)).await;
    assert_eq!(b.size(&work).await.unwrap(), 100);
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Sending);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Ok);
    assert_eq!(b.size(&work).await.unwrap(), 1000);
}

#[tokio::test(start_paused = true)]
async fn writes_that_replicate_during_a_push_are_not_overwritten_by_older_state() {
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
        chunk_size: 1,
        entries_per_second: Some(10),
        ..TransferSpec::default()
    });
    let (fake, a, b) = model(spec);
    let work = c("work");
    fake.world().load(0, &work, (0..20).map(|i| (format!("k{i:02}"), "old".to_owned())));
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    // A write on the active site replicates to the receiver while the push runs.
    a.put(&work, "k19", "new").await.unwrap();
    a.delete(&work, "k18").await.unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Ok);
    assert_eq!(b.get(&work, "k19").await.unwrap().as_deref(), Some("new"));
    assert_eq!(b.get(&work, "k18").await.unwrap(), None);
    assert_eq!(b.size(&work).await.unwrap(), 19);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_push_reads_sending_until_cancelled() {
    let (fake, a, _b) = pair();
    let work = c("work");
    fake.world().load(0, &work, [("k".to_owned(), "v".to_owned())]);
    fake.world().set_cache_faults(0, &work, CacheFaults { push_stuck: true, ..CacheFaults::default() });
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Sending);
    a.clear_push_state_status(&work).await.unwrap();
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Sending, "clearing does not reset a running push");
    a.cache_site_action(&work, &s("site-b"), SiteAction::CancelPushState).await.unwrap();
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Canceled);
    a.clear_push_state_status(&work).await.unwrap();
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Idle);
    // The fault was one-shot: the next push completes.
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Ok);
}

#[tokio::test(start_paused = true)]
async fn an_injected_push_error_reads_error_and_a_repush_succeeds() {
    let (fake, a, b) = pair();
    let work = c("work");
    fake.world().load(0, &work, (0..100).map(|i| (format!("k{i}"), "v".to_owned())));
    fake.world().set_cache_faults(0, &work, CacheFaults { push_error_after: Some(40), ..CacheFaults::default() });
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Error);
    assert_eq!(b.size(&work).await.unwrap(), 40);
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Ok);
    assert_eq!(b.size(&work).await.unwrap(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_leaves_sending_until_cancel_like_the_real_server() {
    let (fake, a, _b) = pair();
    let work = c("work");
    fake.world().set_cache_faults(0, &work, CacheFaults { push_start_fails: true, ..CacheFaults::default() });
    let err = a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap_err();
    assert!(matches!(&err, Error::Server { status: 500, body, .. } if body.contains("Unable to pushState")), "{err:?}");
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Sending);
    a.cache_site_action(&work, &s("site-b"), SiteAction::CancelPushState).await.unwrap();
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Canceled);
}

#[tokio::test(start_paused = true)]
async fn a_push_over_a_cut_link_fails_and_cancel_reports_the_unreachable_receiver() {
    let (fake, a, _b) = pair();
    let work = c("work");
    fake.cut_link("site-a", "site-b");
    let err = a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 500, .. }));
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Sending);
    let err = a.cache_site_action(&work, &s("site-b"), SiteAction::CancelPushState).await.unwrap_err();
    assert!(matches!(&err, Error::Server { status: 500, body, .. } if body.contains("SuspectException")), "{err:?}");
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Canceled, "cancel takes effect even so");
}

#[tokio::test(start_paused = true)]
async fn a_link_lost_mid_push_errors_and_leaves_the_receiver_receiving() {
    let spec = ClusterSpec::two_sites("site-a", "site-b").transfer(TransferSpec {
        chunk_size: 1,
        entries_per_second: Some(10),
        error_after_link_loss: Duration::from_secs(60),
    });
    let (fake, a, b) = model(spec);
    let work = c("work");
    fake.world().load(0, &work, (0..100).map(|i| (format!("k{i}"), "v".to_owned())));
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    fake.cut_link("site-a", "site-b");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Sending, "retries keep it SENDING for a while");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Error);
    assert_eq!(fake.snapshot("site-b").receiving.get(&work).map(|s| s.as_str()), Some("site-a"));
    fake.heal_link("site-a", "site-b");
    // Pushing the other way is unaffected (A is not receiving); cancel-receive-state on B
    // releases B.
    b.cache_site_action(&work, &s("site-a"), SiteAction::StartPushState).await.unwrap();
    b.cache_site_action(&work, &s("site-a"), SiteAction::CancelReceiveState).await.unwrap();
    assert!(fake.snapshot("site-b").receiving.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_receiver_stuck_from_one_site_refuses_a_push_from_another() {
    let spec = ClusterSpec {
        sites: {
            let mut three = ClusterSpec::two_sites("site-a", "site-b").sites;
            let mut c_site = three[1].clone();
            c_site.name = s("site-c");
            three.push(c_site);
            three
        },
        ..ClusterSpec::two_sites("site-a", "site-b")
    }
    .caches(&["work"]);
    let (fake, a, _b) = model(spec);
    let site_c = fake.site("site-c");
    let work = c("work");
    fake.world().set_cache_faults(0, &work, CacheFaults { push_stuck: true, ..CacheFaults::default() });
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    let err = site_c.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap_err();
    assert!(matches!(&err, Error::Server { body, .. } if body.contains("Already receiving state from site-a")), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn sticky_take_offline_reads_mixed_on_a_two_node_15_site() {
    let (fake, _a, b) = model(ClusterSpec::two_sites("site-a", "site-b").nodes(2));
    let work = c("work");
    fake.world().set_cache_faults(1, &work, CacheFaults { sticky_take_offline: 1, ..CacheFaults::default() });
    b.cache_site_action(&work, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    match &b.cache_backups(&work).await.unwrap()[&s("site-a")] {
        BackupStatus::Mixed { online, offline } => {
            assert_eq!(online, &vec!["site-b-2".to_owned()]);
            assert_eq!(offline, &vec!["site-b-1".to_owned()]);
        }
        other => panic!("expected mixed, got {other:?}"),
    }
    let nodes = b.cache_site_nodes(&work, &s("site-a")).await.unwrap();
    assert!(!nodes.all_offline());
    assert_eq!(nodes.not_offline(), vec!["site-b-2"]);
    match b.container_site_status(&s("site-a")).await.unwrap() {
        ContainerSiteStatus::Mixed { mixed, .. } => assert_eq!(mixed, vec!["work".to_owned()]),
        other => panic!("expected mixed, got {other:?}"),
    }
    b.cache_site_action(&work, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    assert!(b.cache_site_nodes(&work, &s("site-a")).await.unwrap().all_offline());
}

#[tokio::test(start_paused = true)]
async fn delayed_propagation_reads_mixed_for_a_while_then_offline() {
    let (fake, _a, b) = model(ClusterSpec::two_sites("site-a", "site-b").nodes(3));
    let work = c("work");
    let faults = CacheFaults { offline_propagation: Duration::from_secs(2), ..CacheFaults::default() };
    fake.world().set_cache_faults(1, &work, faults);
    b.cache_site_action(&work, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    assert!(matches!(b.cache_backups(&work).await.unwrap()[&s("site-a")], BackupStatus::Mixed { .. }));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(b.cache_backups(&work).await.unwrap()[&s("site-a")], BackupStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn a_16_site_never_reads_mixed() {
    let (fake, _a, b) = model(ClusterSpec::two_sites("site-a", "site-b").nodes(2).personality(Personality::V16));
    let work = c("work");
    let faults = CacheFaults { sticky_take_offline: 1, offline_propagation: Duration::from_secs(5), ..CacheFaults::default() };
    fake.world().set_cache_faults(1, &work, faults);
    b.cache_site_action(&work, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    assert_eq!(b.cache_backups(&work).await.unwrap()[&s("site-a")], BackupStatus::Online, "the sticky call did nothing");
    b.cache_site_action(&work, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    assert_eq!(b.cache_backups(&work).await.unwrap()[&s("site-a")], BackupStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn request_faults_surface_as_typed_errors_and_lost_answers_still_apply() {
    let (fake, a, _b) = pair();
    let work = c("work");
    fake.world().inject_request_faults(0, [RequestFault::Unavailable, RequestFault::Timeout, RequestFault::LostAnswer]);
    let first = a.size(&work).await.unwrap_err();
    assert!(matches!(first, Error::Server { status: 503, .. }) && first.is_transient());
    let second = a.size(&work).await.unwrap_err();
    assert!(matches!(second, Error::Timeout { .. }) && second.is_transient());
    let third = a.cache_site_action(&work, &s("site-b"), SiteAction::TakeOffline).await.unwrap_err();
    assert!(matches!(third, Error::Timeout { .. }));
    assert_eq!(a.cache_backups(&work).await.unwrap()[&s("site-b")], BackupStatus::Offline, "the lost answer's action applied");
    fake.world().inject_request_faults(0, [RequestFault::Unauthorized]);
    let fourth = a.cache_site_action(&work, &s("site-b"), SiteAction::BringOnline).await.unwrap_err();
    assert!(matches!(fourth, Error::Unauthorized { .. }) && !fourth.is_transient(), "{fourth:?}");
    assert_eq!(a.cache_backups(&work).await.unwrap()[&s("site-b")], BackupStatus::Offline, "a refused request did nothing");
    fake.world().inject_request_faults(0, [RequestFault::TimeoutAfter(Duration::from_secs(7))]);
    let started = tokio::time::Instant::now();
    let fifth = a.cache_site_action(&work, &s("site-b"), SiteAction::BringOnline).await.unwrap_err();
    assert!(matches!(fifth, Error::Timeout { after, .. } if after == Duration::from_secs(7)), "{fifth:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(7), "the timeout took its time");
    assert_eq!(a.cache_backups(&work).await.unwrap()[&s("site-b")], BackupStatus::Offline, "a timed-out request did nothing");
}

#[tokio::test(start_paused = true)]
async fn a_killed_site_refuses_connections_and_comes_back_empty() {
    let (mut fake, a, b) = pair();
    let work = c("work");
    a.put(&work, "k", "v").await.unwrap();
    b.cache_site_action(&work, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    fake.kill("site-b").await;
    assert!(matches!(b.size(&work).await, Err(Error::Unreachable { .. })));
    assert!(a.put(&work, "k2", "v").await.is_err(), "SYNC+FAIL towards a dead site fails");
    fake.restart("site-b").await.unwrap();
    assert_eq!(b.size(&work).await.unwrap(), 0);
    assert_eq!(b.cache_backups(&work).await.unwrap()[&s("site-a")], BackupStatus::Online, "statuses back to the configuration");
}

#[tokio::test(start_paused = true)]
async fn the_request_journal_records_every_call() {
    let (fake, a, _b) = pair();
    a.size(&c("work")).await.unwrap();
    a.cache_site_action(&c("work"), &s("site-b"), SiteAction::TakeOffline).await.unwrap();
    let calls: Vec<String> = fake.world().requests().iter().map(|r| format!("{} {}", r.site, r.what)).collect();
    insta::assert_snapshot!(calls.join("\n"), @r"
    site-a GET /rest/v2/caches/work?action=size
    site-a POST /rest/v2/caches/work/x-site/backups/site-b?action=take-offline
    ");
}

// ----- over HTTP ----------------------------------------------------------------------------------

fn http_client(url: &str, password: &str, mechanism: Mechanism) -> Client {
    let mut config = ClientConfig::new(url, Some(Credentials::new("admin", password)));
    config.mechanism = mechanism;
    config.timeout = Duration::from_millis(500);
    Client::new(config).unwrap()
}

#[tokio::test]
async fn digest_sha256_is_answered_when_offered() {
    let fake =
        FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b").mechanisms(&[AuthMechanism::DigestSha256])).await.unwrap();
    let client = http_client(&fake.url("site-a"), "password", Mechanism::Auto);
    assert!(client.cache_names().await.is_ok());
    let wrong = http_client(&fake.url("site-a"), "nope", Mechanism::Digest);
    assert!(matches!(wrong.cache_names().await, Err(Error::Unauthorized { .. })));
}

#[tokio::test]
async fn forcing_basic_on_a_digest_only_server_names_the_mechanism_to_use() {
    let fake =
        FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b").mechanisms(&[AuthMechanism::DigestMd5])).await.unwrap();
    let err = http_client(&fake.url("site-a"), "password", Mechanism::Basic).cache_names().await.unwrap_err();
    assert!(matches!(&err, Error::MechanismNotOffered { suggestion, .. } if suggestion == "digest"), "{err:?}");
    assert!(err.to_string().contains("DIGEST-MD5"), "{err}");
}

#[tokio::test]
async fn a_stalled_request_times_out_on_the_client() {
    let fake = FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b")).await.unwrap();
    fake.world().inject_request_faults(0, [RequestFault::Timeout]);
    let err = http_client(&fake.url("site-a"), "password", Mechanism::Auto).size(&c("work")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn changed_credentials_are_refused_over_http_after_a_fresh_challenge() {
    let fake = FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b")).await.unwrap();
    let client = http_client(&fake.url("site-a"), "password", Mechanism::Auto);
    client.size(&c("work")).await.unwrap();
    // Every request from now on is refused, the client's answer to the fresh challenge too.
    fake.world().inject_request_faults(0, [RequestFault::Unauthorized, RequestFault::Unauthorized]);
    let err = client.size(&c("work")).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(client.size(&c("work")).await.unwrap(), 0, "answered again once the faults are spent");
}

#[tokio::test]
async fn a_killed_http_site_refuses_connections_and_restarts_on_the_same_port() {
    let mut fake = FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b")).await.unwrap();
    let url = fake.url("site-b");
    fake.kill("site-b").await;
    let client = http_client(&url, "password", Mechanism::Auto);
    assert!(matches!(client.size(&c("work")).await, Err(Error::Unreachable { .. })));
    fake.restart("site-b").await.unwrap();
    assert_eq!(fake.url("site-b"), url);
    assert_eq!(http_client(&url, "password", Mechanism::Auto).size(&c("work")).await.unwrap(), 0);
}

#[tokio::test]
async fn unknown_flags_and_actions_are_bad_requests() {
    let fake = FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b")).await.unwrap();
    let http = reqwest_like_get(&fake.url("site-a"), "/rest/v2/caches/work?action=frobnicate").await;
    assert_eq!(http, (400, "Invalid 'action' parameter supplied".to_owned()));
    let http = reqwest_like_get(&fake.url("site-a"), "/rest/v2/caches/work?action=").await;
    assert_eq!(http, (400, "Invalid action".to_owned()));
}

/// A BASIC-authenticated GET with a raw TCP stream: status and body.
async fn reqwest_like_get(url: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic YWRtaW46cGFzc3dvcmQ=\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn concurrent_status_changes_on_two_caches_deadlock_like_the_real_server() {
    let fake = FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b")).await.unwrap();
    let client = http_client(&fake.url("site-b"), "password", Mechanism::Auto);
    let (a, w, site_a) = (c("actionTokens"), c("work"), s("site-a"));
    let (first, second) = tokio::join!(
        client.cache_site_action(&a, &site_a, SiteAction::TakeOffline),
        client.cache_site_action(&w, &site_a, SiteAction::TakeOffline),
    );
    assert!(matches!(first, Err(Error::Timeout { .. })) && matches!(second, Err(Error::Timeout { .. })), "{first:?} {second:?}");
    assert!(matches!(client.cache_backups(&w).await, Err(Error::Timeout { .. })), "the deadlocked cache stays stuck");
    assert!(client.cache_backups(&c("loginFailures")).await.is_ok(), "other caches still answer");
    // One after the other is fine.
    for cache in [c("loginFailures"), c("authenticationSessions")] {
        client.cache_site_action(&cache, &s("site-a"), SiteAction::TakeOffline).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn planted_lies_deceive_exactly_as_named() {
    let (fake, a, b) = pair();
    let work = c("work");
    a.put(&work, "k", "v").await.unwrap();
    let lies = CacheFaults { nodes_read_offline: true, clear_ignores_skip_xsite: true, ..CacheFaults::default() };
    fake.world().set_cache_faults(1, &work, lies);
    assert!(b.cache_site_nodes(&work, &s("site-a")).await.unwrap().all_offline(), "the backup reads offline");
    assert_eq!(b.cache_backups(&work).await.unwrap()[&s("site-a")], BackupStatus::Online, "while it is online");
    b.clear(&work, ClearScope::LocalOnly).await.unwrap();
    assert_eq!(a.get(&work, "k").await.unwrap(), None, "the flag was ignored: the clear reached the peer");
    assert!(fake.world().clears()[0].skip_xsite, "the request did carry the flag");

    a.put(&work, "k", "v").await.unwrap();
    fake.world().set_cache_faults(
        0,
        &work,
        CacheFaults { push_reads_ok_early: true, push_stuck: true, ..CacheFaults::default() },
    );
    a.cache_site_action(&work, &s("site-b"), SiteAction::StartPushState).await.unwrap();
    assert_eq!(push_status(&a, &work, "site-b").await, PushStatus::Ok, "reads OK while the push is stuck");
    assert!(fake.world().pushes()[0].ended.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_redirected_endpoint_answers_as_the_other_site() {
    let (fake, a, _b) = pair();
    assert_eq!(a.container_info().await.unwrap().local_site.as_deref(), Some("site-a"));
    fake.world().redirect(0, 1);
    assert_eq!(a.container_info().await.unwrap().local_site.as_deref(), Some("site-b"));
    let work = c("work");
    a.put(&work, "k", "v").await.unwrap();
    assert_eq!(fake.snapshot("site-b").entries[&work].get("k").map(String::as_str), Some("v"), "written through site-b");
}
