//! Webhook signatures: HubSpot v1/v2/v3 and Frappe's `X-Frappe-Webhook-Signature`.
//!
//! Verification lives here (not in ingest) because the HubSpot simulator signs with the very same
//! functions, and a test that signs and verifies with one implementation proves nothing: the
//! contract vectors in `tests/contracts/hubspot/signatures` made with HubSpot's SDK pin it.
//! Every comparison is constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const HUBSPOT_SIGNATURE_V3: &str = "x-hubspot-signature-v3";
pub const HUBSPOT_SIGNATURE: &str = "x-hubspot-signature";
pub const HUBSPOT_SIGNATURE_VERSION: &str = "x-hubspot-signature-version";
pub const HUBSPOT_TIMESTAMP: &str = "x-hubspot-request-timestamp";
pub const FRAPPE_SIGNATURE: &str = "x-frappe-webhook-signature";

/// HubSpot's documented replay window for v3 signatures.
pub const HUBSPOT_MAX_AGE_MS: i64 = 300_000;

/// Why a signature was refused. Each variant is a different fix for the sender.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not valid")]
    MalformedHeader(&'static str),
    #[error("request timestamp is older than 5 minutes")]
    Stale,
    #[error("signature version {0} is not accepted")]
    VersionNotAccepted(String),
    #[error("signature does not match")]
    Mismatch,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> ! {
    // hmac::Hmac::new_from_slice only fails for fixed-size-key MACs; HMAC has none.
    panic!("HMAC rejected a key, which HMAC never does")
}

/// HubSpot v3: `base64(HMAC_SHA256(secret, method + uri + body + timestamp))`.
pub fn hubspot_v3_sign(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
) -> String {
    STANDARD.encode(hmac_sha256(
        secret.as_bytes(),
        &[
            method.as_bytes(),
            uri.as_bytes(),
            body,
            timestamp.as_bytes(),
        ],
    ))
}

/// HubSpot v1: `hex(SHA256(secret + body))`.
pub fn hubspot_v1_sign(secret: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// HubSpot v2: `hex(SHA256(secret + method + uri + body))`.
pub fn hubspot_v2_sign(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(method.as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// What a v3 verification looks at, as received.
#[derive(Debug, Clone, Copy)]
pub struct V3Request<'a> {
    pub method: &'a str,
    /// The full public URL as HubSpot called it, already passed through [`hubspot_v3_uri`].
    pub uri: &'a str,
    pub body: &'a [u8],
    /// `X-HubSpot-Request-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-HubSpot-Signature-v3`.
    pub signature: Option<&'a str>,
}

/// Verify a v3 signature. `now_ms` is injected so tests can pin the clock to a vector's time;
/// `max_age_ms` is the replay window ([`HUBSPOT_MAX_AGE_MS`] unless configured).
pub fn verify_hubspot_v3(
    secret: &str,
    req: &V3Request<'_>,
    now_ms: i64,
    max_age_ms: i64,
) -> Result<(), SignatureError> {
    let V3Request {
        method,
        uri,
        body,
        timestamp,
        signature,
    } = *req;
    let signature = signature.ok_or(SignatureError::MissingHeader(HUBSPOT_SIGNATURE_V3))?;
    let timestamp = timestamp.ok_or(SignatureError::MissingHeader(HUBSPOT_TIMESTAMP))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::MalformedHeader(HUBSPOT_TIMESTAMP))?;
    // The SDK compares whole seconds (`now - floor(ts/1000) >= 300` rejects); mirror it exactly so
    // the boundary vectors agree. Future timestamps are accepted, as both SDKs do.
    if now_ms.div_euclid(1000) - ts.div_euclid(1000) >= max_age_ms.div_euclid(1000) {
        return Err(SignatureError::Stale);
    }
    let given = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    let expected = hmac_sha256(
        secret.as_bytes(),
        &[
            method.as_bytes(),
            uri.as_bytes(),
            body,
            timestamp.as_bytes(),
        ],
    );
    if ct_eq(&given, &expected) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Verify a v1 or v2 signature (`version` is the `X-HubSpot-Signature-Version` header).
pub fn verify_hubspot_v1_v2(
    secret: &str,
    version: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    let expected = match version {
        "v1" => hubspot_v1_sign(secret, body),
        "v2" => hubspot_v2_sign(secret, method, uri, body),
        other => return Err(SignatureError::VersionNotAccepted(other.to_string())),
    };
    if ct_eq(
        signature.trim().to_ascii_lowercase().as_bytes(),
        expected.as_bytes(),
    ) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The URI HubSpot signs for v3: the public URL with a fixed set of percent-escapes decoded
/// (HubSpot docs, "Validate the v3 request signature"); every other escape stays as it is.
pub fn hubspot_v3_uri(raw: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let esc = rest.get(pos + 1..pos + 3);
        match esc.and_then(|e| DECODED.iter().find(|(hex, _)| hex.eq_ignore_ascii_case(e))) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[pos + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Frappe: `base64(HMAC_SHA256(secret, raw body))`.
pub fn frappe_sign(secret: &str, body: &[u8]) -> String {
    STANDARD.encode(hmac_sha256(secret.as_bytes(), &[body]))
}

pub fn verify_frappe(
    secret: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::MissingHeader(FRAPPE_SIGNATURE))?;
    let given = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    let expected = hmac_sha256(secret.as_bytes(), &[body]);
    if ct_eq(&given, &expected) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        version: String,
        client_secret: String,
        method: String,
        uri: String,
        raw_request_uri: Option<String>,
        body: String,
        timestamp: String,
        verify_at_ms: String,
        signature: String,
        expect_valid: bool,
    }

    fn contracts() -> std::path::PathBuf {
        crate::contracts::dir()
    }

    #[test]
    fn every_hubspot_sdk_vector_gives_its_expected_result() {
        let text = std::fs::read_to_string(contracts().join("hubspot/signatures/vectors.json"))
            .expect("contract vectors present");
        let vectors: Vectors = serde_json::from_str(&text).expect("vectors parse");
        assert!(vectors.vectors.len() >= 15);
        for v in vectors.vectors {
            let now: i64 = v.verify_at_ms.parse().expect("verify_at_ms");
            let ok = match v.version.as_str() {
                "v3" => {
                    // Where the vector gives the wire form, the verifier decodes it as HubSpot does and
                    // must arrive at exactly the signed URI; otherwise `uri` is what the verifier used.
                    let uri = match v.raw_request_uri.as_deref() {
                        Some(raw) => {
                            let decoded = hubspot_v3_uri(raw);
                            assert_eq!(decoded, v.uri, "decoding of {}", v.name);
                            decoded
                        }
                        None => v.uri.clone(),
                    };
                    let req = V3Request {
                        method: &v.method,
                        uri: &uri,
                        body: v.body.as_bytes(),
                        timestamp: Some(&v.timestamp),
                        signature: Some(&v.signature),
                    };
                    verify_hubspot_v3(&v.client_secret, &req, now, HUBSPOT_MAX_AGE_MS).is_ok()
                }
                ver => verify_hubspot_v1_v2(
                    &v.client_secret,
                    ver,
                    &v.method,
                    &v.uri,
                    v.body.as_bytes(),
                    &v.signature,
                )
                .is_ok(),
            };
            assert_eq!(ok, v.expect_valid, "vector {}", v.name);
        }
    }

    #[test]
    fn v3_sign_roundtrips_and_rejects_tampering() {
        let sig = hubspot_v3_sign("s", "POST", "https://x/y", b"[]", "1000");
        let req = V3Request {
            method: "POST",
            uri: "https://x/y",
            body: b"[]",
            timestamp: Some("1000"),
            signature: Some(&sig),
        };
        assert!(verify_hubspot_v3("s", &req, 1000, HUBSPOT_MAX_AGE_MS).is_ok());
        let tampered = V3Request {
            body: b"[ ]",
            ..req
        };
        assert_eq!(
            verify_hubspot_v3("s", &tampered, 1000, HUBSPOT_MAX_AGE_MS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hubspot_v3("s", &req, 301_000, HUBSPOT_MAX_AGE_MS),
            Err(SignatureError::Stale)
        );
        assert!(verify_hubspot_v3("s", &req, 299_999, HUBSPOT_MAX_AGE_MS).is_ok());
        let no_ts = V3Request {
            timestamp: None,
            ..req
        };
        assert_eq!(
            verify_hubspot_v3("s", &no_ts, 1000, HUBSPOT_MAX_AGE_MS),
            Err(SignatureError::MissingHeader(HUBSPOT_TIMESTAMP))
        );
        assert!(verify_hubspot_v3("wrong", &req, 1000, HUBSPOT_MAX_AGE_MS).is_err());
    }

    #[test]
    fn v3_uri_decodes_only_the_documented_escapes() {
        assert_eq!(
            hubspot_v3_uri("https://a.b/c%3Ad%2fe?x=%20%3D%40"),
            "https://a.b/c:d/e?x=%20%3D@"
        );
        assert_eq!(hubspot_v3_uri("https://a/b%"), "https://a/b%");
    }

    #[test]
    fn every_captured_frappe_delivery_verifies_and_tampering_fails() {
        let dir = contracts().join("erpnext/webhooks");
        let secret: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("secret.json")).expect("secret"),
        )
        .expect("json");
        let secret = secret["webhook_secret"].as_str().expect("secret string");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let path = entry.expect("entry").path();
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let Some(body) = doc["request"]["body_raw"].as_str() else {
                continue;
            };
            let sig = doc["request"]["headers"]["X-Frappe-Webhook-Signature"]
                .as_str()
                .expect("signature header");
            assert!(
                verify_frappe(secret, body.as_bytes(), Some(sig)).is_ok(),
                "{path:?}"
            );
            let tampered = body.replacen('1', "2", 1);
            assert!(verify_frappe(secret, tampered.as_bytes(), Some(sig)).is_err());
            assert!(verify_frappe("wrong-secret", body.as_bytes(), Some(sig)).is_err());
            checked += 1;
        }
        assert!(checked >= 9, "only {checked} deliveries found");
    }
}
