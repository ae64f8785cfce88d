#!/usr/bin/env python3
"""A SIP ladder from a loopback pcap (tcpdump -i lo udp), for the closing note.

    python3 ladder.py capture.pcap AGENT_SIP_PORT > ladder.txt

Prints every SIP message to or from the agent's SIP port (UDP) in order (but
the test harness's OPTIONS probes), with
its start line and key headers and the sipfrag bodies, and between them how
many RTP packets the agent sent to the caller's media port (read from the
SDP). Needs tshark (Debian's tshark package)."""
import subprocess
import sys

KEY = ("via", "record-route", "route", "from", "to", "call-id", "cseq", "contact", "allow",
       "refer-to", "referred-by", "event", "subscription-state", "content-type")


def packets(pcap):
    out = subprocess.run(
        ["tshark", "-r", pcap, "-T", "fields", "-E", "separator=|",
         "-e", "frame.time_relative", "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst",
         "-e", "udp.dstport", "-e", "udp.payload"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        t, src, sport, dst, dport, payload = line.split("|")
        yield float(t), f"{src}:{sport}", f"{dst}:{dport}", bytes.fromhex(payload.replace(":", ""))


def main():
    pcap, agent_port = sys.argv[1], sys.argv[2]
    agent = f"127.0.0.1:{agent_port}"
    rtp_flow = None  # (agent's RTP address, caller's RTP address) from the SDP
    caller_media = agent_media = None
    t0 = None
    rtp_run = []
    lines = []

    def flush_rtp():
        if rtp_run:
            lines.append(f"{'':>10}  ... {len(rtp_run)} RTP packets agent -> caller "
                         f"({rtp_run[0]:.3f} s to {rtp_run[-1]:.3f} s)\n")
            rtp_run.clear()

    for t, src, dst, data in packets(pcap):
        text = data.decode("latin-1")
        is_sip = text.startswith("SIP/2.0 ") or text.split(" ", 1)[0].isupper() and " SIP/2.0\r\n" in text.split("\n", 1)[0] + "\n"
        if is_sip and agent in (src, dst):
            if " OPTIONS\r\n" in text:  # the test harness's readiness probes
                continue
            if t0 is None:
                t0 = t
            head, _, body = text.partition("\r\n\r\n")
            hl = head.split("\r\n")
            for l in body.splitlines():
                if l.startswith("m=audio "):
                    port = l.split()[1]
                    if src == agent:
                        agent_media = port
                    else:
                        caller_media = port
            if agent_media and caller_media:
                rtp_flow = (agent_media, caller_media)
            flush_rtp()
            who = "agent -> caller" if src == agent else "caller -> agent"
            lines.append(f"{t - t0:>8.3f} s  {who}  {src} -> {dst}\n    {hl[0]}\n")
            for h in hl[1:]:
                name = h.split(":", 1)[0].strip().lower()
                if name in KEY:
                    lines.append(f"      {h}\n")
            if "message/sipfrag" in head.lower():
                lines.append(f"      (sipfrag) {body.strip()}\n")
            lines.append("\n")
        elif rtp_flow and t0 is not None and src.endswith(":" + rtp_flow[0]) and dst.endswith(":" + rtp_flow[1]):
            rtp_run.append(t - t0)
    flush_rtp()
    sys.stdout.write("".join(lines))


main()
