//! The HTTP front end: Infinispan's REST v2 routing, authentication and answer formats over the
//! shared [`World`].
//!
//! Routing follows the real server rather than axum's router: the path is split on `/`, empty
//! segments are dropped (so a trailing slash never matters), each segment is percent-decoded with
//! `+` read as a space, and `?action=` selects the operation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use ispn_xsite::{CacheName, SiteAction, TakeOfflineConfig};
use tokio::sync::watch;

use crate::auth::{NonceBook, Verdict, challenge, verify};
use crate::direct::lock;
use crate::model::{Entries, Failure, RequestFault, World};

/// Flags the fake accepts in the `flags` header (a subset of `org.infinispan.context.Flag`).
const KNOWN_FLAGS: [&str; 10] = [
    "SKIP_XSITE_BACKUP",
    "SKIP_CACHE_LOAD",
    "SKIP_CACHE_STORE",
    "SKIP_LOCKING",
    "IGNORE_RETURN_VALUES",
    "FORCE_WRITE_LOCK",
    "ZERO_LOCK_ACQUISITION_TIMEOUT",
    "SKIP_INDEXING",
    "SKIP_LISTENER_NOTIFICATION",
    "SKIP_STATISTICS",
];

/// Per-site state of the HTTP front end.
#[derive(Debug)]
pub(crate) struct SiteService {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) site: usize,
    pub(crate) nonces: Mutex<NonceBook>,
    /// Fires when the server shuts down, so that requests stalled by a fault end too.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The cache whose site status is being changed right now, if any (see [`status_change`]).
    pub(crate) changing: Mutex<Option<String>>,
    /// Caches whose site status machinery deadlocked.
    pub(crate) deadlocked: Mutex<std::collections::BTreeSet<String>>,
}

/// How long a site status change takes on the server: the window in which a second one, on
/// another cache, deadlocks it.
const STATUS_CHANGE_TIME: Duration = Duration::from_millis(3);

pub(crate) fn router(service: Arc<SiteService>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(service)
}

enum Reply {
    Json(StatusCode, serde_json::Value),
    Text(StatusCode, String),
    Empty(StatusCode),
    /// One value: as JSON (the default), as text, or in its stored form.
    Value(String, ValueForm),
    /// A listing: the cache's map and how long the answer takes to start.
    Keys(Arc<Entries>, Duration),
    Entries(Arc<Entries>, Duration),
}

impl Reply {
    fn failure(failure: Failure) -> Self {
        match failure {
            Failure::Http(status, body) if body.is_empty() => {
                Self::Empty(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Failure::Http(status, body) => {
                Self::Text(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body)
            }
            Failure::Unreachable | Failure::Timeout { .. } => {
                Self::Text(StatusCode::SERVICE_UNAVAILABLE, "fake-ispn: unavailable".to_owned())
            }
        }
    }

    fn from<T>(outcome: Result<T, Failure>, ok: impl FnOnce(T) -> Self) -> Self {
        match outcome {
            Ok(value) => ok(value),
            Err(failure) => Self::failure(failure),
        }
    }

    fn json<T: serde::Serialize>(value: T) -> Self {
        Self::Json(StatusCode::OK, serde_json::to_value(value).unwrap_or(serde_json::Value::Null))
    }

    fn bad_request(text: &str) -> Self {
        Self::Text(StatusCode::BAD_REQUEST, text.to_owned())
    }

    fn not_found() -> Self {
        Self::Text(StatusCode::NOT_FOUND, "Resource not found".to_owned())
    }

    fn not_allowed() -> Self {
        Self::Text(StatusCode::METHOD_NOT_ALLOWED, "Not allowed".to_owned())
    }
}

fn decode_component(segment: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode_component(k), decode_component(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// What `?action=` selected: nothing, a known verb, or an invalid request.
fn action<'a>(query: &'a Query, allowed: &[&str]) -> Result<Option<&'a str>, Reply> {
    match query.get("action") {
        None => Ok(None),
        Some("") => Err(Reply::bad_request("Invalid action")),
        Some(a) if allowed.contains(&a) => Ok(Some(a)),
        Some(_) => Err(Reply::bad_request("Invalid 'action' parameter supplied")),
    }
}

fn site_action(verb: &str) -> Option<SiteAction> {
    Some(match verb {
        "take-offline" => SiteAction::TakeOffline,
        "bring-online" => SiteAction::BringOnline,
        "start-push-state" => SiteAction::StartPushState,
        "cancel-push-state" => SiteAction::CancelPushState,
        "cancel-receive-state" => SiteAction::CancelReceiveState,
        _ => return None,
    })
}

fn forbidden(user: &str) -> Reply {
    Reply::Text(
        StatusCode::FORBIDDEN,
        format!("ISPN000287: Unauthorized access: subject 'Subject with principal(s): [{user}]' lacks 'ADMIN' permission"),
    )
}

async fn handle(State(service): State<Arc<SiteService>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let target = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
    let segments: Vec<String> = parts.uri.path().split('/').filter(|s| !s.is_empty()).map(decode_component).collect();
    let query = Query::parse(parts.uri.query());

    let Some(("rest", rest)) = segments.split_first().map(|(f, r)| (f.as_str(), r)) else {
        return respond(Reply::not_found());
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();

    let personality = lock(&service.world).personality(service.site);
    let anonymous = matches!(rest.as_slice(), ["v2", "container", "health", "status"] if personality.has_container_paths())
        || matches!(rest.as_slice(), ["v2", "cache-managers", "default", "health", "status"]);

    let mut user = String::new();
    if !anonymous {
        let verdict = {
            let world = lock(&service.world);
            let nonces = service.nonces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            verify(
                &nonces,
                world.mechanisms(service.site),
                |name| world.user(service.site, name).cloned(),
                &parts.method,
                &target,
                authorization,
            )
        };
        match verdict {
            Verdict::User(name) => user = name,
            Verdict::BadUri => return respond(Reply::bad_request("ISPN012034: Digest URI does not match the request")),
            Verdict::Challenge(mechanisms) => {
                let mut nonces = service.nonces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                for mechanism in mechanisms {
                    response.headers_mut().append(header::WWW_AUTHENTICATE, challenge(&mut nonces, mechanism));
                }
                return response;
            }
        }
    }

    let fault = {
        let mut world = lock(&service.world);
        world.advance();
        world.record(service.site, format!("{} {}", parts.method, target));
        world.next_request_fault(service.site)
    };
    match fault {
        Some(RequestFault::Unavailable) => {
            return respond(Reply::Text(StatusCode::SERVICE_UNAVAILABLE, "fake-ispn: injected 503".to_owned()));
        }
        Some(RequestFault::Unauthorized) => {
            let mut reply = respond(Reply::Empty(StatusCode::UNAUTHORIZED));
            reply.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"default\""));
            return reply;
        }
        Some(RequestFault::ServerError) => {
            return respond(Reply::Text(StatusCode::INTERNAL_SERVER_ERROR, "fake-ispn: injected 500".to_owned()));
        }
        Some(RequestFault::Garbage) => {
            return respond(Reply::Text(
                StatusCode::OK,
                "<html><body>fake-ispn: not what was asked for</body></html>".to_owned(),
            ));
        }
        Some(RequestFault::Timeout | RequestFault::TimeoutAfter(_)) => {
            stall(&service).await;
            return respond(Reply::Text(StatusCode::SERVICE_UNAVAILABLE, "fake-ispn: stalled request".to_owned()));
        }
        Some(RequestFault::LostAnswer) => {
            let _ = dispatch(&service, &parts.method, &rest, &query, &parts.headers, &body, &user);
            stall(&service).await;
            return respond(Reply::Text(StatusCode::SERVICE_UNAVAILABLE, "fake-ispn: stalled request".to_owned()));
        }
        None => {}
    }
    if let Some(cache) = status_subject(personality, &parts.method, &rest, &query) {
        if service.deadlocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&cache) {
            stall(&service).await;
            return respond(Reply::Text(StatusCode::SERVICE_UNAVAILABLE, "fake-ispn: deadlocked".to_owned()));
        }
        if is_status_change(&parts.method, &query) && status_change(&service, &cache).await.is_err() {
            stall(&service).await;
            return respond(Reply::Text(StatusCode::SERVICE_UNAVAILABLE, "fake-ispn: deadlocked".to_owned()));
        }
    }
    respond(dispatch(&service, &parts.method, &rest, &query, &parts.headers, &body, &user))
}

/// The cache of a cache-level x-site request, on lines whose site status is cluster-global
/// (15.0.11 and later): those share the deadlock below.
fn status_subject(personality: crate::spec::Personality, method: &Method, rest: &[&str], query: &Query) -> Option<String> {
    if personality == crate::spec::Personality::V14 {
        return None;
    }
    match rest {
        ["v2", "caches", cache, "x-site", "backups", ..] => {
            let reads_push_status = *method == Method::GET && query.get("action") == Some("push-state-status");
            (!reads_push_status).then(|| (*cache).to_owned())
        }
        _ => None,
    }
}

fn is_status_change(method: &Method, query: &Query) -> bool {
    *method == Method::POST && matches!(query.get("action"), Some("take-offline" | "bring-online" | "start-push-state"))
}

/// Reproduces a real server bug (15.0.21 and 16.0.7, Java-level deadlock on `OfflineStatus`
/// monitors): a status change on one cache while another cache's is in progress deadlocks both;
/// from then on every status request on those caches hangs.
async fn status_change(service: &SiteService, cache: &str) -> Result<(), ()> {
    {
        let mut changing = service.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match changing.as_deref() {
            Some(other) if other != cache => {
                let mut deadlocked = service.deadlocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                deadlocked.insert(other.to_owned());
                deadlocked.insert(cache.to_owned());
                return Err(());
            }
            _ => *changing = Some(cache.to_owned()),
        }
    }
    tokio::time::sleep(STATUS_CHANGE_TIME).await;
    *service.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    if service.deadlocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(cache) { Err(()) } else { Ok(()) }
}

/// Holds a request until the client gives up (or the server stops).
async fn stall(service: &SiteService) {
    let mut shutdown = service.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        _ = shutdown.wait_for(|stopped| *stopped) => {}
    }
}

/// How a value is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueForm {
    Json,
    Text,
    Stored,
}

/// A string value in a protostream-like stored form (a tag, the varint length, the UTF-8): equal
/// values are equal bytes and the string is in them, which is what the contract suite pins of
/// the real server's `application/x-protostream` form (a `WrappedMessage`).
pub(crate) fn stored_form(value: &str) -> Vec<u8> {
    let mut bytes = vec![0x0a];
    let mut length = value.len();
    loop {
        let low = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            bytes.push(low);
            break;
        }
        bytes.push(low | 0x80);
    }
    bytes.extend_from_slice(value.as_bytes());
    bytes
}

fn dispatch(
    service: &SiteService,
    method: &Method,
    rest: &[&str],
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    user: &str,
) -> Reply {
    let mut world = lock(&service.world);
    let site = world.answering(service.site);
    let personality = world.personality(site);
    let admin = world.user(site, user).is_some_and(|u| u.admin);
    match rest {
        ["v2", "server"] if *method == Method::GET => Reply::json(personality.server_info()),
        ["v2", "container", tail @ ..] if personality.has_container_paths() => {
            container(&mut world, site, method, tail, query, admin, user)
        }
        ["v2", "container"] => Reply::bad_request("Invalid action"),
        ["v2", "cache-managers", name, tail @ ..] => {
            if !personality.has_container_paths() && *name != "default" {
                return Reply::Empty(StatusCode::NOT_FOUND);
            }
            container(&mut world, site, method, tail, query, admin, user)
        }
        ["v2", "caches"] if *method == Method::GET => Reply::json(world.cache_names(site)),
        ["v2", "caches", cache, tail @ ..] => {
            let Ok(cache) = CacheName::new(*cache) else { return Reply::failure(Failure::no_cache(cache)) };
            cache_resource(&mut world, site, method, &cache, tail, query, headers, body, admin, user)
        }
        _ => Reply::not_found(),
    }
}

fn container(world: &mut World, site: usize, method: &Method, tail: &[&str], query: &Query, admin: bool, user: &str) -> Reply {
    match (tail, method) {
        ([], &Method::GET) => Reply::json(world.container_info(site)),
        (["health"], &Method::GET) => Reply::json(world.health(site)),
        (["health", "status"], &Method::GET) => Reply::Text(StatusCode::OK, "HEALTHY".to_owned()),
        (["x-site", "backups", ..], _) if !admin => forbidden(user),
        (["x-site", "backups"], &Method::GET) => Reply::json(world.container_backups(site)),
        (["x-site", "backups", target], &Method::GET) => Reply::from(world.container_site_status(site, target), Reply::json),
        (["x-site", "backups", target], &Method::POST) => {
            match action(query, &["take-offline", "bring-online", "start-push-state", "cancel-push-state"]) {
                Ok(Some(verb)) => {
                    let action = site_action(verb).expect("listed verbs are actions");
                    Reply::json(
                        world
                            .container_site_action(site, target, action)
                            .0
                            .into_iter()
                            .map(|(c, o)| {
                                let text = match o {
                                    ispn_xsite::CacheOutcome::Ok => "ok".to_owned(),
                                    ispn_xsite::CacheOutcome::Failed(t) => t,
                                };
                                (c.to_string(), text)
                            })
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    )
                }
                Ok(None) => Reply::not_allowed(),
                Err(reply) => reply,
            }
        }
        ([], _) | (["health"], _) | (["x-site", "backups"], _) | (["x-site", "backups", _], _) => Reply::not_allowed(),
        _ => Reply::not_found(),
    }
}

#[allow(clippy::too_many_arguments)]
fn cache_resource(
    world: &mut World,
    site: usize,
    method: &Method,
    cache: &CacheName,
    tail: &[&str],
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    admin: bool,
    user: &str,
) -> Reply {
    if matches!(tail.first(), Some(&"x-site")) && !admin {
        return forbidden(user);
    }
    match (tail, method) {
        ([], &Method::GET) => match action(query, &["size", "stats", "keys", "entries"]) {
            Ok(Some("size")) => Reply::from(world.size(site, cache.as_str()), Reply::json),
            Ok(Some("stats")) => Reply::from(world.cache_stats(site, cache.as_str()), Reply::json),
            Ok(Some("keys")) => {
                let delay = world.listing_delay(site, cache.as_str());
                Reply::from(world.keys(site, cache.as_str()), |keys| Reply::Keys(keys, delay))
            }
            Ok(Some("entries")) => {
                let delay = world.listing_delay(site, cache.as_str());
                Reply::from(world.entries(site, cache.as_str()), |entries| Reply::Entries(entries, delay))
            }
            Ok(_) => Reply::from(world.size(site, cache.as_str()), |size| {
                let has_backup = world.require_backups(site, cache).is_ok();
                Reply::json(serde_json::json!({"size": size, "has_remote_backup": has_backup}))
            }),
            Err(reply) => reply,
        },
        ([], &Method::POST) => match action(query, &["clear"]) {
            Ok(Some(_)) => {
                let mut skip_xsite = false;
                for flag in headers.get("flags").and_then(|v| v.to_str().ok()).unwrap_or_default().split(',') {
                    let flag = flag.trim();
                    if flag.is_empty() {
                        continue;
                    }
                    if !KNOWN_FLAGS.contains(&flag) {
                        return Reply::bad_request(&format!("No enum constant org.infinispan.context.Flag.{flag}"));
                    }
                    skip_xsite |= flag == "SKIP_XSITE_BACKUP";
                }
                Reply::from(world.clear(site, cache.as_str(), skip_xsite), |()| Reply::Empty(StatusCode::NO_CONTENT))
            }
            Ok(None) => Reply::not_allowed(),
            Err(reply) => reply,
        },
        (["x-site", "backups"], &Method::GET) => match action(query, &["push-state-status"]) {
            Ok(Some(_)) => Reply::from(world.push_state_status(site, cache), Reply::json),
            Ok(None) => Reply::from(world.cache_backups(site, cache), Reply::json),
            Err(reply) => reply,
        },
        (["x-site", "backups", target], &Method::GET) => Reply::from(world.cache_site_nodes(site, cache, target), Reply::json),
        (["x-site", "backups", target], &Method::POST) => match action(
            query,
            &["take-offline", "bring-online", "start-push-state", "cancel-push-state", "cancel-receive-state"],
        ) {
            Ok(Some(verb)) => {
                let action = site_action(verb).expect("listed verbs are actions");
                Reply::from(world.cache_site_action(site, cache, target, action), |()| Reply::Empty(StatusCode::OK))
            }
            Ok(None) => Reply::not_allowed(),
            Err(reply) => reply,
        },
        (["x-site", "backups", target, "take-offline-config"], &Method::GET) => {
            Reply::from(world.take_offline_config(site, cache, target), Reply::json)
        }
        (["x-site", "backups", target, "take-offline-config"], &Method::PUT) => {
            if body.is_empty() {
                return Reply::bad_request("ISPN012031: The request body is empty");
            }
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Reply::bad_request("Invalid JSON");
            };
            let (Some(after_failures), Some(min_wait)) =
                (value.get("after_failures").and_then(|v| v.as_i64()), value.get("min_wait").and_then(|v| v.as_i64()))
            else {
                return Reply::bad_request("ISPN012044: Both 'after_failures' and 'min_wait' are required");
            };
            let config = TakeOfflineConfig { after_failures: after_failures as i32, min_wait };
            Reply::from(world.set_take_offline_config(site, cache, target, config), |changed| {
                Reply::Empty(if changed { StatusCode::NO_CONTENT } else { StatusCode::NOT_MODIFIED })
            })
        }
        (["x-site", "local"], &Method::POST) => match action(query, &["clear-push-state-status"]) {
            Ok(Some(_)) => Reply::from(world.clear_push_state_status(site, cache), Reply::json),
            Ok(None) => Reply::not_allowed(),
            Err(reply) => reply,
        },
        ([key], &Method::GET) => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let form = if accept.contains("text/plain") {
                ValueForm::Text
            } else if accept.contains(ispn_xsite::requests::STORED_MEDIA_TYPE) {
                ValueForm::Stored
            } else {
                ValueForm::Json
            };
            let read = if form == ValueForm::Stored {
                world.stored(site, cache.as_str(), key)
            } else {
                world.get(site, cache.as_str(), key)
            };
            Reply::from(read, |value| match value {
                Some(v) => Reply::Value(v, form),
                None => Reply::Empty(StatusCode::NOT_FOUND),
            })
        }
        ([key], &Method::PUT | &Method::POST) => {
            let value = String::from_utf8_lossy(body);
            Reply::from(world.put(site, cache.as_str(), key, &value), |()| Reply::Empty(StatusCode::NO_CONTENT))
        }
        ([key], &Method::DELETE) => Reply::from(world.delete(site, cache.as_str(), key), |found| {
            Reply::Empty(if found { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND })
        }),
        _ => Reply::not_found(),
    }
}

fn respond(reply: Reply) -> Response {
    let (status, content_type, body) = match reply {
        Reply::Json(status, value) => (status, Some("application/json"), Body::from(value.to_string())),
        Reply::Text(status, text) => (status, Some("text/plain"), Body::from(text)),
        Reply::Empty(status) => (status, None, Body::empty()),
        Reply::Value(value, ValueForm::Text) => (StatusCode::OK, Some("text/plain"), Body::from(value)),
        Reply::Value(value, ValueForm::Json) => {
            (StatusCode::OK, Some("application/json"), Body::from(wrapped(&value).to_string()))
        }
        Reply::Value(value, ValueForm::Stored) => {
            (StatusCode::OK, Some(ispn_xsite::requests::STORED_MEDIA_TYPE), Body::from(stored_form(&value)))
        }
        Reply::Keys(keys, delay) => (
            StatusCode::OK,
            Some("application/json"),
            stream_array(keys, delay, |out, key, _| {
                // Like the real server: only `"` is escaped in key listings.
                out.push(b'"');
                for (i, part) in key.split('"').enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b"\\\"");
                    }
                    out.extend_from_slice(part.as_bytes());
                }
                out.push(b'"');
            }),
        ),
        Reply::Entries(entries, delay) => (
            StatusCode::OK,
            Some("application/json"),
            // Written straight into the chunk: a JSON tree per entry made the fake, not the client
            // under test, the bottleneck of a ten-million-entry comparison.
            stream_array(entries, delay, |out, k, v| {
                out.extend_from_slice(br#"{"key":{"_type":"string","_value":"#);
                json_string(out, k);
                out.extend_from_slice(br#"},"value":{"_type":"string","_value":"#);
                json_string(out, v);
                out.extend_from_slice(b"}}");
            }),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

/// A protostream-encoded string as the real server renders it in JSON.
fn wrapped(value: &str) -> serde_json::Value {
    serde_json::json!({"_type": "string", "_value": value})
}

/// `text` as a JSON string literal.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Streams a cache's map as a JSON array in chunks of a thousand elements, so that a million
/// entries never become one string. A blocking task renders them: the map cannot be borrowed
/// across the body's polls, and a copy of millions of shared pointers cost more than rendering.
fn stream_array(entries: Arc<Entries>, delay: Duration, render: fn(&mut Vec<u8>, &str, &str)) -> Body {
    const PER_CHUNK: usize = 1000;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = vec![b'['];
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            render(&mut out, key, value);
            if i % PER_CHUNK == PER_CHUNK - 1 && sender.blocking_send(Bytes::from(std::mem::take(&mut out))).is_err() {
                // The client went away.
                return;
            }
        }
        out.push(b']');
        let _ = sender.blocking_send(Bytes::from(out));
    });
    let chunks = futures::stream::unfold((receiver, delay), |(mut receiver, delay)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        receiver.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), (receiver, Duration::ZERO)))
    });
    Body::from_stream(chunks)
}
