//! Pod port-forwarding as the API server does it over WebSocket (`v4.channel.k8s.io`): each
//! forwarded port has a data channel (even) and an error channel (odd); the server first sends
//! the port number (little endian) on both, then relays bytes on the data channel, one binary
//! frame per chunk, the first byte of every frame naming the channel.

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{FakeKube, forward_target, not_found};

#[derive(serde::Deserialize)]
pub(super) struct Ports {
    ports: String,
}

pub(super) async fn handle(
    State(kube): State<FakeKube>,
    Path((ns, pod)): Path<(String, String)>,
    Query(Ports { ports }): Query<Ports>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(target) = forward_target(&kube, &ns, &pod) else { return not_found("pods", &pod) };
    let Ok(port) = ports.split(',').next().unwrap_or_default().parse::<u16>() else {
        return super::status(400, "BadRequest", format!("invalid port {ports:?}"));
    };
    upgrade.protocols(["v4.channel.k8s.io"]).on_upgrade(move |socket| relay(socket, target, port)).into_response()
}

async fn relay(socket: WebSocket, target: std::net::SocketAddr, port: u16) {
    let (mut to_client, mut from_client) = socket.split();
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1u8] {
        if to_client.send(Message::Binary(vec![channel, lo, hi].into())).await.is_err() {
            return;
        }
    }
    let stream = match TcpStream::connect(target).await {
        Ok(stream) => stream,
        Err(e) => {
            let text = format!("error forwarding port {port} to pod: {e}");
            let mut frame = vec![1u8];
            frame.extend(text.as_bytes());
            let _ = to_client.send(Message::Binary(frame.into())).await;
            let _ = to_client.send(Message::Close(None)).await;
            return;
        }
    };
    let (mut pod_read, mut pod_write) = stream.into_split();
    let upstream = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(bytes) if bytes.len() > 1 && bytes[0] == 0 && pod_write.write_all(&bytes[1..]).await.is_err() => {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = pod_write.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match pod_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buffer[..n]);
                    if to_client.send(Message::Binary(frame.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    tokio::join!(upstream, downstream);
}
