//! Comparison peer for `dockwire-loadtest fanout --peer ws-relay`: a plain
//! WebSocket broadcast relay on tokio + tokio-tungstenite, written the way a
//! user would reach for first.
//!
//! Contract (see ../README.md): every text message a client sends is sent
//! unchanged to every *other* connected client. One `tokio::sync::broadcast`
//! channel carries `(sender id, message)`; each connection task forwards what
//! it receives, batching whatever is already queued before one flush.
//! Usage: `peer-tokio-tungstenite [ADDR]` (default 127.0.0.1:9001, loopback only).

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages a slow client may fall behind by before it skips ahead.
const BACKLOG: usize = 16 * 1024;

#[tokio::main]
async fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .expect("ADDR must be IP:PORT");
    assert!(
        addr.ip().is_loopback(),
        "refusing to listen on a non-loopback address"
    );
    let listener = TcpListener::bind(addr).await.expect("could not bind");
    eprintln!("peer-tokio-tungstenite listening on {addr}");
    let (tx, _) = broadcast::channel::<(u64, Utf8Bytes)>(BACKLOG);
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        next_id += 1;
        let rx = tx.subscribe();
        tokio::spawn(serve(stream, next_id, tx.clone(), rx));
    }
}

async fn serve(
    stream: TcpStream,
    id: u64,
    tx: broadcast::Sender<(u64, Utf8Bytes)>,
    mut rx: broadcast::Receiver<(u64, Utf8Bytes)>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            msg = source.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let _ = tx.send((id, text));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            item = rx.recv() => {
                match item {
                    Ok((from, text)) => {
                        if from != id && sink.feed(Message::Text(text)).await.is_err() {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
                // Batch whatever else is already queued into the same flush.
                loop {
                    match rx.try_recv() {
                        Ok((from, text)) => {
                            if from != id && sink.feed(Message::Text(text)).await.is_err() {
                                return;
                            }
                        }
                        Err(TryRecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
        }
    }
}
