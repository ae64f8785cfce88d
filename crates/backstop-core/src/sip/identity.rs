//! STIR/SHAKEN facts from an INVITE: the verification status the
//! terminating network stamped on the caller's identity (`verstat`, 3GPP TS
//! 24.229), and the attestation the originating carrier's PASSporT claims
//! (the Identity header, RFC 8224, RFC 8588, ATIS-1000074).
//!
//! Both are read, never checked: nothing here fetches a certificate or
//! verifies a signature. `verstat` is only as good as the network that set
//! it, and the attestation is what the signer claims.
//!
//! It also holds [`without_user_params`]: rsipstack misreads a user part
//! carrying parameters (`sip:+15551234567;verstat=...@host`, the usual place
//! for `verstat`) as a host, so such a name-addr shows no user.

use crate::sip::message::{NameAddr, Request, split_name_addrs};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT;
use serde::{Deserialize, Serialize};

/// The verification status a verification service stamped on the caller's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verstat {
    #[serde(rename = "TN-Validation-Passed")]
    Passed,
    #[serde(rename = "TN-Validation-Failed")]
    Failed,
    #[serde(rename = "No-TN-Validation")]
    NoValidation,
}

/// The attestation the PASSporT claims (A full, B partial, C gateway).
/// Claimed, not verified: nothing fetches the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attestation {
    A,
    B,
    C,
}

/// The `verstat` of P-Asserted-Identity (each of its name-addrs in order),
/// then of From: the first one carrying the parameter decides. It may sit in
/// the user part (`<sip:+15551234567;verstat=TN-Validation-Passed@host;user=phone>`),
/// among a tel URI's parameters (`<tel:+15551234567;verstat=...>`), or among
/// the URI's parameters after the host. The value is matched ignoring case;
/// any other value is `None`.
pub fn verstat(req: &Request) -> Option<Verstat> {
    let asserted = req.frame.get_all("P-Asserted-Identity").flat_map(split_name_addrs);
    let value = asserted.chain([req.from.raw.clone()]).find_map(|v| verstat_param(&v))?;
    [
        ("TN-Validation-Passed", Verstat::Passed),
        ("TN-Validation-Failed", Verstat::Failed),
        ("No-TN-Validation", Verstat::NoValidation),
    ]
    .into_iter()
    .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
    .map(|(_, v)| v)
}

/// The name-addr with its user part's parameters dropped
/// (`sip:+15551234567;verstat=TN-Validation-Passed@host;user=phone` becomes
/// `sip:+15551234567@host;user=phone`), so that its user part reads as one:
/// rsipstack takes such a URI for one with no user, `+15551234567` its host.
/// Any other name-addr comes back as it was.
pub fn without_user_params(n: &NameAddr) -> NameAddr {
    let uri = n.uri.to_string();
    let fixed = uri.split_once(':').and_then(|(scheme, rest)| {
        let (user, host) = rest.split_once('@')?;
        let (bare, _params) = user.split_once(';')?;
        let sip = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
        sip.then(|| NameAddr::parse(&format!("<{scheme}:{bare}@{host}>")))?
    });
    match fixed {
        Some(f) => NameAddr { uri: f.uri, ..n.clone() },
        None => n.clone(),
    }
}

/// The raw `verstat` value in one name-addr's URI (its `?headers` excluded).
fn verstat_param(name_addr: &str) -> Option<String> {
    let uri = uri_text(name_addr);
    let uri = uri.split('?').next().unwrap_or(uri);
    uri.split([';', '@']).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim().eq_ignore_ascii_case("verstat").then(|| value.to_string())
    })
}

/// The URI of a name-addr: what is inside `<>` (a `<` in a quoted display
/// name does not count), or the whole value for a bare addr-spec.
fn uri_text(name_addr: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in name_addr.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => {
                let inner = &name_addr[i + 1..];
                return inner.split('>').next().unwrap_or(inner);
            }
            _ => {}
        }
    }
    name_addr
}

/// The `attest` claim of the PASSporT in the first Identity header (or its
/// compact form `y`) that is a SHAKEN one: its `ppt` parameter says `shaken`,
/// or its JWT header does. The value is `<header>.<payload>.<signature>;info=<...>;alg=ES256;ppt="shaken"`,
/// each part base64url; padding, whitespace and the standard alphabet are
/// tolerated. A payload that does not decode, or an `attest` other than A, B
/// or C, gives `None` (the headers after it are not tried).
pub fn claimed_attestation(req: &Request) -> Option<Attestation> {
    let identities =
        req.frame.fields.iter().filter(|f| f.name.eq_ignore_ascii_case("Identity") || f.name.eq_ignore_ascii_case("y"));
    let shaken =
        identities.flat_map(|f| split_name_addrs(&f.value)).map(|v| Passport::read(&v)).find(Passport::is_shaken)?;
    match shaken.payload?.get("attest")?.as_str()?.trim() {
        "A" | "a" => Some(Attestation::A),
        "B" | "b" => Some(Attestation::B),
        "C" | "c" => Some(Attestation::C),
        _ => None,
    }
}

/// One Identity header value, as far as it could be read.
struct Passport {
    /// The `ppt` parameter, unquoted.
    ppt: Option<String>,
    header: Option<serde_json::Value>,
    payload: Option<serde_json::Value>,
}

impl Passport {
    fn read(value: &str) -> Passport {
        let (token, params) = value.split_once(';').unwrap_or((value, ""));
        let ppt = split_params(params).into_iter().find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case("ppt").then(|| value.trim().trim_matches('"').trim().to_string())
        });
        let mut parts = token.trim().trim_matches('"').split('.');
        let header = parts.next().and_then(json_part);
        let payload = parts.next().and_then(json_part);
        Passport { ppt, header, payload }
    }

    fn is_shaken(&self) -> bool {
        let header_ppt = self.header.as_ref().and_then(|h| h.get("ppt")?.as_str());
        [self.ppt.as_deref(), header_ppt].into_iter().flatten().any(|p| p.eq_ignore_ascii_case("shaken"))
    }
}

/// A base64url part decoded and read as a JSON object.
fn json_part(part: &str) -> Option<serde_json::Value> {
    let text: String = part
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    let bytes = URL_SAFE_NO_PAD_INDIFFERENT.decode(text).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok().filter(serde_json::Value::is_object)
}

/// Header parameters split on `;` outside `<>` and quotes (`info=<https://x/a;b>`).
fn split_params(params: &str) -> Vec<&str> {
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let mut out = Vec::new();
    for (i, c) in params.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ';' if !quoted && depth <= 0 => {
                out.push(&params[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&params[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::testing::invite;

    const PAYLOAD: &str = r#"{"attest":"A","dest":{"tn":["12155550131"]},"iat":1443208345,"orig":{"tn":"12155550121"},"origid":"123e4567-e89b-12d3-a456-426655440000"}"#;
    const HEADER: &str =
        r#"{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cert.example.org/passport.cer"}"#;
    const SIGNATURE: &str = "ZXkJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0";

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{SIGNATURE}", b64(header), b64(payload))
    }

    fn with_identity(values: &[&str]) -> Request {
        let lines: String = values.iter().map(|v| format!("Identity: {v}\r\n")).collect();
        invite().headers(&lines).read()
    }

    fn attest_of(values: &[&str]) -> Option<Attestation> {
        claimed_attestation(&with_identity(values))
    }

    #[test]
    fn verstat_in_the_user_part_of_the_asserted_identity() {
        let r = invite()
            .headers(
                "P-Asserted-Identity: <sip:+15551234567;verstat=TN-Validation-Passed@carrier.example;user=phone>\r\n",
            )
            .read();
        assert_eq!(verstat(&r), Some(Verstat::Passed));
    }

    #[test]
    fn verstat_as_a_tel_uri_parameter_and_in_any_case() {
        let r = invite()
            .headers("P-Asserted-Identity: \"Jane <x>\" <tel:+15551234567;VerStat=tn-validation-failed>\r\n")
            .read();
        assert_eq!(verstat(&r), Some(Verstat::Failed));
    }

    #[test]
    fn verstat_after_the_host_and_in_the_second_asserted_identity() {
        let r = invite()
            .headers("P-Asserted-Identity: <sip:+15551234567@carrier.example;user=phone>, <tel:+15551234567;verstat=No-TN-Validation>\r\n")
            .read();
        assert_eq!(verstat(&r), Some(Verstat::NoValidation));
        let r = invite()
            .headers("P-Asserted-Identity: <sip:+15551234567@c.example;verstat=TN-Validation-Passed>\r\n")
            .read();
        assert_eq!(verstat(&r), Some(Verstat::Passed));
    }

    #[test]
    fn verstat_from_the_from_when_the_asserted_identity_has_none() {
        let r = invite().from("<sip:+15551230001;verstat=TN-Validation-Failed@127.0.0.1;user=phone>;tag=caller").read();
        assert_eq!(verstat(&r), Some(Verstat::Failed));
        // The asserted identity goes first.
        let r = invite()
            .from("<sip:+15551230001;verstat=TN-Validation-Failed@127.0.0.1>;tag=caller")
            .headers("P-Asserted-Identity: <sip:+15551230001;verstat=TN-Validation-Passed@c.example>\r\n")
            .read();
        assert_eq!(verstat(&r), Some(Verstat::Passed));
    }

    #[test]
    fn no_verstat_or_an_unknown_value_is_none() {
        assert_eq!(verstat(&invite().read()), None);
        let r = invite().headers("P-Asserted-Identity: <sip:+15551234567;verstat=Maybe@c.example>\r\n").read();
        assert_eq!(verstat(&r), None);
        // A URI header (after '?') is not a parameter.
        let r = invite()
            .headers("P-Asserted-Identity: <sip:+15551234567@c.example?verstat=TN-Validation-Passed>\r\n")
            .read();
        assert_eq!(verstat(&r), None);
    }

    #[test]
    fn user_part_parameters_are_dropped_so_the_user_reads() {
        let n = NameAddr::parse("\"Jane\" <sip:+15551234567;verstat=TN-Validation-Passed@c.example;user=phone>;tag=t")
            .unwrap();
        assert_eq!(n.user(), None, "rsipstack fixed? then without_user_params can go");
        let fixed = without_user_params(&n);
        assert_eq!(fixed.user().as_deref(), Some("+15551234567"));
        assert_eq!(fixed.uri.to_string(), "sip:+15551234567@c.example;user=phone");
        assert_eq!((fixed.display_name.as_deref(), fixed.tag.as_deref(), fixed.raw), (Some("Jane"), Some("t"), n.raw));
        for plain in [
            "<sip:+15551234567@c.example;user=phone>",
            "<tel:+15551234567;verstat=No-TN-Validation>",
            "<sip:c.example;lr>",
        ] {
            let n = NameAddr::parse(plain).unwrap();
            assert_eq!(without_user_params(&n).uri, n.uri, "{plain}");
        }
    }

    #[test]
    fn the_attestation_of_a_shaken_passport() {
        let value =
            format!("{};info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=\"shaken\"", token(HEADER, PAYLOAD));
        assert_eq!(attest_of(&[&*value]), Some(Attestation::A));
        let b = token(HEADER, &PAYLOAD.replace(r#""attest":"A""#, r#""attest":"B""#));
        let c = token(HEADER, &PAYLOAD.replace(r#""attest":"A""#, r#""attest":"C""#));
        // The JWT header alone says shaken; no parameters at all.
        assert_eq!(attest_of(&[&*b]), Some(Attestation::B));
        // The compact header name, and a parameter with ';' inside <>.
        let r = invite().headers(&format!("y: {c};info=<https://x.example/a;b>;ppt=shaken\r\n")).read();
        assert_eq!(claimed_attestation(&r), Some(Attestation::C));
    }

    #[test]
    fn padding_whitespace_and_the_standard_alphabet_are_tolerated() {
        let padded = format!("{}==.{}=.{SIGNATURE}", b64(HEADER), b64(PAYLOAD));
        assert_eq!(attest_of(&[&*padded]), Some(Attestation::A));
        let payload = base64::engine::general_purpose::STANDARD.encode(format!("{PAYLOAD}   ?>"));
        let spaced = format!(" {} . {payload} .{SIGNATURE} ; ppt=shaken", b64(HEADER));
        // The JSON is followed by garbage, so it does not read; with clean JSON it would.
        assert_eq!(attest_of(&[&*spaced]), None);
        let payload = base64::engine::general_purpose::STANDARD.encode(PAYLOAD);
        assert_eq!(attest_of(&[&*format!("{} . {payload} .x ; ppt=shaken", b64(HEADER))]), Some(Attestation::A));
    }

    #[test]
    fn the_first_shaken_identity_is_read() {
        let div = r#"{"alg":"ES256","ppt":"div","typ":"passport","x5u":"https://cert.example.org/d.cer"}"#;
        let div_token = format!("{};ppt=div", token(div, r#"{"attest":"C"}"#));
        let shaken = format!("{};ppt=shaken", token(HEADER, PAYLOAD));
        assert_eq!(attest_of(&[&*div_token, &*shaken]), Some(Attestation::A));
        // Two in one header field, comma-separated.
        let r = invite().headers(&format!("Identity: {div_token}, {shaken}\r\n")).read();
        assert_eq!(claimed_attestation(&r), Some(Attestation::A));
    }

    #[test]
    fn a_passport_that_is_not_shaken_is_none() {
        let div = r#"{"alg":"ES256","ppt":"div","typ":"passport"}"#;
        assert_eq!(attest_of(&[&*format!("{};ppt=\"div\"", token(div, PAYLOAD))]), None);
        assert_eq!(attest_of(&[&*token(r#"{"alg":"ES256","typ":"passport"}"#, PAYLOAD)]), None);
        assert_eq!(claimed_attestation(&invite().read()), None);
    }

    #[test]
    fn garbage_is_none_and_never_panics() {
        let bad_attest = token(HEADER, r#"{"attest":"Z"}"#);
        let numeric_attest = token(HEADER, r#"{"attest":1}"#);
        let not_object = token(HEADER, "[1,2]");
        for value in [
            "garbage",
            "a.b.c;ppt=shaken",
            "..sig;ppt=shaken",
            ";ppt=shaken",
            "€€€.💥.x;ppt=shaken",
            "eyJ.eyJ.;ppt=\"shaken",
            "%%%;info=<https://x;ppt=shaken",
            &*bad_attest,
            &*numeric_attest,
            &*not_object,
        ] {
            assert_eq!(attest_of(&[value]), None, "{value}");
        }
        // Garbage in the first shaken header: it decides.
        let good = format!("{};ppt=shaken", token(HEADER, PAYLOAD));
        assert_eq!(attest_of(&["x.y.z;ppt=shaken", &*good]), None);
        // Not shaken garbage is skipped.
        assert_eq!(attest_of(&["x.y.z", &*good]), Some(Attestation::A));
    }
}
