use std::time::Duration;

use keycloak_scale::fake::{FakeKube, Timing};
use keycloak_scale::{KubeKeycloak, ScaleSettings, SiteCluster};
use sync_core::ports::{Keycloak, KeycloakError};

use crate::support::*;

#[tokio::test]
async fn scale_down_records_the_count_waits_for_the_pods_and_scale_up_restores_it() {
    let kube = FakeKube::new().timing(quick()).keycloak(NS, "keycloak", 3);
    let (_server, cluster, _config) = over_loopback(&kube).await;
    let keycloak = KubeKeycloak::new(cluster, "keycloak", settings());
    let state = keycloak.observe().await.unwrap().unwrap();
    assert_eq!((state.spec_instances, state.ready_instances, state.pods), (3, 3, 3));

    assert_eq!(keycloak.scale_down().await.unwrap(), 3);
    assert_eq!(kube.keycloak_state(NS, "keycloak"), Some((0, 0, 0, Some("3".to_owned()))));
    // A retried or resumed scale-down finds the recorded count rather than the current 0.
    assert_eq!(keycloak.scale_down().await.unwrap(), 3);
    assert_eq!(keycloak.observe().await.unwrap().unwrap().recorded_original, Some(3));

    keycloak.scale_up(3).await.unwrap();
    assert_eq!(kube.keycloak_state(NS, "keycloak"), Some((3, 3, 3, None)), "ready, and the annotation is gone");
    let requests = kube.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PATCH /apis/k8s.keycloak.org/v2alpha1/namespaces/keycloak/keycloaks/keycloak/scale"))
    );
}

#[tokio::test]
async fn the_wait_is_on_pods_not_on_ready() {
    // Terminating takes long; Ready at 0 instances would read true at once.
    let timing = Timing { pod_terminate: Duration::from_millis(400), ..quick() };
    let kube = FakeKube::new().timing(timing).keycloak(NS, "keycloak", 2);
    let keycloak = KubeKeycloak::new(in_process(&kube), "keycloak", settings());
    let started = tokio::time::Instant::now();
    keycloak.scale_down().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400), "returned before the pods were gone");
    assert_eq!(kube.keycloak_state(NS, "keycloak").unwrap().2, 0);
}

#[tokio::test]
async fn every_served_version_is_discovered() {
    for (versions, expected) in
        [(&["v2alpha1"][..], "v2alpha1"), (&["v2beta1"][..], "v2beta1"), (&["v2beta1", "v2alpha1"][..], "v2beta1")]
    {
        let kube = FakeKube::new().served_versions(versions).timing(quick()).keycloak(NS, "kc", 1);
        let keycloak = KubeKeycloak::new(in_process(&kube), "kc", settings());
        let (resource, has_scale) = keycloak.served().await.unwrap();
        assert_eq!(resource.version, expected);
        assert!(*has_scale);
        assert_eq!(keycloak.scale_down().await.unwrap(), 1);
        assert!(
            kube.requests()
                .iter()
                .any(|r| r.contains(&format!("/k8s.keycloak.org/{expected}/namespaces/keycloak/keycloaks/kc/scale")))
        );
    }
}

#[tokio::test]
async fn without_a_scale_subresource_spec_instances_is_patched() {
    let kube = FakeKube::new().without_scale_subresource().timing(quick()).keycloak(NS, "keycloak", 2);
    let keycloak = KubeKeycloak::new(in_process(&kube), "keycloak", settings());
    assert_eq!(keycloak.scale_down().await.unwrap(), 2);
    keycloak.scale_up(2).await.unwrap();
    assert!(kube.requests().iter().all(|r| !r.contains("/scale")));
    assert_eq!(kube.keycloak_state(NS, "keycloak"), Some((2, 2, 2, None)));
}

#[tokio::test]
async fn pods_stuck_terminating_are_named_after_the_deadline() {
    let kube = FakeKube::new().timing(quick()).stuck_pods(1).keycloak(NS, "keycloak", 2);
    let keycloak = KubeKeycloak::new(in_process(&kube), "keycloak", settings());
    let err = keycloak.scale_down().await.unwrap_err();
    let KeycloakError::Timeout { stuck, .. } = &err else { panic!("{err:?}") };
    assert_eq!(stuck, &vec!["keycloak-1".to_owned()]);
    assert!(err.to_string().contains("--force-delete-stuck-pods"), "{err}");
}

#[tokio::test]
async fn force_delete_removes_stuck_pods_when_asked() {
    let kube = FakeKube::new().timing(quick()).stuck_pods(1).keycloak(NS, "keycloak", 2);
    let settings = ScaleSettings { force_delete_stuck_pods: true, ..settings() };
    let keycloak = KubeKeycloak::new(in_process(&kube), "keycloak", settings);
    assert_eq!(keycloak.scale_down().await.unwrap(), 2);
    assert!(kube.requests().iter().any(|r| r.starts_with("DELETE /api/v1/namespaces/keycloak/pods/keycloak-1")));
}

#[tokio::test]
async fn a_slow_start_times_out_with_the_ready_count() {
    let timing = Timing { pod_ready: Duration::from_secs(30), ..quick() };
    let kube = FakeKube::new().timing(timing).keycloak(NS, "keycloak", 0);
    let keycloak = KubeKeycloak::new(in_process(&kube), "keycloak", settings());
    let err = keycloak.scale_up(2).await.unwrap_err();
    assert!(matches!(&err, KeycloakError::Timeout { what, .. } if what.contains("it has 0")), "{err:?}");
}

#[tokio::test]
async fn a_missing_permission_names_the_verb_and_the_resource() {
    let kube = FakeKube::new().timing(quick()).keycloak(NS, "keycloak", 1).forbid("patch", "keycloaks/scale");
    let (_server, cluster, _config) = over_loopback(&kube).await;
    let keycloak = KubeKeycloak::new(cluster, "keycloak", settings());
    let err = keycloak.scale_down().await.unwrap_err();
    assert!(matches!(err, KeycloakError::Forbidden { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("cannot patch keycloaks/scale in namespace keycloak (context site-b)"), "{text}");
    assert_eq!(kube.keycloak_state(NS, "keycloak").unwrap().0, 1, "nothing was scaled");
}

#[tokio::test]
async fn a_missing_cr_or_crd_is_a_clear_not_found() {
    let kube = FakeKube::new().timing(quick());
    let keycloak = KubeKeycloak::new(in_process(&kube), "nope", settings());
    let err = keycloak.observe().await.unwrap_err();
    assert!(matches!(&err, KeycloakError::NotFound { what } if what.contains("keycloaks \"nope\"")), "{err:?}");
}

#[tokio::test]
async fn a_rolling_update_shows_in_the_observation() {
    let kube = FakeKube::new().timing(quick()).keycloak(NS, "keycloak", 2);
    kube.set_rolling_update(NS, "keycloak", true);
    let keycloak = KubeKeycloak::new(in_process(&kube), "keycloak", settings());
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
