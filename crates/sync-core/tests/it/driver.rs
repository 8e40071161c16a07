use fake_ispn::{ClusterSpec, KEYCLOAK_26_CACHES};
use ispn_xsite::{ClearScope, SiteAction, SiteApi};
use sync_core::{Driver, RunOutcome, Step};

use crate::support::*;

/// Split brain: each site took the other offline, then both took writes.
async fn split_brain(fake: &fake_ispn::FakeCluster) {
    let (a, b) = (fake.site("site-a"), fake.site("site-b"));
    for c in KEYCLOAK_26_CACHES {
        let c = cache(c);
        a.cache_site_action(&c, &site("site-b"), SiteAction::TakeOffline).await.unwrap();
        b.cache_site_action(&c, &site("site-a"), SiteAction::TakeOffline).await.unwrap();
        for i in 0..20 {
            a.put(&c, &format!("shared-{i}"), "from-a").await.unwrap();
            b.put(&c, &format!("shared-{i}"), "from-b").await.unwrap();
            a.put(&c, &format!("a-only-{i}"), "a").await.unwrap();
            b.put(&c, &format!("b-only-{i}"), "b").await.unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_split_brain_is_healed_and_keycloak_restored() {
    let (fake, ports) = model(ClusterSpec::two_sites("site-a", "site-b"), 3);
    split_brain(&fake).await;
    let before_a = fake.snapshot("site-a").entries;
    let plan = plan();
    let events = Events::default();
    let outcome = Driver::new(&plan, &ports, &events).run("run-1".to_owned()).await;
    let RunOutcome::Succeeded(report) = outcome else { panic!("{outcome:?}\n{:#?}", events.all()) };
    assert_eq!(report.caches.len(), 4);
    assert_eq!(report.keycloak_instances, Some(3));
    let (a, b) = (fake.snapshot("site-a"), fake.snapshot("site-b"));
    assert_eq!(a.entries, before_a, "the active site is unchanged");
    assert_eq!(b.entries, a.entries, "the offline site equals the active site");
    assert_eq!(ports.keycloak.instances(), (3, 3));
    assert!(fake.world().clears().iter().all(|c| c.reached.len() == 1 && c.origin == "site-b"));
    let journal = ports.journal.journal().unwrap();
    assert_eq!(journal.step, Step::Report);
    assert!(journal.is_complete());
    // Both directions replicate again.
    let a_site = fake.site("site-a");
    a_site.put(&cache("work"), "after", "x").await.unwrap();
    assert_eq!(fake.site("site-b").get(&cache("work"), "after").await.unwrap().as_deref(), Some("x"));
    let _ = ClearScope::LocalOnly;
}
