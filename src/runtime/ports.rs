//! RTP ports for new calls: even ports only (RTP on even, RTCP would take
//! the odd one above), handed out round robin from `[rtp] port_min..=port_max`
//! so that a port just freed is not reused at once (stray packets of the old
//! call would reach the new one). The arithmetic is done wider than `u16`:
//! a range ending at 65535 wraps round instead of overflowing.

use std::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};

pub(super) struct PortPool {
    /// First even port at or above `port_min`.
    min: u32,
    max: u32,
    next: u32,
}

impl PortPool {
    pub(super) fn new(min: u16, max: u16) -> PortPool {
        let min = u32::from(min) + u32::from(min & 1);
        PortPool { min, max: u32::from(max), next: min }
    }

    /// How many even ports the range holds.
    fn slots(&self) -> u32 {
        if self.max < self.min { 0 } else { (self.max - self.min) / 2 + 1 }
    }

    /// The next port in turn; `None` when the range holds none.
    fn next_port(&mut self) -> Option<u16> {
        if self.slots() == 0 {
            return None;
        }
        let port = self.next;
        self.next = if port + 2 > self.max { self.min } else { port + 2 };
        u16::try_from(port).ok()
    }

    /// A non-blocking socket on the next free port, trying each port of the
    /// range once. It is not registered with tokio's reactor: the call task
    /// reads it on its own 20 ms tick (`call_task`), so arriving packets wake
    /// nobody.
    pub(super) fn bind(&mut self, ip: IpAddr) -> Option<UdpSocket> {
        for _ in 0..self.slots() {
            let port = self.next_port()?;
            if let Ok(sock) = UdpSocket::bind(SocketAddr::new(ip, port))
                && sock.set_nonblocking(true).is_ok()
            {
                return Some(sock);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(pool: &mut PortPool, n: usize) -> Vec<u16> {
        (0..n).map(|_| pool.next_port().unwrap()).collect()
    }

    #[test]
    fn a_range_ending_at_65535_wraps_round_without_overflowing() {
        let mut pool = PortPool::new(65530, 65535);
        assert_eq!(round(&mut pool, 7), [65530, 65532, 65534, 65530, 65532, 65534, 65530]);
        let mut top = PortPool::new(65534, 65535);
        assert_eq!(round(&mut top, 3), [65534, 65534, 65534]);
    }

    #[test]
    fn an_odd_minimum_is_rounded_up_and_every_slot_is_visited() {
        let mut pool = PortPool::new(10001, 10007);
        assert_eq!(pool.slots(), 3);
        assert_eq!(round(&mut pool, 4), [10002, 10004, 10006, 10002]);
        let mut pool = PortPool::new(20000, 20199);
        let mut seen = round(&mut pool, 100);
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (20000..20199).step_by(2).collect::<Vec<u16>>(), "all 100 slots, each once");
    }

    #[test]
    fn an_empty_range_gives_no_port() {
        assert_eq!(PortPool::new(65535, 65535).next_port(), None, "65535 is odd: no even port");
        assert_eq!(PortPool::new(3000, 2000).next_port(), None);
    }

    #[test]
    fn a_port_in_use_is_skipped_and_a_full_range_gives_none() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // An even port held by someone else, for a one-port range.
        let held = (0..50)
            .filter_map(|_| std::net::UdpSocket::bind("127.0.0.1:0").ok())
            .find(|s| s.local_addr().unwrap().port() % 2 == 0)
            .expect("an even free port");
        let port = held.local_addr().unwrap().port();
        let mut pool = PortPool::new(port, port);
        assert!(pool.bind(ip).is_none(), "the only port is taken");
        drop(held);
        let sock = pool.bind(ip).expect("free again");
        assert_eq!(sock.local_addr().unwrap().port(), port);
    }
}
