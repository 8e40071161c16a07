use ispn_xsite::requests::{ClearScope, HttpRequest, Requests};
use ispn_xsite::{ApiFlavor, CacheName, SiteAction, SiteName, TakeOfflineConfig};

fn render(request: &HttpRequest) -> String {
    let mut out = format!("{} {}", request.method(), request.uri());
    let mut headers: Vec<_> = request.headers().iter().collect();
    headers.sort_by_key(|(k, _)| k.as_str());
    for (name, value) in headers {
        out.push_str(&format!("\n  {name}: {}", value.to_str().unwrap()));
    }
    if !request.body().is_empty() {
        out.push_str(&format!("\n  body: {}", String::from_utf8_lossy(request.body())));
    }
    out
}

fn every_request(flavor: ApiFlavor) -> String {
    let r = Requests::new("https://infinispan.example:11222/", "rest", flavor);
    let work = CacheName::new("work").unwrap();
    let odd = CacheName::new("my cache+1/é").unwrap();
    let site = SiteName::new("site-b").unwrap();
    let mut all = vec![
        r.server(),
        r.container_info(),
        r.health(),
        r.health_status(),
        r.cache_names(),
        r.cache_backups(&work),
        r.cache_site_nodes(&work, &site),
        r.container_backups(),
        r.container_site_status(&site),
    ];
    for action in [
        SiteAction::TakeOffline,
        SiteAction::BringOnline,
        SiteAction::StartPushState,
        SiteAction::CancelPushState,
        SiteAction::CancelReceiveState,
    ] {
        all.push(r.cache_site_action(&work, &site, action));
        if action.has_container_form() {
            all.push(r.container_site_action(&site, action));
        }
    }
    all.extend([
        r.push_state_status(&work),
        r.clear_push_state_status(&work),
        r.take_offline_config(&work, &site),
        r.set_take_offline_config(&work, &site, TakeOfflineConfig { after_failures: 3, min_wait: 10_000 }),
        r.size(&work),
        r.clear(&work, ClearScope::LocalOnly),
        r.clear(&work, ClearScope::Replicated),
        r.keys(&work, 1000),
        r.entries(&work, 1000),
        r.get(&work, "user:42"),
        r.stored_value(&work, "user:42"),
        r.put(&work, "user:42", "{\"name\":\"é\"}"),
        r.delete(&work, "user:42"),
        r.size(&odd),
        r.get(&odd, "a b+c/d?e#f%g"),
    ]);
    all.iter().map(render).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_request_on_15_and_later() {
    insta::assert_snapshot!(every_request(ApiFlavor::Container));
}

#[test]
fn every_request_on_14() {
    insta::assert_snapshot!(every_request(ApiFlavor::CacheManagers));
}

#[test]
fn no_request_carries_credentials() {
    for flavor in [ApiFlavor::Container, ApiFlavor::CacheManagers] {
        let text = every_request(flavor).to_ascii_lowercase();
        assert!(!text.contains("authorization"), "builders never authenticate; the transport does");
    }
}

#[test]
fn a_custom_context_path_is_honoured() {
    let r = Requests::new("http://h:1", "/ispn/", ApiFlavor::Container);
    assert_eq!(r.server().uri().to_string(), "http://h:1/ispn/v2/server");
}
