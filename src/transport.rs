//! SIP over UDP and TCP (the tokio edge). UDP datagrams and TCP messages
//! (framed by Content-Length) arrive on one channel as [`Inbound`]; a
//! [`ReplyPath`] sends back the way a message came.

use backstop_core::sip::Transport;
use backstop_core::sip::message::stream_message_len;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// How to send to a peer: our UDP socket, or the TCP connection it opened.
#[derive(Clone, Debug)]
pub enum ReplyPath {
    Udp(Arc<UdpSocket>),
    Tcp(mpsc::Sender<Vec<u8>>),
}

impl ReplyPath {
    pub fn transport(&self) -> Transport {
        match self {
            ReplyPath::Udp(_) => Transport::Udp,
            ReplyPath::Tcp(_) => Transport::Tcp,
        }
    }

    pub fn is_reliable(&self) -> bool {
        matches!(self, ReplyPath::Tcp(_))
    }

    /// Send; errors are logged, never fatal (the transaction layer retries or times out).
    pub async fn send(&self, dest: SocketAddr, bytes: Vec<u8>) {
        match self {
            ReplyPath::Udp(sock) => {
                if let Err(e) = sock.send_to(&bytes, dest).await {
                    tracing::warn!(%dest, error = %e, "SIP UDP send failed");
                }
            }
            ReplyPath::Tcp(tx) => {
                if tx.send(bytes).await.is_err() {
                    tracing::warn!(%dest, "SIP TCP connection is closed; message dropped");
                }
            }
        }
    }
}

/// One message from the network, with the way back.
pub struct Inbound {
    pub bytes: Vec<u8>,
    pub from: SocketAddr,
    pub reply: ReplyPath,
}

/// Read UDP datagrams forever, forwarding each.
pub async fn serve_udp(sock: Arc<UdpSocket>, tx: mpsc::Sender<Inbound>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let msg = Inbound { bytes: buf[..n].to_vec(), from, reply: ReplyPath::Udp(sock.clone()) };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send shows up here on Linux: not fatal.
            Err(e) => tracing::debug!(error = %e, "UDP receive error"),
        }
    }
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Bounds on SIP over TCP.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle: std::time::Duration,
}

/// Accept TCP connections forever; each gets a reader and a writer task.
pub async fn serve_tcp(listener: TcpListener, tx: mpsc::Sender<Inbound>, limits: TcpLimits) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut refused: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                if open.load(Ordering::Relaxed) >= limits.max_connections {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(%from, refused, max = limits.max_connections, "TCP connection refused: too many open");
                    }
                    drop(stream);
                    continue;
                }
                let id = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, conn = id, "TCP connection accepted");
                open.fetch_add(1, Ordering::Relaxed);
                let open = open.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    connection(stream, from, tx, limits.idle).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, from: SocketAddr, tx: mpsc::Sender<Inbound>, idle: std::time::Duration) {
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    'read: loop {
        let n = match tokio::time::timeout(idle, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => {
                tracing::debug!(%from, "TCP connection idle; closing");
                break;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match stream_message_len(&buf) {
                Ok(Some(len)) => {
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    let msg = Inbound { bytes, from, reply: ReplyPath::Tcp(out_tx.clone()) };
                    if tx.send(msg).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => {
                    // Only keep-alive CRLFs so far: drop them.
                    if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
                        buf.clear();
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(%from, error = %e, "cannot frame the TCP stream; closing the connection");
                    break 'read;
                }
            }
        }
    }
    drop(out_tx);
    let _ = writer.await;
    tracing::debug!(%from, "TCP connection closed");
}
