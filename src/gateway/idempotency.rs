//! Execution identity (SPEC §5.1): the caller's key or a minted UUIDv7, and the request
//! fingerprint that tells a true retry from a different request under the same key.

use sha2::{Digest, Sha256};

use super::GatewayError;
use crate::domain::CallRoute;

/// The longest key accepted (SPEC §3).
pub const MAX_KEY_LEN: usize = 255;

/// The execution key of a request: `(key, keyed)`.
pub fn execution_key(header: Option<&str>) -> Result<(String, bool), GatewayError> {
    match header {
        None => Ok((uuid::Uuid::now_v7().to_string(), false)),
        Some(key) => {
            let printable = key.bytes().all(|b| (0x20..=0x7e).contains(&b)) && key.trim() == key;
            if key.is_empty() || key.len() > MAX_KEY_LEN || !printable {
                return Err(GatewayError::invalid(
                    format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters without surrounding spaces"),
                    None,
                ));
            }
            Ok((key.to_owned(), true))
        }
    }
}

/// SHA-256 over the normalised route and the canonical JSON of the body (keys sorted).
pub fn fingerprint(route: CallRoute, body: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_str().as_bytes());
    hasher.update(b"\n");
    // serde_json's map is ordered by key, so this serialisation is canonical.
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(execution_key(Some("abc-123")).is_ok());
        assert!(execution_key(Some("")).is_err());
        assert!(execution_key(Some("has space")).is_ok());
        assert!(execution_key(Some(" leading")).is_err());
        assert!(execution_key(Some("tab\there")).is_err());
        assert!(execution_key(Some(&"x".repeat(256))).is_err());
        assert!(execution_key(Some(&"x".repeat(255))).is_ok());
        let (minted, keyed) = execution_key(None).unwrap();
        assert!(!keyed && minted.len() == 36);
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_content() {
        let a = json!({"model": "m", "messages": [1]});
        let b = json!({"messages": [1], "model": "m"});
        let c = json!({"messages": [2], "model": "m"});
        let fp =
            |v: &serde_json::Value| fingerprint(CallRoute::ChatCompletions, v.as_object().unwrap());
        assert_eq!(fp(&a), fp(&b));
        assert_ne!(fp(&a), fp(&c));
        assert_ne!(
            fp(&a),
            fingerprint(CallRoute::Responses, a.as_object().unwrap())
        );
    }
}
