use std::time::Duration;

use keycloak_scale::fake::{FakeKube, RunningKube, Timing, kubeconfig};
use keycloak_scale::{ScaleSettings, SiteCluster};

pub const NS: &str = "keycloak";

pub fn quick() -> Timing {
    Timing {
        reconcile: Duration::from_millis(20),
        pod_ready: Duration::from_millis(60),
        pod_terminate: Duration::from_millis(60),
    }
}

pub fn settings() -> ScaleSettings {
    ScaleSettings {
        poll: Duration::from_millis(20),
        scale_down_timeout: Duration::from_millis(1500),
        scale_up_timeout: Duration::from_millis(1500),
        force_delete_stuck_pods: false,
    }
}

/// Serves `kube` on loopback and returns a cluster handle built from a generated kubeconfig,
/// the way the binary builds it.
pub async fn over_loopback(kube: &FakeKube) -> (RunningKube, SiteCluster, tempfile::NamedTempFile) {
    let running = kube.serve().await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), kubeconfig(&[("site-b", &running.url(), NS), ("site-a", "http://127.0.0.1:9", "other")]))
        .unwrap();
    let cluster = SiteCluster::from_kubeconfig(Some(file.path()), Some("site-b"), None).await.unwrap();
    (running, cluster, file)
}

/// The router as the client's transport, no socket at all.
pub fn in_process(kube: &FakeKube) -> SiteCluster {
    SiteCluster { client: kube::Client::new(kube.router(), NS), namespace: NS.to_owned(), context: "in-process".to_owned() }
}
