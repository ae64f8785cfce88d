//! SIP over UDP and TCP (the tokio edge). UDP datagrams and TCP messages
//! (framed by Content-Length) arrive on one channel as [`Inbound`]; a
//! [`ReplyPath`] sends back the way a message came.
//!
//! Open TCP connections are bounded by a semaphore: each connection task
//! owns its permit, so the slot comes back however the task ends, panic
//! included. A stream that cannot be framed (a Content-Length too large or
//! not a number) closes its own connection and nobody else's.

use backstop_core::sip::Transport;
use backstop_core::sip::message::stream_message_len;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

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
    /// When it was read off the socket: where INVITE→200 is measured from
    /// (so the dispatcher's queue and the RTP port's bind are in it).
    pub at: Instant,
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
                let msg =
                    Inbound { at: Instant::now(), bytes: buf[..n].to_vec(), from, reply: ReplyPath::Udp(sock.clone()) };
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
    accept_bounded(listener, limits.max_connections, move |stream, from, slot| {
        connection(stream, from, tx.clone(), limits.idle, slot)
    })
    .await
}

/// Accept forever, at most `max` connections at once: each runs in its own
/// task with a slot it gives back when it ends, however it ends; one over
/// the bound is closed as soon as it is accepted.
async fn accept_bounded<F, Fut>(listener: TcpListener, max: usize, serve: F)
where
    F: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let mut refused: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(%from, refused, max, "TCP connection refused: too many open");
                    }
                    drop(stream);
                    continue;
                };
                let id = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, conn = id, "TCP connection accepted");
                tokio::spawn(serve(stream, from, slot));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection, holding one of the `max_connections` slots until it ends
/// (`_slot` drops with this future, whether it returns, panics or is aborted).
async fn connection(
    stream: TcpStream,
    from: SocketAddr,
    tx: mpsc::Sender<Inbound>,
    idle: std::time::Duration,
    _slot: OwnedSemaphorePermit,
) {
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
                    let msg = Inbound { at: Instant::now(), bytes, from, reply: ReplyPath::Tcp(out_tx.clone()) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(2);

    fn options(me: SocketAddr) -> String {
        format!(
            "OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-t\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@y>\r\nCall-ID: t-{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// Connect and send an OPTIONS: the stream if the agent took it (the
    /// message came through), `None` if it closed the connection instead.
    async fn open(addr: SocketAddr, rx: &mut mpsc::Receiver<Inbound>) -> Option<TcpStream> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let me = s.local_addr().unwrap();
        let _ = s.write_all(options(me).as_bytes()).await;
        let mut b = [0u8; 16];
        tokio::time::timeout(WAIT, async {
            tokio::select! {
                Some(msg) = rx.recv() => { assert_eq!(msg.from, me); Some(()) }
                _ = s.read(&mut b) => None,
            }
        })
        .await
        .expect("neither served nor closed")
        .map(|()| s)
    }

    /// Open `max` at once (bounded retries while closed ones give their slots back).
    async fn open_all(addr: SocketAddr, rx: &mut mpsc::Receiver<Inbound>, max: usize) -> Vec<TcpStream> {
        let mut held = Vec::new();
        for _ in 0..50 {
            match open(addr, rx).await {
                Some(s) => held.push(s),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            if held.len() == max {
                return held;
            }
        }
        panic!("only {} of {max} connections taken", held.len());
    }

    #[tokio::test]
    async fn tcp_connections_are_bounded_and_their_slots_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let server =
            tokio::spawn(serve_tcp(listener, tx, TcpLimits { max_connections: 3, idle: Duration::from_secs(30) }));
        for round in 0..3 {
            let held = open_all(addr, &mut rx, 3).await;
            assert!(open(addr, &mut rx).await.is_none(), "round {round}: a fourth connection was taken");
            drop(held);
        }
        server.abort();
    }

    /// A connection task that panics still gives its slot back (a counter
    /// decremented after the task's work would leak it).
    #[tokio::test]
    async fn a_panicking_connection_gives_its_slot_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let server = tokio::spawn(accept_bounded(listener, 1, move |mut stream, from, slot| {
            let tx = tx.clone();
            async move {
                let _slot = slot;
                let mut b = [0u8; 4096];
                let n = stream.read(&mut b).await.unwrap_or(0);
                if b[..n].starts_with(b"PANIC") {
                    panic!("a connection task panics (as this test asks)");
                }
                let reply = ReplyPath::Tcp(mpsc::channel(1).0);
                let _ = tx.send(Inbound { at: Instant::now(), bytes: b[..n].to_vec(), from, reply }).await;
                let _ = stream.read(&mut b).await;
            }
        }));
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"PANIC").await.unwrap();
            let mut b = [0u8; 16];
            let closed = tokio::time::timeout(WAIT, s.read(&mut b)).await;
            assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the panicked connection was closed");
        }
        let served = open_all(addr, &mut rx, 1).await;
        assert!(open(addr, &mut rx).await.is_none(), "still one slot only");
        drop(served);
        server.abort();
    }

    /// A Content-Length that cannot be framed closes that connection only.
    #[tokio::test]
    async fn an_unframeable_content_length_closes_only_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        // Room for more than this test opens: a connection refused for want of a
        // slot would look closed too, and prove nothing about framing.
        let server =
            tokio::spawn(serve_tcp(listener, tx, TcpLimits { max_connections: 8, idle: Duration::from_secs(30) }));
        let neighbour = open_all(addr, &mut rx, 1).await;
        for len in ["99999999999999999999999999", "18446744073709551615", "-1"] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let me = s.local_addr().unwrap();
            let msg = options(me).replace("Content-Length: 0", &format!("Content-Length: {len}"));
            s.write_all(msg.as_bytes()).await.unwrap();
            let mut b = [0u8; 16];
            let closed = tokio::time::timeout(WAIT, s.read(&mut b)).await;
            assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "Content-Length {len}: not closed");
            assert!(rx.try_recv().is_err(), "Content-Length {len}: a message was framed");
        }
        // The neighbour is still connected, and the slots came back.
        drop(neighbour);
        open_all(addr, &mut rx, 8).await;
        server.abort();
    }
}
