use std::time::Duration;

use keycloak_scale::fake::Timing;
use keycloak_scale::lock::LeaseLock;
use keycloak_scale::{KubeKeycloak, ScaleSettings, SiteCluster, access};
use sync_core::ports::{Keycloak, KeycloakError};

use crate::support::*;

#[tokio::test]
async fn scale_down_records_the_count_waits_for_the_pods_and_scale_up_restores_it() {
    let env = Setup::new().timing(quick()).keycloak("keycloak", 3).start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    let state = keycloak.observe().await.unwrap().unwrap();
    assert_eq!((state.spec_instances, state.ready_instances, state.pods), (3, 3, 3));

    assert_eq!(keycloak.scale_down().await.unwrap(), 3);
    assert_eq!(env.keycloak_state("keycloak").await, Some((0, 0, 0, Some("3".to_owned()))));
    // A retried or resumed scale-down finds the recorded count rather than the current 0.
    assert_eq!(keycloak.scale_down().await.unwrap(), 3);
    assert_eq!(keycloak.observe().await.unwrap().unwrap().recorded_original, Some(3));

    keycloak.scale_up(3).await.unwrap();
    assert_eq!(env.keycloak_state("keycloak").await, Some((3, 3, 3, None)), "ready, and the annotation is gone");
    let scale = format!("PATCH /apis/k8s.keycloak.org/v2alpha1/namespaces/{}/keycloaks/keycloak/scale", env.namespace);
    let requests = env.requests().await;
    assert!(requests.iter().any(|r| r.starts_with(&scale)), "{requests:#?}");
}

#[tokio::test]
async fn the_wait_is_on_pods_not_on_ready() {
    // Terminating takes long; Ready at 0 instances would read true at once.
    let timing = Timing { pod_terminate: Duration::from_millis(400), ..quick() };
    let env = Setup::new().timing(timing).keycloak("keycloak", 2).start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    let started = tokio::time::Instant::now();
    keycloak.scale_down().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400), "returned before the pods were gone");
    assert_eq!(env.keycloak_state("keycloak").await.unwrap().2, 0);
}

#[tokio::test]
async fn every_served_version_is_discovered() {
    for (versions, expected) in
        [(&["v2alpha1"][..], "v2alpha1"), (&["v2beta1"][..], "v2beta1"), (&["v2beta1", "v2alpha1"][..], "v2beta1")]
    {
        let env = Setup::new().served_versions(versions).timing(quick()).keycloak("kc", 1).start().await;
        let keycloak = KubeKeycloak::new(env.cluster.clone(), "kc", env.settings());
        let (resource, has_scale) = keycloak.served().await.unwrap();
        assert_eq!(resource.version, expected);
        assert!(*has_scale);
        assert_eq!(keycloak.scale_down().await.unwrap(), 1);
        let scale = format!("/k8s.keycloak.org/{expected}/namespaces/{}/keycloaks/kc/scale", env.namespace);
        assert!(env.requests().await.iter().any(|r| r.contains(&scale)));
    }
}

#[tokio::test]
async fn without_a_scale_subresource_spec_instances_is_patched() {
    let env = Setup::new().without_scale_subresource().timing(quick()).keycloak("keycloak", 2).start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    assert_eq!(keycloak.scale_down().await.unwrap(), 2);
    keycloak.scale_up(2).await.unwrap();
    let requests = env.requests().await;
    assert!(requests.iter().any(|r| r.starts_with("PATCH ") && r.contains("/keycloaks/keycloak?")), "{requests:#?}");
    assert!(requests.iter().all(|r| !r.contains("/scale")), "{requests:#?}");
    assert_eq!(env.keycloak_state("keycloak").await, Some((2, 2, 2, None)));
}

#[tokio::test]
async fn pods_stuck_terminating_are_named_after_the_deadline() {
    let env = Setup::new().timing(quick()).stuck_pods(1).keycloak("keycloak", 2).start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    let err = keycloak.scale_down().await.unwrap_err();
    let KeycloakError::Timeout { stuck, .. } = &err else { panic!("{err:?}") };
    assert_eq!(stuck, &vec!["keycloak-1".to_owned()]);
    assert!(err.to_string().contains("--force-delete-stuck-pods"), "{err}");
}

#[tokio::test]
async fn force_delete_removes_stuck_pods_when_asked() {
    let env = Setup::new().timing(quick()).stuck_pods(1).keycloak("keycloak", 2).start().await;
    let settings = ScaleSettings { force_delete_stuck_pods: true, ..env.settings() };
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", settings);
    assert_eq!(keycloak.scale_down().await.unwrap(), 2);
    let delete = format!("DELETE /api/v1/namespaces/{}/pods/keycloak-1", env.namespace);
    assert!(env.requests().await.iter().any(|r| r.starts_with(&delete)));
    assert_eq!(env.keycloak_state("keycloak").await.unwrap().2, 0, "the stuck pod is gone");
}

#[tokio::test]
async fn a_slow_start_times_out_with_the_ready_count() {
    let timing = Timing { pod_ready: Duration::from_secs(30), ..quick() };
    let env = Setup::new().timing(timing).keycloak("keycloak", 0).start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    let err = keycloak.scale_up(2).await.unwrap_err();
    assert!(matches!(&err, KeycloakError::Timeout { what, .. } if what.contains("it has 0")), "{err:?}");
}

#[tokio::test]
async fn a_missing_permission_names_the_verb_and_the_resource() {
    let env = Setup::new().timing(quick()).keycloak("keycloak", 1).forbid("patch", "keycloaks/scale").start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    let err = keycloak.scale_down().await.unwrap_err();
    assert!(matches!(err, KeycloakError::Forbidden { .. }), "{err:?}");
    let text = err.to_string();
    let expected = format!("cannot patch keycloaks/scale in namespace {} (context site-b)", env.namespace);
    assert!(text.contains(&expected), "{text}");
    assert_eq!(env.keycloak_state("keycloak").await.unwrap().0, 1, "nothing was scaled");
}

#[tokio::test]
async fn rbac_is_asked_for_every_permission_before_anything_changes() {
    let env = Setup::new().timing(quick()).keycloak("keycloak", 1).forbid("patch", "keycloaks/scale").start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    let lease = LeaseLock::new(env.cluster.clone(), "site-sync", Duration::from_secs(60));
    let mut wanted = keycloak.permissions().await.unwrap();
    wanted.extend(lease.permissions());
    let err = access::check(&env.cluster, &wanted).await.unwrap_err();
    let expected = format!("cannot patch keycloaks/scale in namespace {} (context site-b), which the run needs", env.namespace);
    assert!(err.to_string().contains(&expected), "{err}");

    // Several missing: all named, in one message.
    let env = Setup::new()
        .timing(quick())
        .keycloak("keycloak", 1)
        .forbid("get", "statefulsets")
        .forbid("delete", "leases")
        .start()
        .await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    let lease = LeaseLock::new(env.cluster.clone(), "site-sync", Duration::from_secs(60));
    let mut wanted = keycloak.permissions().await.unwrap();
    wanted.extend(lease.permissions());
    let err = access::check(&env.cluster, &wanted).await.unwrap_err();
    assert!(err.to_string().contains("cannot get statefulsets, cannot delete leases in namespace"), "{err}");

    let env = Setup::new().timing(quick()).keycloak("keycloak", 1).forbid("get", "secrets").start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    access::check(&env.cluster, &keycloak.permissions().await.unwrap()).await.unwrap();
    assert_eq!(env.keycloak_state("keycloak").await.unwrap().0, 1, "asking changes nothing");
}

#[tokio::test]
async fn a_missing_cr_or_crd_is_a_clear_not_found() {
    let env = Setup::new().timing(quick()).start().await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "nope", env.settings());
    let err = keycloak.observe().await.unwrap_err();
    assert!(matches!(&err, KeycloakError::NotFound { what } if what.contains("keycloaks \"nope\"")), "{err:?}");
}

#[tokio::test]
async fn a_rolling_update_shows_in_the_observation() {
    let env = Setup::new().timing(quick()).keycloak("keycloak", 2).start().await;
    env.set_rolling_update("keycloak", true).await;
    let keycloak = KubeKeycloak::new(env.cluster.clone(), "keycloak", env.settings());
    assert!(keycloak.observe().await.unwrap().unwrap().rolling_update);
}

#[tokio::test]
async fn an_unknown_context_lists_the_known_ones() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), keycloak_scale::fake::kubeconfig(&[("site-a", "http://127.0.0.1:9", "kc")])).unwrap();
    let err = SiteCluster::from_kubeconfig(Some(file.path()), Some("site-z"), None).await.unwrap_err();
    assert_eq!(err.to_string(), "kubeconfig: context \"site-z\" is not in the kubeconfig (it has: site-a)");
}

#[tokio::test]
async fn commands_stop_and_start_keycloak_outside_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("running");
    std::fs::write(&flag, "").unwrap();
    let keycloak = keycloak_scale::external::CommandKeycloak {
        ready: None,
        stop: format!("rm -f {}", flag.display()),
        start: format!("touch {}", flag.display()),
        is_stopped: format!("test ! -e {}", flag.display()),
        timeout: Duration::from_secs(5),
        poll: Duration::from_millis(20),
    };
    assert_eq!(keycloak.observe().await.unwrap().unwrap().spec_instances, 1);
    assert_eq!(keycloak.scale_down().await.unwrap(), 1);
    assert!(!flag.exists());
    keycloak.scale_up(1).await.unwrap();
    assert!(flag.exists());
    let broken = keycloak_scale::external::CommandKeycloak { stop: "exit 3".to_owned(), ..keycloak };
    assert!(broken.scale_down().await.unwrap_err().to_string().contains("`exit 3` failed"));
}
