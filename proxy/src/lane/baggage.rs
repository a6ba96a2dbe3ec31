//! The W3C `baggage` header (<https://www.w3.org/TR/baggage/>), as far as a lane needs it:
//! find one entry's value, and set it while every other list-member passes untouched.
//!
//! ```text
//! baggage     = list-member *( OWS "," OWS list-member )
//! list-member = key OWS "=" OWS value *( OWS ";" OWS property )
//! property    = key OWS "=" OWS value / key OWS
//! ```
//!
//! Keys are RFC 9110 tokens, compared exactly; values are percent-encoded UTF-8 whose raw
//! octets exclude whitespace, `"`, `,`, `;` and `\`. Several `baggage` fields are one list
//! (RFC 9110 §5.3). The header belongs to the app and to other systems: a member that does not
//! parse is skipped when reading and kept as it was when writing, never a failure of the
//! request.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue};

/// The header's name.
pub const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

/// At most this many members are looked at: the specification's limit is 180 (and 8192 bytes),
/// so anything past it is not baggage a conforming sender produced.
const MAX_MEMBERS: usize = 180;

/// The decoded value of the first member named `key` in every `baggage` field of `headers`.
pub fn find<'h>(headers: &'h HeaderMap, key: &str) -> Option<Cow<'h, str>> {
    headers
        .get_all(&BAGGAGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .take(MAX_MEMBERS)
        .find_map(|member| match parse(member) {
            Some((k, value)) if k == key => decode(value),
            _ => None,
        })
}

/// Sets `key` to `value` in the request's baggage: members named `key` are replaced by one
/// `key=value` at the end, every other member is kept byte for byte, and several `baggage`
/// fields become one. Nothing changes when the first such member already has the value and is
/// the only one.
pub fn set(headers: &mut HeaderMap, key: &str, value: &str) {
    let mut kept: Vec<&str> = Vec::new();
    let mut matching = 0;
    let mut already = false;
    for member in headers.get_all(&BAGGAGE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','))
    {
        let trimmed = member.trim_matches(is_ows);
        if trimmed.is_empty() {
            continue;
        }
        match parse(trimmed) {
            Some((k, v)) if k == key => {
                matching += 1;
                already = matching == 1 && decode(v).is_some_and(|d| d == value);
            }
            _ => kept.push(trimmed),
        }
    }
    if already && matching == 1 {
        return;
    }
    let ours = format!("{key}={}", encode(value));
    kept.push(&ours);
    let joined = kept.join(",");
    // Only a field that could not be read as text (kept out above) makes this fail; the
    // members that could be read are still worth sending as they were.
    if let Ok(v) = HeaderValue::try_from(joined) {
        headers.insert(BAGGAGE, v);
    }
}

/// A `baggage` field holding only `key=value`, for a request that has no baggage yet.
pub fn single(key: &str, value: &str) -> Option<HeaderValue> {
    HeaderValue::try_from(format!("{key}={}", encode(value))).ok()
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A member's key and raw value (properties dropped); `None` if it does not parse.
fn parse(member: &str) -> Option<(&str, &str)> {
    let pair = member.split(';').next()?;
    let (key, value) = pair.split_once('=')?;
    let key = key.trim_matches(is_ows);
    let value = value.trim_matches(is_ows);
    (is_token(key) && value.bytes().all(is_baggage_octet)).then_some((key, value))
}

/// An RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a value may hold raw: printable ASCII except `"`, `,`, `;`, `\` (and space).
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Percent-decodes a value; `None` for a bad escape or bytes that are not UTF-8 (such a value
/// cannot name a lane anyway).
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Percent-encodes what a raw value may not hold (and `%` itself).
fn encode(value: &str) -> Cow<'_, str> {
    if value.bytes().all(|b| is_baggage_octet(b) && b != b'%') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if is_baggage_octet(b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(BAGGAGE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn all(h: &HeaderMap) -> Vec<&str> {
        h.get_all(BAGGAGE).iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn finds_a_member_among_others_with_whitespace_and_properties() {
        let h = headers(&["userId=alice , berth.symbol = feature-x;ttl=5;sampled, serverNode=DF%2028"]);
        assert_eq!(find(&h, "berth.symbol").as_deref(), Some("feature-x"));
        assert_eq!(find(&h, "serverNode").as_deref(), Some("DF 28"), "percent-decoded");
        assert_eq!(find(&h, "userid"), None, "keys are compared exactly");
        assert_eq!(find(&h, "ttl"), None, "a property is not a member");
    }

    #[test]
    fn several_fields_are_one_list_and_the_first_member_wins() {
        let h = headers(&["a=1", "berth.symbol=canary", "berth.symbol=blue"]);
        assert_eq!(find(&h, "berth.symbol").as_deref(), Some("canary"));
    }

    #[test]
    fn malformed_members_are_skipped_not_fatal() {
        let h = headers(&["no-equals, bad key=1, q=\"quoted\", esc=%zz, berth.symbol=ok"]);
        assert_eq!(find(&h, "berth.symbol").as_deref(), Some("ok"));
        assert_eq!(find(&h, "esc"), None, "a bad escape");
        assert_eq!(find(&h, "q"), None, "DQUOTE is not a baggage octet");
        assert_eq!(find(&headers(&["berth.symbol=%FF"]), "berth.symbol"), None, "not UTF-8");
        assert_eq!(find(&HeaderMap::new(), "berth.symbol"), None);
    }

    #[test]
    fn set_keeps_every_other_member_byte_for_byte() {
        let mut h = headers(&["userId=alice;p1, weird member", "berth.symbol=old;prop, x=%2C"]);
        set(&mut h, "berth.symbol", "feature-x");
        assert_eq!(all(&h), ["userId=alice;p1,weird member,x=%2C,berth.symbol=feature-x"]);
        assert_eq!(find(&h, "berth.symbol").as_deref(), Some("feature-x"));
        assert_eq!(find(&h, "x").as_deref(), Some(","));
    }

    #[test]
    fn set_adds_to_empty_baggage_and_leaves_a_correct_one_alone() {
        let mut h = HeaderMap::new();
        set(&mut h, "berth.symbol", "canary");
        assert_eq!(all(&h), ["berth.symbol=canary"]);
        let mut h = headers(&["a=1, berth.symbol=canary;p", "b=2"]);
        set(&mut h, "berth.symbol", "canary");
        assert_eq!(all(&h), ["a=1, berth.symbol=canary;p", "b=2"], "untouched, fields and all");
        let mut h = headers(&["berth.symbol=canary,berth.symbol=blue"]);
        set(&mut h, "berth.symbol", "canary");
        assert_eq!(all(&h), ["berth.symbol=canary"], "a duplicate goes");
    }

    #[test]
    fn values_are_percent_encoded_and_round_trip() {
        let mut h = HeaderMap::new();
        set(&mut h, "k", "a b,c;d%e\"f\\g");
        assert_eq!(all(&h), ["k=a%20b%2Cc%3Bd%25e%22f%5Cg"]);
        assert_eq!(find(&h, "k").as_deref(), Some("a b,c;d%e\"f\\g"));
    }

    #[test]
    fn reads_at_most_the_specified_number_of_members() {
        let mut many: Vec<String> = (0..MAX_MEMBERS).map(|i| format!("m{i}=v")).collect();
        many.push("berth.symbol=late".into());
        assert_eq!(find(&headers(&[&many.join(",")]), "berth.symbol"), None);
    }
}
