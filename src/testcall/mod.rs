//! `backstop test-call`: a real call placed to the agent, or through the
//! business's PBX, to prove that the calls reach it. The only code in the
//! binary that sends an INVITE, and it runs only from this command.
//!
//! The call itself is the core's [`Probe`]; this is its driver: two UDP
//! sockets (SIP; RTP) on a current-thread tokio runtime of its own, the
//! probe's timers, and then the lead in the agent's store ([`lead`]). The
//! SIP socket is connected to the target until the call is answered, so that an
//! ICMP port unreachable comes back as an error; then it is bound again
//! unconnected on the same port, so that in-dialog requests (a BYE) are
//! taken from any address: the agent itself, behind a proxy that does not
//! record-route. The agent's `run` never comes here.

pub mod greetings;
pub mod lead;

use anyhow::Context;
use backstop_core::probe::report::{Check, checks};
use backstop_core::probe::{Findings, Probe, ProbeConfig, secs};
use backstop_core::sip::auth::Credentials;
use lead::LeadWatch;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// One test call, as the command line asked for it.
pub struct TestCall {
    /// The Request-URI.
    pub target: String,
    /// Where the SIP goes; `None`: the target's host and port.
    pub proxy: Option<SocketAddr>,
    /// Our SIP address to bind; `None`: any port on the address that routes to the target.
    pub listen: Option<SocketAddr>,
    pub from_user: String,
    pub keys: String,
    pub timeout: Duration,
    pub credentials: Option<Credentials>,
    /// The agent's lead store and leads file, when its config is known.
    pub leads: Option<LeadWatch>,
    /// Match the lead by our From user too (a call through a PBX has another Call-ID).
    pub lead_by_caller: bool,
    /// The greetings the agent may play first (from its config: [`greetings`]); empty when unknown.
    pub expected_greeting: Vec<backstop_core::probe::greeting::Greeting>,
}

/// How long the lead may take to appear after the call.
const LEAD_WAIT: Duration = Duration::from_secs(10);

/// Place the call, print a header line and one line per check; true when every check passed.
pub fn run(call: TestCall) -> anyhow::Result<bool> {
    let dest = match call.proxy {
        Some(p) => p,
        None => resolve(&call.target)?,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the runtime")?;
    let (findings, refused) = rt.block_on(place(&call, dest))?;
    let mut lines = checks(&findings);
    // Only when nothing at all came back: a busy peer that started late also refused our first INVITE.
    if refused && let Some(first) = lines.first_mut().filter(|c| !c.pass && c.detail.starts_with("no answer")) {
        first.detail.push_str(" (nothing listening? ICMP port unreachable)");
    }
    if findings.answered.is_some()
        && let Some(watch) = &call.leads
    {
        lines.push(lead_check(watch, &call, &findings));
    }
    for line in &lines {
        println!("{line}");
    }
    Ok(lines.iter().all(|c| c.pass))
}

async fn place(call: &TestCall, dest: SocketAddr) -> anyhow::Result<(Findings, bool)> {
    let bind = call.listen.unwrap_or(SocketAddr::new(unspecified(dest.ip()), 0));
    let mut sip = UdpSocket::bind(bind).await.with_context(|| format!("bind the SIP socket on {bind}"))?;
    sip.connect(dest).await.with_context(|| format!("no route to {dest}"))?;
    let local_sip = sip.local_addr()?;
    let rtp = UdpSocket::bind(SocketAddr::new(local_sip.ip(), 0)).await.context("bind the RTP socket")?;
    let local_rtp = rtp.local_addr()?;
    let cfg = ProbeConfig {
        target: call.target.clone(),
        dest,
        outbound_proxy: call.proxy.is_some(),
        local_sip,
        local_rtp,
        from_user: call.from_user.clone(),
        keys: call.keys.clone(),
        timeout: call.timeout,
        linger: Duration::from_millis(1500),
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        credentials: call.credentials.clone(),
        seed: rand::random(),
        expected_greeting: call.expected_greeting.clone(),
    };
    let start = Instant::now();
    let mut probe = Probe::new(cfg, start).map_err(anyhow::Error::msg)?;
    println!("test-call {} via {dest} from {local_sip} (RTP {local_rtp}), Call-ID {}", call.target, probe.call_id());
    // Every phase is bounded by the timeout; this bounds them all together.
    let hard_stop = start + call.timeout * 4 + Duration::from_secs(10);
    let mut refused = false;
    let mut connected = true;
    let mut sip_buf = vec![0u8; 65536];
    let mut rtp_buf = vec![0u8; 2048];
    while !probe.is_done() && Instant::now() < hard_stop {
        while let Some(t) = probe.poll_transmit() {
            if let Err(e) = sip.send_to(&t.bytes, t.dest).await {
                refused |= e.kind() == ErrorKind::ConnectionRefused;
            }
        }
        while let Some((to, pkt)) = probe.poll_rtp() {
            let _ = rtp.send_to(&pkt, to).await;
        }
        while probe.poll_event().is_some() {}
        if probe.is_done() {
            break;
        }
        let wake = probe.poll_timeout().unwrap_or(hard_stop).min(hard_stop);
        tokio::select! {
            r = sip.recv_from(&mut sip_buf) => match r {
                Ok((n, from)) => {
                    probe.handle_sip(Instant::now(), from, &sip_buf[..n]);
                    if connected && probe.findings().answered.is_some() {
                        // Answered: from now on take the dialog's requests from anyone. The port is ours again at
                        // once; a 2xx lost in between is resent by the far end until our ACK comes.
                        connected = false;
                        drop(sip);
                        sip = UdpSocket::bind(local_sip).await.with_context(|| format!("bind {local_sip} again"))?;
                    }
                }
                Err(e) => refused |= e.kind() == ErrorKind::ConnectionRefused,
            },
            r = rtp.recv_from(&mut rtp_buf) => {
                if let Ok((n, from)) = r {
                    probe.handle_rtp(Instant::now(), from, &rtp_buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => probe.handle_timeout(Instant::now()),
        }
    }
    // Whatever the last step queued (the ACK of a final response, the 200 to a BYE) still goes out.
    while let Some(t) = probe.poll_transmit() {
        let _ = sip.send_to(&t.bytes, t.dest).await;
    }
    if !probe.is_done() {
        anyhow::bail!("the test call did not finish in {}", secs(hard_stop - start));
    }
    Ok((probe.findings().clone(), refused))
}

/// The lead check: the agent wrote the lead of our call, with the keys we pressed.
fn lead_check(watch: &LeadWatch, call: &TestCall, f: &Findings) -> Check {
    let Some(found) = watch.wait(&f.call_id, &call.from_user, call.lead_by_caller, LEAD_WAIT) else {
        return Check::new(
            "lead",
            false,
            format!("no lead for Call-ID {} in {} after {}", f.call_id, watch.describe(), secs(LEAD_WAIT)),
        );
    };
    let lead = &found.lead;
    let outcome = lead["outcome"].as_str().unwrap_or("?");
    let dtmf = lead["dtmf"].as_str().unwrap_or("");
    let detail = format!(
        "{} in {} after {} ms: outcome {outcome}, dtmf {dtmf:?}",
        lead["id"].as_str().unwrap_or("?"),
        found.source,
        found.after.as_millis()
    );
    // The lead writes the keys A-D upper-case; --keys a is the same key.
    let keys_through = f.keys_sent.is_none() || dtmf.contains(&f.keys.to_ascii_uppercase());
    if keys_through {
        Check::new("lead", true, detail)
    } else {
        Check::new("lead", false, format!("{detail}, but we pressed {:?}", f.keys))
    }
}

/// The address of a SIP URI's host and port (5060 by default); a name is
/// looked up with the system resolver (A/AAAA, no SRV).
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    use rsipstack::sip::Uri;
    use std::str::FromStr;
    let uri = Uri::from_str(target).map_err(|e| anyhow::anyhow!("{target} is not a SIP URI: {e}"))?;
    let host = uri.host_with_port.host.to_string();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.host_with_port.port.map(|p| p.value()).unwrap_or(5060);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("look up {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The agent's own address from its `[sip] listen`: an unspecified address means this host (loopback).
pub fn agent_target(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(v4) => format!("sip:backstop@{v4}:{}", listen.port()),
        IpAddr::V6(v6) => format!("sip:backstop@[{v6}]:{}", listen.port()),
    }
}

/// A target as typed: a SIP URI as is, `host[:port]` as `sip:backstop@host[:port]`.
pub fn target_uri(typed: &str) -> String {
    let lower = typed.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        typed.to_string()
    } else if typed.contains('@') {
        format!("sip:{typed}")
    } else {
        format!("sip:backstop@{typed}")
    }
}
