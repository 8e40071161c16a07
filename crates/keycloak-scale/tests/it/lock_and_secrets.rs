use std::time::Duration;

use fake_ispn::{ClusterSpec, FakeCluster};
use ispn_xsite::{Client, ClientConfig, Credentials, SiteApi};
use keycloak_scale::infinispan::{PortForward, credentials, external_url, infinispan_pod};
use keycloak_scale::lock::{FileLock, LeaseLock, holder_identity};
use sync_core::ports::{LockError, RunLock};

use crate::support::*;

#[tokio::test]
async fn a_second_run_is_refused_with_the_holder_and_since_when() {
    let env = Setup::new().start().await;
    let cluster = env.cluster.clone();
    let lock = LeaseLock::new(cluster.clone(), "site-sync", Duration::from_secs(60));
    lock.acquire("run-1").await.unwrap();
    lock.renew("run-1").await.unwrap();
    let other = LeaseLock::new(cluster, "site-sync", Duration::from_secs(60));
    let err = other.acquire("run-2").await.unwrap_err();
    let LockError::Held(holder) = &err else { panic!("{err:?}") };
    assert_eq!(holder.holder, holder_identity("run-1"));
    assert!(holder.since.starts_with("20"), "an RFC 3339 time: {}", holder.since);
    assert!(matches!(other.renew("run-2").await, Err(LockError::Held(_))));
    lock.release("run-1").await.unwrap();
    assert!(env.lease("site-sync").await.is_none());
    other.acquire("run-2").await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_of_a_crashed_run_is_taken_over() {
    let env = Setup::new().start().await;
    env.hold_lease("site-sync", "site-sync/crashed@elsewhere", "2026-01-01T00:00:00.000000Z", 60).await;
    let lock = LeaseLock::new(env.cluster.clone(), "site-sync", Duration::from_secs(60));
    lock.acquire("run-3").await.unwrap();
    let lease = env.lease("site-sync").await.unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], serde_json::json!(holder_identity("run-3")));
}

#[tokio::test]
async fn a_forbidden_lease_is_a_store_error_naming_the_permission() {
    let env = Setup::new().forbid("get", "leases").start().await;
    let lock = LeaseLock::new(env.cluster.clone(), "site-sync", Duration::from_secs(60));
    let err = lock.acquire("run").await.unwrap_err();
    assert!(matches!(&err, LockError::Store(text) if text.contains("cannot get leases")), "{err:?}");
}

#[tokio::test]
async fn a_lock_file_refuses_a_live_holder_and_takes_over_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site-sync.lock");
    let lock = FileLock::new(&path);
    lock.acquire("run-1").await.unwrap();
    // Another live process (pid 1 always exists) holds it.
    std::fs::write(&path, r#"{"holder":"site-sync/other@host","since":"2026-11-26T10:00:00Z","pid":1}"#).unwrap();
    let err = lock.acquire("run-2").await.unwrap_err();
    assert!(matches!(&err, LockError::Held(h) if h.holder == "site-sync/other@host"), "{err:?}");
    std::fs::write(&path, r#"{"holder":"site-sync/dead@host","since":"2026-11-26T10:00:00Z","pid":4000000}"#).unwrap();
    lock.acquire("run-2").await.unwrap();
    lock.release("run-2").await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn credentials_come_from_connect_secret_then_the_operators_secrets() {
    let identities = "credentials:\n- username: developer\n  password: dev-pass\n  roles: [deployer]\n- username: admin\n  password: admin-pass\n  roles: [admin]\n";
    let env = Setup::new().secret("connect-secret", &[("identities.yaml", identities)]).start().await;
    let found = credentials(&env.cluster, "infinispan", None).await.unwrap();
    assert_eq!((found.user.as_str(), found.password.as_str()), ("admin", "admin-pass"));
    assert_eq!(found.source, "secret connect-secret, identities.yaml");
    assert!(!format!("{found:?}").contains("admin-pass"));

    let env = Setup::new()
        .secret("infinispan-generated-operator-secret", &[("username", "operator"), ("password", "op")])
        .start()
        .await;
    let found = credentials(&env.cluster, "infinispan", None).await.unwrap();
    assert_eq!(
        (found.user.as_str(), found.source.as_str()),
        ("operator", "secret infinispan-generated-operator-secret, username/password")
    );

    let generated = "credentials:\n- username: developer\n  password: gen\n";
    let env = Setup::new().secret("infinispan-generated-secret", &[("identities.yaml", generated)]).start().await;
    assert_eq!(credentials(&env.cluster, "infinispan", None).await.unwrap().user, "developer");

    let err = credentials(&Setup::new().start().await.cluster, "infinispan", None).await.unwrap_err();
    assert!(
        err.to_string().contains("connect-secret, infinispan-generated-operator-secret, infinispan-generated-secret"),
        "{err}"
    );
    let err = credentials(&Setup::new().forbid("get", "secrets").start().await.cluster, "infinispan", None).await.unwrap_err();
    assert!(err.to_string().contains("cannot get secrets"), "{err}");
}

#[tokio::test]
async fn the_external_service_gives_the_endpoint() {
    let env = Setup::new()
        .service(
            "infinispan-external",
            serde_json::json!({"type": "LoadBalancer", "ports": [{"port": 11222}]}),
            serde_json::json!({"loadBalancer": {"ingress": [{"hostname": "ispn.site-b.example"}]}}),
        )
        .start()
        .await;
    assert_eq!(external_url(&env.cluster, "infinispan").await.unwrap().as_deref(), Some("https://ispn.site-b.example:11222"));
    assert_eq!(external_url(&Setup::new().start().await.cluster, "infinispan").await.unwrap(), None);
}

#[tokio::test]
async fn rest_calls_reach_infinispan_through_a_port_forward() {
    let ispn = FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b")).await.unwrap();
    let target: std::net::SocketAddr = ispn.url("site-b").trim_start_matches("http://").parse().unwrap();
    let env = Setup::new()
        .forwarded_pod("infinispan-0", &[("app", "infinispan-pod"), ("clusterName", "infinispan")], target)
        .start()
        .await;
    let cluster = env.cluster.clone();
    let pod = infinispan_pod(&cluster, "infinispan").await.unwrap();
    assert_eq!(pod, "infinispan-0");
    let forward = PortForward::start(&cluster, &pod, 11222).await.unwrap();
    let client =
        Client::new(ClientConfig::new(format!("http://{}", forward.local_addr()), Some(Credentials::new("admin", "password"))))
            .unwrap();
    let info = client.container_info().await.unwrap();
    assert_eq!(info.local_site.as_deref(), Some("site-b"));
    // Several requests, several connections: every one is forwarded.
    for _ in 0..5 {
        assert_eq!(client.cache_names().await.unwrap().len(), 6);
    }
    let requests = env.requests().await;
    assert!(requests.iter().any(|r| r.contains("/pods/infinispan-0/portforward?")), "{requests:#?}");
}

#[tokio::test]
async fn a_port_forward_without_permission_fails_up_front() {
    let env = Setup::new()
        .forwarded_pod("infinispan-0", &[("app", "infinispan-pod")], "127.0.0.1:9".parse().unwrap())
        .forbid("create", "pods/portforward")
        .start()
        .await;
    let err = PortForward::start(&env.cluster, "infinispan-0", 11222).await.unwrap_err();
    assert!(err.to_string().contains("cannot create pods/portforward"), "{err}");
}
