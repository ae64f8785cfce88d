//! SIPp scenario pieces for a caller (UAC) calling the agent.

/// The caller's INVITE. `EXTRA` is replaced by extra headers, `SDP` by the body.
pub const INVITE: &str = r#"
  <send retrans="500">
    <![CDATA[
      INVITE sip:+15559990000@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[call_number]-inv;rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:+15559990000@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      EXTRA
      Content-Type: application/sdp
      Content-Length: [len]

SDP
    ]]>
  </send>
"#;

pub const OFFER: &str = "v=0
o=caller 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio [rtp_port] RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv";

pub const ANSWERED: &str = r#"
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
"#;

/// The ACK for the 2xx to the INVITE with CSeq `cseq`, sent to its Contact.
pub fn ack(cseq: u32) -> String {
    format!(
        r#"
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#
    )
}

/// The ACK for a final non-2xx answer to the INVITE: same branch, hop by hop (RFC 3261 §17.1.1.3).
pub const ACK_NON_2XX: &str = r#"
  <send>
    <![CDATA[
      ACK sip:+15559990000@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[call_number]-inv;rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#;

pub const CALLER_BYE: &str = r#"
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"#;

/// The 200 OK to the request just received, mirroring its headers (a macro,
/// so that the constants below can be built from it with `concat!`).
macro_rules! ok_to_last {
    () => {
        r#"
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#
    };
}

/// The 200 OK to the request just received (a BYE, say).
pub const OK_TO_LAST: &str = ok_to_last!();

/// Wait for the agent's BYE and answer it.
pub const AGENT_BYE: &str = concat!("\n  <recv request=\"BYE\" timeout=\"40000\"/>", ok_to_last!());

pub fn scenario(name: &str, parts: &[&str]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n<scenario name=\"{name}\">\n{}\n</scenario>\n",
        parts.concat()
    )
}

pub fn invite(extra: &str, sdp: &str) -> String {
    let extra_lines = if extra.is_empty() { String::new() } else { extra.to_string() };
    INVITE.replace("      EXTRA\n", &extra_lines).replace("SDP\n", &format!("{sdp}\n"))
}

pub fn pause(ms: u64) -> String {
    format!("  <pause milliseconds=\"{ms}\"/>\n")
}

/// The caller hangs up while it rings: after the 180 and `ms`, a CANCEL,
/// its 200 and the INVITE's 487 (whose ACK is [`ACK_NON_2XX`]).
pub fn cancel_after_ringing(ms: u64) -> String {
    format!(
        r#"
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <pause milliseconds="{ms}"/>
  <send retrans="500">
    <![CDATA[
      CANCEL sip:+15559990000@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[call_number]-inv;rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:+15559990000@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
"#
    )
}

/// An in-dialog INFO carrying one digit as application/dtmf-relay.
pub fn info_digit(cseq: u32, digit: &str) -> String {
    format!(
        r#"
  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

Signal={digit}
Duration=160
    ]]>
  </send>
  <recv response="200"/>
  <pause milliseconds="150"/>
"#
    )
}
