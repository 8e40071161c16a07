//! The HTTP transport against a scripted peer: answers no Infinispan gives on purpose (a body that
//! trickles, stalls or stops half-way, a hang-up, bytes that are not HTTP), and the one error line
//! each becomes. Servers that behave are the contract suite's subject.

use std::time::Duration;

use futures::TryStreamExt;
use ispn_xsite::{CacheName, Client, ClientConfig, Credentials, Error, SiteApi, TlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the peer does with one request; requests get the answers in the order they arrive.
enum Answer {
    /// A complete answer at once.
    Whole { status: u16, body: &'static str },
    /// Headers at once, then the body in `pieces` parts `gap` apart.
    Trickle { body: String, pieces: usize, gap: Duration },
    /// Headers promising more than `sent`, then `sent`, then silence.
    StallAfter { sent: &'static str },
    /// Headers promising more than `sent`, then `sent`, then the connection is closed.
    CloseAfter { sent: &'static str },
    /// The request is read and the connection closed without a byte.
    HangUp,
    /// Bytes that are not HTTP, as from a port that serves something else.
    NotHttp,
}

/// The version probe's answer: a 15.0 server, so that the calls after it use today's paths.
const PROBE: Answer = Answer::Whole { status: 200, body: r#"{"version":"15.0.21.Final","local_site":"site-a"}"# };

/// A peer on 127.0.0.1 that plays its script, one answer per connection, then keeps still.
struct Peer {
    url: String,
    task: JoinHandle<()>,
}

impl Peer {
    async fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            // Stalled connections stay open until the peer is dropped.
            let mut held = Vec::new();
            for answer in script {
                let (mut stream, _) = listener.accept().await.unwrap();
                read_request(&mut stream).await;
                if let Some(open) = play(stream, answer).await {
                    held.push(open);
                }
            }
            std::future::pending::<()>().await;
        });
        Self { url, task }
    }

    fn client(&self, timeout: Duration) -> Client {
        let mut config = ClientConfig::new(format!("{}/", self.url), Some(Credentials::new("admin", "secret-password")));
        config.timeout = timeout;
        Client::new(config).unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(stream: &mut TcpStream) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the client closed before its request was complete");
        request.extend_from_slice(&buffer[..read]);
    }
}

fn head(status: u16, length: usize) -> String {
    format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// Plays one answer; returns the connection when it must stay open.
async fn play(mut stream: TcpStream, answer: Answer) -> Option<TcpStream> {
    match answer {
        Answer::Whole { status, body } => {
            stream.write_all(format!("{}{body}", head(status, body.len())).as_bytes()).await.unwrap();
            None
        }
        Answer::Trickle { body, pieces, gap } => {
            stream.write_all(head(200, body.len()).as_bytes()).await.unwrap();
            for piece in body.as_bytes().chunks(body.len().div_ceil(pieces)) {
                tokio::time::sleep(gap).await;
                // The client may have given up already; what it saw is the test's subject.
                if stream.write_all(piece).await.is_err() {
                    return None;
                }
            }
            None
        }
        Answer::StallAfter { sent } => {
            stream.write_all(format!("{}{sent}", head(200, sent.len() + 100)).as_bytes()).await.unwrap();
            Some(stream)
        }
        Answer::CloseAfter { sent } => {
            stream.write_all(format!("{}{sent}", head(200, sent.len() + 100)).as_bytes()).await.unwrap();
            None
        }
        Answer::HangUp => None,
        Answer::NotHttp => {
            stream.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").await.unwrap();
            None
        }
    }
}

fn work() -> CacheName {
    CacheName::new("work").unwrap()
}

async fn list_keys(client: &Client) -> Result<Vec<String>, Error> {
    client.keys(&work()).await?.try_collect().await
}

/// A listing of `count` keys as the server renders it.
fn keys_body(count: usize) -> String {
    let keys: Vec<String> = (0..count).map(|i| format!("\"k{i}\"")).collect();
    format!("[{}]", keys.join(","))
}

#[tokio::test]
async fn a_plain_answer_slower_in_all_than_the_timeout_is_cut_and_names_its_request() {
    let body = "1234567890".to_owned();
    let peer = Peer::start(vec![PROBE, Answer::Trickle { body, pieces: 10, gap: Duration::from_millis(300) }]).await;
    let client = peer.client(Duration::from_secs(2));
    let error = client.size(&work()).await.unwrap_err();
    let Error::Timeout { what, after, .. } = &error else { panic!("expected a timeout, got {error:?}") };
    assert_eq!((what.as_str(), *after), ("GET /rest/v2/caches/work?action=size", Duration::from_secs(2)));
    let line = error.to_string();
    assert!(line.starts_with(&format!("{}: ", peer.url)) && line.contains("GET /rest/v2/caches/work?action=size"), "{line}");
}

#[tokio::test]
async fn a_listing_that_takes_longer_than_the_timeout_but_keeps_coming_is_read_whole() {
    let body = keys_body(50);
    let peer = Peer::start(vec![PROBE, Answer::Trickle { body, pieces: 10, gap: Duration::from_millis(300) }]).await;
    let keys = list_keys(&peer.client(Duration::from_secs(2))).await.unwrap();
    assert_eq!(keys.len(), 50);
    assert_eq!((keys[0].as_str(), keys[49].as_str()), ("k0", "k49"));
}

#[tokio::test]
async fn a_listing_that_stops_coming_times_out_and_one_cut_off_is_interrupted() {
    let sent = r#"["k0","k1","#;
    let what = "GET /rest/v2/caches/work?action=keys&batch=10000";
    let stalled = Peer::start(vec![PROBE, Answer::StallAfter { sent }]).await;
    match list_keys(&stalled.client(Duration::from_millis(500))).await {
        Err(Error::Timeout { what: request, .. }) => assert_eq!(request, what),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let cut = Peer::start(vec![PROBE, Answer::CloseAfter { sent }]).await;
    match list_keys(&cut.client(Duration::from_secs(5))).await {
        Err(Error::Interrupted { what: request, .. }) => assert_eq!(request, what),
        other => panic!("expected an interruption, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hang_up_after_the_request_is_an_interruption_and_bytes_that_are_not_http_are_unreachable() {
    let peer = Peer::start(vec![PROBE, Answer::HangUp]).await;
    let error = peer.client(Duration::from_secs(5)).size(&work()).await.unwrap_err();
    assert!(matches!(&error, Error::Interrupted { what, .. } if what == "GET /rest/v2/caches/work?action=size"), "{error:?}");
    // The server got the request and failed to answer: its log says why, not the URL.
    assert!(error.to_string().contains("look for an error in its log"), "{error}");

    let ssh = Peer::start(vec![Answer::NotHttp]).await;
    let error = ssh.client(Duration::from_secs(5)).server_version().await.unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(error.to_string().contains("check the URL"), "{error}");
}

#[tokio::test]
async fn a_refused_connection_says_refused() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let client = Client::new(ClientConfig::new(format!("http://127.0.0.1:{port}"), None)).unwrap();
    let error = client.server_version().await.unwrap_err();
    let Error::Unreachable { detail, .. } = &error else { panic!("expected unreachable, got {error:?}") };
    // The innermost cause, which says what happened, not reqwest's "error sending request for
    // url (...): client error (Connect): tcp connect error", which only says a request failed.
    assert_eq!(detail, "connection refused");
}

#[tokio::test]
async fn an_unreadable_answer_is_quoted_up_to_120_characters() {
    let long = "a".repeat(120) + "Z";
    let exact = "b".repeat(120);
    let peer = Peer::start(vec![
        PROBE,
        Answer::Whole { status: 200, body: long.leak() },
        Answer::Whole { status: 200, body: exact.leak() },
    ])
    .await;
    let client = peer.client(Duration::from_secs(5));
    let cut = client.container_info().await.unwrap_err().to_string();
    assert!(cut.contains(&format!("\"{}…\"", "a".repeat(120))) && !cut.contains('Z'), "{cut}");
    let whole = client.container_info().await.unwrap_err().to_string();
    assert!(whole.contains(&format!("\"{}\"", "b".repeat(120))) && !whole.contains('…'), "{whole}");
}

#[tokio::test]
async fn only_a_404_without_a_body_means_a_missing_key() {
    let unknown_cache = "ISPN012010: Cache with name 'work' not found amongst the configured caches";
    let peer = Peer::start(vec![
        PROBE,
        Answer::Whole { status: 404, body: "" },
        Answer::Whole { status: 404, body: unknown_cache },
        Answer::Whole { status: 404, body: "" },
        Answer::Whole { status: 404, body: unknown_cache },
    ])
    .await;
    let client = peer.client(Duration::from_secs(5));
    assert_eq!(client.get(&work(), "k").await.unwrap(), None);
    assert!(matches!(client.get(&work(), "k").await, Err(Error::UnknownCache { .. })));
    assert!(!client.delete(&work(), "k").await.unwrap());
    assert!(matches!(client.delete(&work(), "k").await, Err(Error::UnknownCache { .. })));
}

#[tokio::test]
async fn a_stored_value_is_its_bytes_as_sent_and_an_absent_key_is_none() {
    // Protostream is binary: the bytes come back as sent, never decoded or re-encoded as text.
    let peer = Peer::start(vec![
        PROBE,
        Answer::Whole { status: 200, body: "\n\u{5}caf\u{e9}\u{ff}" },
        Answer::Whole { status: 404, body: "" },
        Answer::Whole { status: 500, body: "ISPN000495: cannot convert" },
    ])
    .await;
    let client = peer.client(Duration::from_secs(5));
    let stored = client.stored_value(&work(), "k").await.unwrap().unwrap();
    assert_eq!(&stored[..], "\n\u{5}caf\u{e9}\u{ff}".as_bytes());
    assert_eq!(client.stored_value(&work(), "k").await.unwrap(), None);
    let error = client.stored_value(&work(), "k").await.unwrap_err().to_string();
    assert!(error.contains("500") && error.contains("cannot convert"), "{error}");
}

#[test]
fn the_client_names_its_endpoint_and_keeps_the_password_and_the_ca_out_of_debug_output() {
    let mut config = ClientConfig::new("https://infinispan.example:11222/", Some(Credentials::new("admin", "secret-password")));
    config.tls = TlsMode::CaPem(b"-----BEGIN CERTIFICATE-----".to_vec());
    assert_eq!(format!("{:?}", config.tls), "CaPem(27 bytes)");
    assert_eq!(format!("{:?}", TlsMode::Insecure), "Insecure");
    let client = Client::new(ClientConfig { tls: TlsMode::System, ..config }).unwrap();
    assert_eq!(client.endpoint(), "https://infinispan.example:11222");
    let debug = format!("{client:?}");
    assert!(debug.contains("https://infinispan.example:11222") && debug.contains("admin"), "{debug}");
    assert!(!debug.contains("secret-password"), "{debug}");
}
