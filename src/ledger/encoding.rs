//! Canonical encoding v1 of a ledger event, and its SHA-256.
//!
//! The hash covers every field, each written as `<byte length>:<bytes>\n` after the line
//! `aex-ledger-v1\n`, in this order: chain id, sequence number (decimal), previous hash, event
//! type, tenant id, agent id, execution id (empty when absent; ids as lowercase hyphenated UUIDs),
//! timestamp (RFC 3339 UTC with exactly six fractional digits and `Z`), payload (the stored
//! canonical JSON text, verbatim). Length prefixes make the encoding unambiguous whatever the
//! fields contain. `tests/vectors/ledger_v1.json` holds golden vectors; any change here is a new
//! encoding version, never an edit of v1.
//!
//! The source of truth is this module: the verifier recomputes every stored hash with it, and
//! the golden vectors pin it (`tests/vectors/ledger_v1.json`, written by an independent Python
//! implementation, `tests/vectors/ledger_v1.py`; checked here by
//! `tests::golden_vectors_hash_as_recorded`). The database holds a copy — the plpgsql
//! `aex_ledger_field` / `aex_ledger_hash` (migration `20261127000007_ledger_append_function.sql`,
//! their comments in `20261207800001_ledger_encoding_source_of_truth.sql`) that what still hashes
//! in SQL uses (`aex_append_event`: refusals and admin changes; `aex_hold`, `aex_settle`: replicas
//! of a previous version and `bench/driver.rs`) — and that copy is checked
//! against the same vectors in a real Postgres by
//! `the_databases_append_function_hashes_the_golden_vectors_as_recorded` in
//! `tests/api/ledger.rs`. A change of encoding is a new version here first.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The previous hash of the first event of every chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub const ENCODING_VERSION: i16 = 1;

/// Every hashed field of an event except the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader<'a> {
    pub chain_id: &'a str,
    pub seq: i64,
    pub prev_hash: &'a str,
    pub event_type: &'a str,
    pub tenant_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub execution_id: Option<&'a str>,
    pub ts: DateTime<Utc>,
}

/// The timestamp as it is hashed: microsecond precision, the precision Postgres stores.
pub fn format_ts(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// [`format_ts`] written into `buf` without allocating, for the verifier's hot loop: digits by
/// hand for years 0–9999 (every timestamp Postgres hands back in practice), chrono otherwise.
fn ts_text(ts: DateTime<Utc>, buf: &mut [u8; 27]) -> Cow<'_, str> {
    let t = ts.naive_utc();
    // A leap second (nanos past 1e9) or a year chrono writes with a sign: leave them to chrono.
    if !(0..=9999).contains(&t.year()) || t.nanosecond() >= 1_000_000_000 {
        return Cow::Owned(format_ts(ts));
    }
    let mut put = |at: usize, width: usize, mut value: u32| {
        for slot in buf[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, t.year().unsigned_abs());
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 6, t.nanosecond() / 1_000);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        buf[at] = sep;
    }
    match std::str::from_utf8(buf) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(format_ts(ts)),
    }
}

/// Writes the canonical bytes of an event to `sink`, piece by piece and without allocating, so
/// that hashing needs no intermediate buffer.
fn write_canonical(header: &EventHeader<'_>, payload: &str, mut sink: impl FnMut(&[u8])) {
    let mut seq = itoa::Buffer::new();
    let (mut tenant, mut agent, mut ts) = ([0u8; 36], [0u8; 36], [0u8; 27]);
    let tenant = match header.tenant_id {
        Some(id) => &*id.hyphenated().encode_lower(&mut tenant),
        None => "",
    };
    let agent = match header.agent_id {
        Some(id) => &*id.hyphenated().encode_lower(&mut agent),
        None => "",
    };
    let ts = ts_text(header.ts, &mut ts);
    let fields: [&str; 9] = [
        header.chain_id,
        seq.format(header.seq),
        header.prev_hash,
        header.event_type,
        tenant,
        agent,
        header.execution_id.unwrap_or(""),
        &ts,
        payload,
    ];
    sink(b"aex-ledger-v1\n");
    let mut len = itoa::Buffer::new();
    for field in fields {
        sink(len.format(field.len()).as_bytes());
        sink(b":");
        sink(field.as_bytes());
        sink(b"\n");
    }
}

/// The canonical bytes of an event.
pub fn encode(header: &EventHeader<'_>, payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + payload.len());
    write_canonical(header, payload, |bytes| out.extend_from_slice(bytes));
    out
}

/// SHA-256 of the canonical encoding.
pub fn event_digest(header: &EventHeader<'_>, payload: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    write_canonical(header, payload, |bytes| hasher.update(bytes));
    hasher.finalize().into()
}

/// Lowercase hex SHA-256 of the canonical encoding.
pub fn event_hash(header: &EventHeader<'_>, payload: &str) -> String {
    hex::encode(event_digest(header, payload))
}

/// Whether a stored hash (lowercase hex) is `digest`, without allocating.
pub fn hash_is(stored: &str, digest: &[u8; 32]) -> bool {
    let mut text = [0u8; 64];
    hex::encode_to_slice(digest, &mut text).is_ok() && stored.as_bytes() == text
}

/// Canonical JSON text of a payload: object keys sorted (serde_json's default map is ordered),
/// no insignificant whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    // Serialising a `Value` cannot fail: its keys are strings and it holds no non-finite floats.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden vectors in `tests/vectors/ledger_v1.json`, written by an independent Python
    /// implementation of the encoding (`tests/vectors/ledger_v1.py`).
    #[test]
    fn golden_vectors_hash_as_recorded() {
        let text = include_str!("../../tests/vectors/ledger_v1.json");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert!(vectors.len() >= 4);
        for v in vectors {
            let s = |k: &str| v[k].as_str();
            let uuid = |k: &str| s(k).map(|t| Uuid::parse_str(t).unwrap());
            let ts = DateTime::parse_from_rfc3339(s("ts").unwrap())
                .unwrap()
                .with_timezone(&Utc);
            let header = EventHeader {
                chain_id: s("chain_id").unwrap(),
                seq: v["seq"].as_i64().unwrap(),
                prev_hash: s("prev_hash").unwrap(),
                event_type: s("event_type").unwrap(),
                tenant_id: uuid("tenant_id"),
                agent_id: uuid("agent_id"),
                execution_id: s("execution_id"),
                ts,
            };
            assert_eq!(format_ts(ts), s("ts").unwrap(), "timestamps round-trip");
            assert_eq!(
                event_hash(&header, s("payload").unwrap()),
                s("event_hash").unwrap(),
                "{v}"
            );
        }
    }

    #[test]
    fn timestamps_are_written_exactly_as_chrono_writes_them() {
        let mut buf = [0u8; 27];
        let mut micros: i64 = 1_700_000_000_123_456;
        let edges = [
            0,
            1,
            -1,
            999_999,
            -62_167_219_200_000_000, // 0000-01-01T00:00:00Z
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z
            253_402_300_800_000_000, // year 10000: chrono's sign
            -62_167_219_200_000_001, // year -1
        ];
        let sweep = (0..10_000).map(|_| {
            // A cheap deterministic walk over the two centuries after 1970.
            micros = micros
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1)
                % 6_000_000_000_000_000;
            micros.abs()
        });
        for m in edges.into_iter().chain(sweep) {
            let ts = DateTime::from_timestamp_micros(m).unwrap();
            assert_eq!(ts_text(ts, &mut buf), format_ts(ts), "{m}");
        }
    }

    #[test]
    fn the_digest_is_the_hash_of_the_encoding() {
        let header = EventHeader {
            chain_id: "agent:x",
            seq: 12,
            prev_hash: GENESIS_HASH,
            event_type: "usage.commit",
            tenant_id: Some(Uuid::from_u128(7)),
            agent_id: None,
            execution_id: Some("e"),
            ts: Utc::now(),
        };
        let digest = event_digest(&header, "{}");
        assert_eq!(
            digest.as_slice(),
            Sha256::digest(encode(&header, "{}")).as_slice()
        );
        assert!(hash_is(&event_hash(&header, "{}"), &digest));
        assert!(!hash_is(&event_hash(&header, "{ }"), &digest));
        assert!(!hash_is("", &digest));
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let ts = Utc::now();
        let base = EventHeader {
            chain_id: "c",
            seq: 1,
            prev_hash: GENESIS_HASH,
            event_type: "t",
            tenant_id: None,
            agent_id: None,
            execution_id: None,
            ts,
        };
        let h = event_hash(&base, "{}");
        let variants = [
            EventHeader {
                chain_id: "d",
                ..base.clone()
            },
            EventHeader {
                seq: 2,
                ..base.clone()
            },
            EventHeader {
                prev_hash: "1",
                ..base.clone()
            },
            EventHeader {
                event_type: "u",
                ..base.clone()
            },
            EventHeader {
                tenant_id: Some(Uuid::nil()),
                ..base.clone()
            },
            EventHeader {
                agent_id: Some(Uuid::nil()),
                ..base.clone()
            },
            EventHeader {
                execution_id: Some("x"),
                ..base.clone()
            },
            EventHeader {
                ts: ts + chrono::Duration::microseconds(1),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(event_hash(&v, "{}"), h, "{v:?}");
        }
        assert_ne!(event_hash(&base, "{ }"), h);
        // Length prefixes: moving bytes between fields changes the hash.
        let a = EventHeader {
            chain_id: "ab",
            event_type: "c",
            ..base.clone()
        };
        let b = EventHeader {
            chain_id: "a",
            event_type: "bc",
            ..base.clone()
        };
        assert_ne!(event_hash(&a, "{}"), event_hash(&b, "{}"));
    }
}
