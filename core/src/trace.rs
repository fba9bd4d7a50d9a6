//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` and `tracestate`
//! a caller sends are carried in the envelope to the Kafka record's headers of the same names, so
//! a trace follows the message from the HTTP request to its consumers.
//!
//! spillway records no spans of its own: it forwards the caller's `traceparent` unchanged, so a
//! consumer's span is a child of the caller's. A request without a valid one starts a trace
//! ([`TraceParent::new_random`]); an envelope that reaches the drain without one (another
//! producer's, or the API Gateway direct integration's with a malformed header) gets one derived
//! from its id ([`TraceParent::from_message_id`]), the same on every delivery of the message.
//!
//! Parsing follows the specification's rules for receivers: version `00` exactly as specified; a
//! higher version is read by its first four fields (and rewritten as version `00`, the one this
//! build knows); version `ff`, an all-zero trace id or parent id, and anything not lower-case hex
//! are invalid. A `tracestate` is kept only beside a valid `traceparent`, and only when it is at
//! most [`MAX_TRACESTATE_LEN`] characters of visible ASCII with at most 32 list members; else it
//! is dropped, which the specification allows.

use std::fmt;

/// The longest `tracestate` kept (the specification asks vendors to propagate at least 512).
pub const MAX_TRACESTATE_LEN: usize = 512;
/// The most list members a `tracestate` may have.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A valid `traceparent`: version 00, trace id, parent id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id: 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The parent (span) id: 8 bytes, not all zero.
    pub parent_id: [u8; 8],
    /// The trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceParent {
    /// Reads a `traceparent` header value; `None` when the specification says to ignore it.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim_matches(|c| c == ' ' || c == '\t');
        let bytes = text.as_bytes();
        // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55.
        if bytes.len() < 55 || !text.is_ascii() {
            return None;
        }
        let version = hex_byte(&text[0..2])?;
        match version {
            0x00 if bytes.len() != 55 => return None,
            0xff => return None,
            // A later version may append fields after a dash.
            v if v > 0 && bytes.len() > 55 && bytes[55] != b'-' => return None,
            _ => {}
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&text[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, b) in parent_id.iter_mut().enumerate() {
            *b = hex_byte(&text[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&text[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            // Version 00 defines one flag; flags of later versions are not ours to forward.
            flags: if version == 0 { flags } else { flags & 1 },
        })
    }

    /// A new trace: random ids, sampled (spillway is its root; a consumer that samples by its
    /// parent records the message's spans).
    pub fn new_random() -> Self {
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        while trace_id == [0; 16] {
            trace_id = rand::random();
        }
        while parent_id == [0; 8] {
            parent_id = rand::random();
        }
        Self {
            trace_id,
            parent_id,
            flags: 1,
        }
    }

    /// The trace of a message that arrived without one, derived from its id (any text): the
    /// same message gets the same trace on every delivery.
    pub fn from_message_id(id: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(id.as_bytes());
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        trace_id.copy_from_slice(&digest[..16]);
        parent_id.copy_from_slice(&digest[16..24]);
        // A zero id after SHA-256 is not going to happen; if it did, one bit keeps it valid.
        trace_id[15] |= u8::from(trace_id == [0; 16]);
        parent_id[7] |= u8::from(parent_id == [0; 8]);
        Self {
            trace_id,
            parent_id,
            flags: 1,
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` header's value, `00-<trace id>-<parent id>-<flags>` (what `Display`
    /// writes), made without the formatting machinery: the drain writes one per record.
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        // The lengths are fixed, so these cannot fail.
        let _ = hex::encode_to_slice(self.trace_id, &mut out[3..35]);
        let _ = hex::encode_to_slice(self.parent_id, &mut out[36..52]);
        let _ = hex::encode_to_slice([self.flags], &mut out[53..55]);
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII hex digits and dashes are written.
        f.write_str(std::str::from_utf8(&self.header_bytes()).map_err(|_| fmt::Error)?)
    }
}

/// A `tracestate` worth forwarding: at most [`MAX_TRACESTATE_LEN`] characters, at most 32
/// list members (empty ones between commas are allowed and not counted), each `key=value` as
/// the specification defines them: a key of at most 256 of `a-z 0-9 _ - * / @` starting with a
/// letter or digit (at most one `@`, for `tenant@vendor`), a value of at most 256 visible ASCII
/// characters or spaces other than `,` and `=`, not ending in a space; and no key twice.
pub fn valid_tracestate(text: &str) -> Option<&str> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    if text.is_empty() || text.len() > MAX_TRACESTATE_LEN {
        return None;
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in text.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        let key_ok = (1..=256).contains(&key.len())
            && key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b))
            && key.bytes().filter(|&b| b == b'@').count() <= 1;
        let value_ok = (1..=256).contains(&value.len())
            && value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b',' && b != b'=')
            && !value.ends_with(' ');
        if !key_ok || !value_ok || keys.contains(&key) {
            return None;
        }
        keys.push(key);
    }
    (1..=MAX_TRACESTATE_MEMBERS)
        .contains(&keys.len())
        .then_some(text)
}

fn hex_byte(two: &str) -> Option<u8> {
    let b = two.as_bytes();
    if b.len() == 2 && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        u8::from_str_radix(two, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let tp = TraceParent::parse(SPEC).expect("valid");
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), SPEC);
        assert_eq!(
            TraceParent::parse(&format!(" {SPEC}\t")).map(|t| t.to_string()),
            Some(SPEC.into())
        );
    }

    #[test]
    fn what_the_specification_says_to_ignore_is_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-adds";
        assert_eq!(
            TraceParent::parse(later).map(|t| t.to_string()),
            Some(SPEC.into())
        );
    }

    #[test]
    fn new_and_derived_traces_are_valid_and_derived_ones_are_stable() {
        let new = TraceParent::new_random();
        assert_eq!(TraceParent::parse(&new.to_string()), Some(new));
        assert_ne!(new.trace_id, TraceParent::new_random().trace_id);
        let derived = TraceParent::from_message_id("0193a3c4-0000-7000-8000-000000000001");
        assert_eq!(TraceParent::parse(&derived.to_string()), Some(derived));
        assert_eq!(
            derived,
            TraceParent::from_message_id("0193a3c4-0000-7000-8000-000000000001")
        );
        assert_ne!(derived, TraceParent::from_message_id("another"));
    }

    #[test]
    fn tracestate_is_kept_only_when_well_formed_and_short() {
        assert_eq!(
            valid_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
            Some("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
        );
        for good in ["tenant@vendor=v", "a_b-c*d/e=x y", "1a@x=v", "k=v,,k2=v"] {
            assert_eq!(valid_tracestate(good), Some(good), "{good:?}");
        }
        let long = format!("a={}", "x".repeat(MAX_TRACESTATE_LEN));
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        for bad in [
            "",
            "novalue",
            "=v",
            "k=",
            "k=v\n",
            "k=é",
            "Upper=v",
            "k=a=b",
            "k=1,k=2",
            "_bad=v",
            long.as_str(),
            many.as_str(),
        ] {
            assert_eq!(valid_tracestate(bad), None, "{bad:?}");
        }
    }
}
