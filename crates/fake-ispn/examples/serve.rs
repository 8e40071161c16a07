//! Serves a fake two-site pair whose Keycloak caches hold `<entries>` entries each on both
//! sites, one in a thousand with a different value on site-b and one in a thousand only on each
//! side: `serve <entries>`. Prints both URLs, then serves until stdin closes. The benchmarks run
//! `site-sync diff` against it.
#![allow(clippy::print_stdout)]

use std::io::Read;

use fake_ispn::{ClusterSpec, FakeCluster, KEYCLOAK_26_CACHES};
use ispn_xsite::CacheName;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let entries: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).expect("usage: serve <entries-per-cache>");
    let fake = FakeCluster::start(ClusterSpec::two_sites("site-a", "site-b")).await.expect("start");
    {
        let mut world = fake.world();
        world.set_request_recording(false);
        for cache in KEYCLOAK_26_CACHES {
            let cache = CacheName::new(cache).expect("valid");
            let key = |i: usize| format!("session-{i:09}");
            world.load(0, &cache, (0..entries).filter(|i| i % 1000 != 1).map(|i| (key(i), format!("value-{i}"))));
            world.load(
                1,
                &cache,
                (0..entries)
                    .filter(|i| i % 1000 != 2)
                    .map(|i| (key(i), if i % 1000 == 3 { "changed".to_owned() } else { format!("value-{i}") })),
            );
        }
    }
    println!("{} {}", fake.url("site-a"), fake.url("site-b"));
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    fake.shutdown().await;
}
