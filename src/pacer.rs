//! The RTP send edge: one thread that puts every call's packets on the wire
//! at their scheduled instants (the "shared wheel").
//!
//! Each call's media session builds its packets on its own task, stamped
//! with the instant the frame is due ([`RtpPacket::due`]). The call hands
//! them here instead of sending them itself, and this thread sends each one
//! at `due + PLAYOUT_DELAY`. A call task that runs a few milliseconds late
//! (a burst of calls waking in the same millisecond, the VAD running on a
//! busy worker, the OS giving the core to another process) then changes
//! nothing on the wire: only this one thread's wake-up precision shows in
//! the packet gaps. The price is a fixed 20 ms more delay on what we play,
//! which a caller listening to a recorded prompt cannot hear.
//!
//! While calls are sending, the thread wakes once a millisecond at most,
//! when a packet is due, and never because one was handed over; with no
//! packet queued it sleeps until one is. A packet handed over after its send instant has passed goes out
//! at once and is counted as late.

use backstop_core::media::rtp::RtpPacket;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long after its scheduled instant a packet goes on the wire.
pub const PLAYOUT_DELAY: Duration = Duration::from_millis(20);
/// The longest the thread sleeps without looking at the queue.
const POLL: Duration = Duration::from_millis(1);

struct Paced {
    at: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    packet: RtpPacket,
}

impl PartialEq for Paced {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Paced {}
impl PartialOrd for Paced {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Paced {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// Counters, for the logs and the load tool.
#[derive(Debug, Default)]
pub struct PacerStats {
    pub sent: AtomicU64,
    /// Handed over after their send instant: each one a gap on the wire.
    pub late: AtomicU64,
    /// The socket refused them (buffer full, or the route is gone).
    pub failed: AtomicU64,
}

/// A handle for queueing packets; clone it freely.
#[derive(Clone)]
pub struct Pacer {
    tx: mpsc::Sender<(Arc<UdpSocket>, RtpPacket)>,
    pub stats: Arc<PacerStats>,
}

impl Pacer {
    /// Start the thread. It ends when every handle has been dropped and its
    /// queue is empty. It runs at normal priority: under the load tool, a
    /// pacer at nice −10 or SCHED_FIFO delayed the call tasks (late packets,
    /// up to 220 ms gaps with FIFO) and sent no more evenly.
    pub fn start() -> std::io::Result<Pacer> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(PacerStats::default());
        let s = stats.clone();
        std::thread::Builder::new().name("rtp-pacer".into()).spawn(move || run(rx, &s))?;
        Ok(Pacer { tx, stats })
    }

    /// Send `packet` from `socket` at its due instant plus [`PLAYOUT_DELAY`].
    pub fn send(&self, socket: &Arc<UdpSocket>, packet: RtpPacket) {
        // Only fails once the thread is gone, at process exit.
        let _ = self.tx.send((socket.clone(), packet));
    }
}

fn run(rx: mpsc::Receiver<(Arc<UdpSocket>, RtpPacket)>, stats: &PacerStats) {
    let mut queue: BinaryHeap<Reverse<Paced>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut open = true;
    let mut enqueue = |queue: &mut BinaryHeap<Reverse<Paced>>, (socket, packet): (Arc<UdpSocket>, RtpPacket)| {
        order += 1;
        let at = packet.due + PLAYOUT_DELAY;
        // This thread looks at the queue every millisecond: later than that, the call was late.
        if at + POLL < Instant::now() {
            stats.late.fetch_add(1, Ordering::Relaxed);
        }
        queue.push(Reverse(Paced { at, order, socket, packet }));
    };
    while open || !queue.is_empty() {
        if queue.is_empty() {
            // No call is sending: sleep until one hands a packet over.
            match rx.recv() {
                Ok(p) => enqueue(&mut queue, p),
                Err(_) => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(p) => enqueue(&mut queue, p),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        while let Some(Reverse(p)) = queue.peek() {
            if p.at > now {
                break;
            }
            let Some(Reverse(p)) = queue.pop() else { break };
            // The sockets are non-blocking: a full buffer is an error, never a wait.
            match p.socket.send_to(p.packet.bytes(), p.packet.dest) {
                Ok(_) => stats.sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
            };
        }
        let wake = queue.peek().map_or(now + POLL, |Reverse(p)| p.at.min(now + POLL));
        let nap = wake.saturating_duration_since(Instant::now());
        if !nap.is_zero() {
            std::thread::sleep(nap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets go out in the order of their instants, never before
    /// `due + PLAYOUT_DELAY`; one handed over long after its instant goes out
    /// at once and is counted late.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_each_packet_at_its_instant_in_order_and_counts_late_ones() {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        socket.set_nonblocking(true).unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let dest = rx.local_addr().unwrap();
        let pacer = Pacer::start().unwrap();
        let t0 = Instant::now();
        let due = |k: u8| t0 + Duration::from_millis(60 + 20 * k as u64);
        // Handed over in reverse order, all at once.
        for k in (0..5u8).rev() {
            pacer.send(&socket, RtpPacket::new(dest, due(k), &[k; 20]).unwrap());
        }
        let recv = |rx: std::net::UdpSocket, n: usize| {
            tokio::task::spawn_blocking(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                for _ in 0..n {
                    let (len, _) = rx.recv_from(&mut buf).unwrap();
                    got.push((buf[0], len, Instant::now()));
                }
                (rx, got)
            })
        };
        let (rx, mut got) = recv(rx, 5).await.unwrap();
        // Long past its instant: out at once, and late.
        pacer.send(&socket, RtpPacket::new(dest, t0, &[9; 20]).unwrap());
        got.extend(recv(rx, 1).await.unwrap().1);
        let order: Vec<u8> = got.iter().map(|g| g.0).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 9]);
        for (k, n, at) in &got[..5] {
            assert_eq!(*n, 20);
            assert!(*at >= due(*k) + PLAYOUT_DELAY, "packet {k} went out {:?} early", (due(*k) + PLAYOUT_DELAY) - *at);
        }
        // The thread counts a send after the packet is out: wait (bounded) for it to get there.
        let deadline = Instant::now() + Duration::from_secs(2);
        while pacer.stats.sent.load(Ordering::Relaxed) < 6 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pacer.stats.sent.load(Ordering::Relaxed), 6);
        assert_eq!(pacer.stats.late.load(Ordering::Relaxed), 1);
        assert_eq!(pacer.stats.failed.load(Ordering::Relaxed), 0);
    }
}
