use ispn_xsite::json_stream::decode_key;
use ispn_xsite::{
    ApiFlavor, BackupStatus, CacheName, CacheOutcome, CacheResults, ContainerInfo, ContainerSiteStatus, Error, NodeStatus,
    NodeStatuses, PushStatus, PushStatusReport, ServerVersion, SiteName, Subject, entry_text,
};
use serde_json::json;

#[test]
fn versions_parse_and_choose_paths() {
    let v14 = ServerVersion::parse("14.0.35.Final").unwrap();
    assert_eq!((v14.major, v14.minor, v14.micro), (14, 0, 35));
    assert_eq!(v14.api(), ApiFlavor::CacheManagers);
    assert!(v14.may_report_mixed());
    let v15 = ServerVersion::parse("15.0.21.Final").unwrap();
    assert_eq!(v15.api(), ApiFlavor::Container);
    assert!(v15.may_report_mixed());
    assert!(!ServerVersion::parse("15.2.6.Final").unwrap().may_report_mixed());
    let v16 = ServerVersion::parse("16.0.7").unwrap();
    assert_eq!((v16.major, v16.minor, v16.micro), (16, 0, 7));
    assert!(!v16.may_report_mixed());
    assert!(ServerVersion::parse("Infinispan 'Keep Rollin'' 16.0.7").is_none());
}

#[test]
fn container_info_from_a_real_15_body() {
    let body = r#"{"version":"15.0.21.Final","name":"default","coordinator":true,"cache_configuration_names":["work"],"cluster_name":"site-a","physical_addresses":"[127.0.0.1:7800]","coordinator_address":"site-a-1","cache_manager_status":"RUNNING","created_cache_count":1,"running_cache_count":1,"node_address":"site-a-1","cluster_members":["site-a-1"],"cluster_members_physical_addresses":["127.0.0.1:7800"],"cluster_size":1,"defined_caches":[{"name":"work","started":true}],"local_site":"site-a","relay_node":true,"relay_nodes_address":["site-a-1"],"sites_view":["site-a","site-b"],"rebalancing_enabled":true}"#;
    let info: ContainerInfo = serde_json::from_str(body).unwrap();
    assert_eq!(info.local_site.as_deref(), Some("site-a"));
    assert!(info.sees(&SiteName::new("site-b").unwrap()));
    assert!(!info.sees(&SiteName::new("site-c").unwrap()));
}

#[test]
fn backup_statuses_parse_including_mixed() {
    let map: std::collections::BTreeMap<String, BackupStatus> = serde_json::from_value(json!({
        "site-b": {"status": "online"},
        "NYC": {"status": "mixed", "online": ["node-a-1234"], "offline": ["node-b-5678"]},
    }))
    .unwrap();
    assert_eq!(map["site-b"], BackupStatus::Online);
    assert_eq!(map["NYC"], BackupStatus::Mixed { online: vec!["node-a-1234".into()], offline: vec!["node-b-5678".into()] });
    assert!(serde_json::from_value::<BackupStatus>(json!({"status": "sideways"})).is_err());
}

#[test]
fn container_status_mixed_always_has_its_three_lists() {
    let status: ContainerSiteStatus =
        serde_json::from_value(json!({"status":"mixed","online":["CACHE_1"],"offline":["CACHE_2"],"mixed":[]})).unwrap();
    assert_eq!(
        status,
        ContainerSiteStatus::Mixed { online: vec!["CACHE_1".into()], offline: vec!["CACHE_2".into()], mixed: vec![] }
    );
}

#[test]
fn node_statuses_prove_offline_only_when_every_node_says_so() {
    let nodes: NodeStatuses = serde_json::from_value(json!({"a-1": "offline", "a-2": "failed"})).unwrap();
    assert!(!nodes.all_offline());
    assert_eq!(nodes.not_offline(), vec!["a-2"]);
    assert_eq!(nodes.0["a-2"], NodeStatus::Failed);
    assert!(!NodeStatuses::default().all_offline(), "an empty answer proves nothing");
    let all: NodeStatuses = serde_json::from_value(json!({"a-1": "offline", "a-2": "offline"})).unwrap();
    assert!(all.all_offline());
}

#[test]
fn node_statuses_prove_online_only_when_every_node_says_so() {
    for mixed in [json!({"a-1": "online", "a-2": "offline"}), json!({"a-1": "online", "a-2": "failed"})] {
        let nodes: NodeStatuses = serde_json::from_value(mixed).unwrap();
        assert!(!nodes.all_online() && !nodes.all_offline(), "{nodes:?}");
    }
    assert!(!NodeStatuses::default().all_online(), "an empty answer proves nothing");
    let all: NodeStatuses = serde_json::from_value(json!({"a-1": "online", "a-2": "online"})).unwrap();
    assert!(all.all_online());
}

#[test]
fn status_words_and_versions_print_as_the_server_spells_them() {
    for word in ["online", "offline", "mixed", "unknown"] {
        let backup: BackupStatus = serde_json::from_value(json!({ "status": word })).unwrap();
        let container: ContainerSiteStatus = serde_json::from_value(json!({ "status": word })).unwrap();
        assert_eq!((backup.as_str(), container.as_str()), (word, word));
    }
    assert_eq!(ServerVersion::parse(" 15.0.21.Final\n").unwrap().to_string(), "15.0.21.Final");
}

#[test]
fn push_status_reports_every_status_word_and_the_error_map() {
    for word in ["IDLE", "SENDING", "OK", "ERROR", "CANCELED"] {
        let report = PushStatusReport::from_json(&json!({"site-b": word})).unwrap();
        let status = report.for_site(&SiteName::new("site-b").unwrap()).unwrap();
        assert_eq!((status.as_str(), status.to_string().as_str()), (word, word));
    }
    assert_eq!(
        PushStatusReport::from_json(&json!({"ERROR": "Unable to check cluster state"})),
        Some(PushStatusReport::GatherFailed("Unable to check cluster state".into()))
    );
    let named_error_site = PushStatusReport::from_json(&json!({"ERROR": "OK"})).unwrap();
    assert_eq!(named_error_site.for_site(&SiteName::new("ERROR").unwrap()), Some(PushStatus::Ok));
    assert_eq!(PushStatusReport::from_json(&json!({"site-b": "CANCELLING"})), None, "documented but never sent");
}

#[test]
fn container_maps_treat_anything_but_ok_as_failure() {
    let results = CacheResults::from_json(&json!({
        "work": "ok",
        "actionTokens": "Incorrect site name: site-z",
        "loginFailures": "OK",
    }))
    .unwrap();
    let work = CacheName::new("work").unwrap();
    assert!(results.is_ok(&work));
    assert!(!results.is_ok(&CacheName::new("actionTokens").unwrap()), "a failure's text is not ok");
    assert!(!results.is_ok(&CacheName::new("sessions").unwrap()), "a cache missing from the answer is not ok");
    let failures: Vec<(&str, &str)> = results.failures().map(|(c, t)| (c.as_str(), t)).collect();
    assert_eq!(failures, vec![("actionTokens", "Incorrect site name: site-z"), ("loginFailures", "OK")]);
    assert_eq!(results.0[&work], CacheOutcome::Ok);
}

#[test]
fn entry_values_unwrap_protostream_strings() {
    assert_eq!(entry_text(&json!({"_type": "string", "_value": "v1"})), "v1");
    assert_eq!(entry_text(&json!("plain")), "plain");
    assert_eq!(entry_text(&json!({"_type": "int32", "_value": 5})), r#"{"_type":"int32","_value":5}"#);
    // Only strings are unwrapped: a number sent as text must not equal the string on the other site.
    assert_eq!(entry_text(&json!({"_type": "int64", "_value": "5"})), r#"{"_type":"int64","_value":"5"}"#);
}

#[test]
fn keys_that_the_server_does_not_escape_still_decode() {
    assert_eq!(decode_key(br#""plain""#).as_deref(), Some("plain"));
    // Real 15.0.21 output for the key  we"ird\key  and a key with a raw tab.
    assert_eq!(decode_key(b"\"we\\\"ird\\key\"").as_deref(), Some("we\"ird\\key"));
    assert_eq!(decode_key(b"\"tab\tkey\"").as_deref(), Some("tab\tkey"));
}

#[test]
fn error_answers_are_classified_by_their_body() {
    let cache = CacheName::new("work").unwrap();
    let site = SiteName::new("site-z").unwrap();
    let subject = Subject { cache: Some(&cache), site: Some(&site) };
    let classify = |status, body| Error::from_answer("http://h", "GET /x", "admin", status, body, subject);
    assert!(matches!(
        classify(404, "ISPN012010: Cache with name 'work' not found amongst the configured caches"),
        Error::UnknownCache { .. }
    ));
    assert!(matches!(classify(404, "Cache 'work' does not have backup sites."), Error::NoBackups { .. }));
    assert!(matches!(classify(404, "Cache 'work' does not backup to site 'site-z'"), Error::UnknownSite { .. }));
    assert!(matches!(classify(401, ""), Error::Unauthorized { .. }));
    assert!(matches!(classify(403, "ISPN000287"), Error::Forbidden { .. }));
    let server = classify(500, "ISPN012047: Site operation on 'site-z' failed: 'x'");
    assert!(matches!(server, Error::Server { status: 500, .. }) && !server.is_transient());
    assert!(classify(503, "busy").is_transient());
    let missing_key = Error::from_answer("http://h", "GET /x", "admin", 404, "", Subject { cache: Some(&cache), site: None });
    assert!(missing_key.is_plain_not_found());
}

#[test]
fn only_an_answer_the_server_failed_to_produce_is_worth_reading_another_way() {
    let classify = |status, body| Error::from_answer("http://h", "GET /x", "admin", status, body, Subject::default());
    let cut = Error::Interrupted { endpoint: "http://h".into(), what: "GET /x".into(), detail: "closed".into() };
    assert!(cut.is_failed_answer());
    assert!(classify(500, "Cannot convert the stored value").is_failed_answer());
    for status in [401, 403, 404, 502, 503, 504] {
        assert!(!classify(status, "").is_failed_answer(), "{status}");
    }
    assert!(!Error::Unreachable { endpoint: "http://h".into(), detail: "refused".into() }.is_failed_answer());
    let slow = Error::Timeout { endpoint: "http://h".into(), what: "GET /x".into(), after: std::time::Duration::from_secs(1) };
    assert!(!slow.is_failed_answer());
}

#[test]
fn every_error_message_says_what_to_do_and_names_the_endpoint() {
    let cache = CacheName::new("work").unwrap();
    let errors = [
        Error::Unreachable { endpoint: "http://h:1".into(), detail: "connection refused".into() },
        Error::Unauthorized { endpoint: "http://h:1".into(), user: "admin".into() },
        Error::UnknownCache { endpoint: "http://h:1".into(), cache: cache.clone() },
        Error::NoBackups { endpoint: "http://h:1".into(), cache },
    ];
    for error in errors {
        let text = error.to_string();
        assert!(text.starts_with("http://h:1: "), "{text}");
        assert!(text.contains(';'), "a cause and a remedy: {text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }
}
