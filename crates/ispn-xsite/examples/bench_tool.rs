//! Helpers for `cargo xtask bench` against real servers, built on this crate's client:
//!
//! - `reset <url-a> <url-b> <user> <password-file> <cache>...`: both directions online, no push
//!   recorded, caches empty (local clears).
//! - `split <url-a> <url-b> <user> <password-file> <cache>...`: pushes cancelled and statuses
//!   cleared, then each site takes the other offline (the data stays).
//! - `fill <url> <user> <password-file> <entries-per-cache> <key-prefix> <cache>...`: writes
//!   entries, 64 requests in flight.
//! - `push-floor <url-a> <url-b> <user> <password-file> <cache>...`: the server-side floor of a
//!   push: prepares site-b (offline, cleared, online), starts site-a's pushes one cache after the
//!   other, polls every 10 ms, and prints the seconds from the first start to the last OK.
//! - `read-values <url-a> <url-b> <user> <password-file> listing|stored <cache>...`: reads every
//!   value of the caches on both sites at once, as a verification does, and prints the seconds:
//!   `listing` streams `?action=entries`; `stored` lists the keys and reads each value as stored
//!   (`application/x-protostream`), 32 reads in flight per site, as the fallback for values a
//!   listing cannot render does. Prints the seconds, then the values read.
//! - `same <url-a> <url-b> <user> <password-file> <cache>...`: fails unless every cache holds
//!   the same number of entries on both sites, more than zero (a benchmark run that did not
//!   synchronize does not count).
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use ispn_xsite::{CacheName, ClearScope, Client, ClientConfig, Credentials, PushStatus, SiteAction, SiteApi, SiteName};

fn client(url: &str, user: &str, password_file: &str) -> Client {
    let password = std::fs::read_to_string(password_file).expect("password file").trim().to_owned();
    let mut config = ClientConfig::new(url, Some(Credentials::new(user, password)));
    config.timeout = Duration::from_secs(60);
    Client::new(config).expect("client")
}

fn names(caches: &[String]) -> Vec<CacheName> {
    caches.iter().map(|c| CacheName::new(c.as_str()).expect("cache")).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (a, b) = (SiteName::new("site-a").expect("valid"), SiteName::new("site-b").expect("valid"));
    match args.as_slice() {
        [command, url_a, url_b, user, password, caches @ ..] if command == "reset" || command == "split" => {
            let (ca, cb) = (client(url_a, user, password), client(url_b, user, password));
            for cache in names(caches) {
                for (me, other) in [(&ca, &b), (&cb, &a)] {
                    let _ = me.cache_site_action(&cache, other, SiteAction::CancelPushState).await;
                    me.cache_site_action(&cache, other, SiteAction::CancelReceiveState).await.expect("cancel-receive");
                    me.clear_push_state_status(&cache).await.expect("clear status");
                    if command == "split" {
                        me.cache_site_action(&cache, other, SiteAction::TakeOffline).await.expect("take-offline");
                    } else {
                        me.cache_site_action(&cache, other, SiteAction::BringOnline).await.expect("bring-online");
                        me.clear(&cache, ClearScope::LocalOnly).await.expect("clear");
                    }
                }
            }
        }
        [command, url, user, password, entries, prefix, caches @ ..] if command == "fill" => {
            let client = client(url, user, password);
            let entries: usize = entries.parse().expect("entries");
            let started = Instant::now();
            let jobs = names(caches).into_iter().flat_map(|c| (0..entries).map(move |i| (c.clone(), i)));
            futures::stream::iter(jobs)
                .map(|(cache, i)| {
                    let client = &client;
                    async move {
                        let key = format!("{prefix}-{i:08}");
                        client.put(&cache, &key, &format!("value-of-{key}")).await.expect("put");
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<()>>()
                .await;
            println!("{} entries in {:.1} s", entries * caches.len(), started.elapsed().as_secs_f64());
        }
        [command, url_a, url_b, user, password, caches @ ..] if command == "push-floor" => {
            let (ca, cb) = (client(url_a, user, password), client(url_b, user, password));
            let caches = names(caches);
            for cache in &caches {
                cb.cache_site_action(cache, &a, SiteAction::TakeOffline).await.expect("take-offline");
                cb.clear(cache, ClearScope::LocalOnly).await.expect("clear");
                cb.cache_site_action(cache, &a, SiteAction::BringOnline).await.expect("bring-online");
                ca.clear_push_state_status(cache).await.expect("clear status");
            }
            let started = Instant::now();
            for cache in &caches {
                ca.cache_site_action(cache, &b, SiteAction::StartPushState).await.expect("push");
            }
            let mut pending: Vec<&CacheName> = caches.iter().collect();
            while !pending.is_empty() {
                let mut still = Vec::new();
                for cache in pending {
                    match ca.push_state_status(cache).await.expect("status").for_site(&b) {
                        Some(PushStatus::Ok) => {}
                        Some(PushStatus::Sending) => still.push(cache),
                        other => panic!("push of {cache} read {other:?}"),
                    }
                }
                pending = still;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("{:.3}", started.elapsed().as_secs_f64());
            for cache in &caches {
                ca.clear_push_state_status(cache).await.expect("clear status");
            }
        }
        [command, url_a, url_b, user, password, how, caches @ ..] if command == "read-values" => {
            assert!(how == "listing" || how == "stored", "read-values reads by listing or stored, not {how}");
            let (ca, cb) = (client(url_a, user, password), client(url_b, user, password));
            let caches = names(caches);
            let started = Instant::now();
            let per_site = |site: &'static str, client: Client| {
                let caches = caches.clone();
                let how = how.clone();
                async move {
                    let mut values = 0usize;
                    for cache in &caches {
                        values += if how == "listing" {
                            let entries = client.entries(cache).await.unwrap_or_else(|e| panic!("{site} {cache}: {e}"));
                            entries.map(|e| e.expect("entry")).count().await
                        } else {
                            let keys = client.keys(cache).await.unwrap_or_else(|e| panic!("{site} {cache}: {e}"));
                            keys.map(|key| {
                                let (client, cache) = (&client, cache);
                                async move { client.stored_value(cache, &key.expect("key")).await.expect("stored value") }
                            })
                            .buffer_unordered(32)
                            .filter(|v| std::future::ready(v.is_some()))
                            .count()
                            .await
                        };
                    }
                    values
                }
            };
            let (on_a, on_b) = futures::join!(per_site("site-a", ca), per_site("site-b", cb));
            println!("{:.3} {}", started.elapsed().as_secs_f64(), on_a + on_b);
        }
        [command, url_a, url_b, user, password, caches @ ..] if command == "same" => {
            let (ca, cb) = (client(url_a, user, password), client(url_b, user, password));
            for cache in names(caches) {
                let (on_a, on_b) = (ca.size(&cache).await.expect("size"), cb.size(&cache).await.expect("size"));
                assert!(on_a > 0 && on_a == on_b, "{cache}: {on_a} entries on site-a, {on_b} on site-b");
            }
        }
        _ => panic!("usage: see the module documentation"),
    }
}
