//! Attestations of uploaded packages (CEP 27): Sigstore bundles whose in-toto statement names
//! the package's SHA-256, received in the `attestation` part of a prefix.dev upload and served,
//! as prefix.dev does, at `<package file>.v0.sigs` as a JSON array of bundles.
//!
//! condaflare stores a bundle as given and does not verify its signature: verification needs
//! the Sigstore trust root and the publisher's expected identity, which only the reader knows.
//! What is checked is that the text is a bundle and that it speaks of the bytes it is stored
//! with, so a garbage or misplaced attestation never reaches readers.

use base64::Engine;
use serde_json::{Map, Value};

/// What follows a package file's name in the name of its attestations.
pub const SIGS_SUFFIX: &str = ".v0.sigs";

/// The largest attestation part accepted; a bundle is a few kilobytes.
pub const MAX_ATTESTATION_BYTES: usize = 64 * 1024;

/// The in-toto statement type a DSSE envelope must carry.
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The name of the attestations of `package_filename`.
pub fn sigs_filename(package_filename: &str) -> String {
    format!("{package_filename}{SIGS_SUFFIX}")
}

/// The package file whose attestations `filename` holds, if it names attestations.
pub fn sigs_package(filename: &str) -> Option<&str> {
    filename.strip_suffix(SIGS_SUFFIX)
}

/// Checks the text of an `attestation` part (one bundle, or an array of bundles) for the
/// package whose SHA-256 is `sha256_hex`, and returns the document to serve: a compact JSON
/// array of the bundles.
pub fn sigs_document(text: &[u8], sha256_hex: &str) -> Result<String, String> {
    if text.len() > MAX_ATTESTATION_BYTES {
        return Err(format!(
            "the attestation is larger than {MAX_ATTESTATION_BYTES} bytes"
        ));
    }
    let value: Value =
        serde_json::from_slice(text).map_err(|e| format!("the attestation is not JSON: {e}"))?;
    let bundles = match value {
        Value::Array(bundles) if !bundles.is_empty() => bundles,
        Value::Array(_) => return Err("the attestation is an empty array".into()),
        bundle => vec![bundle],
    };
    for bundle in &bundles {
        check_bundle(bundle, sha256_hex)?;
    }
    Ok(Value::Array(bundles).to_string())
}

fn check_bundle(bundle: &Value, sha256_hex: &str) -> Result<(), String> {
    let bundle = bundle
        .as_object()
        .ok_or("the attestation is not a Sigstore bundle (a JSON object)")?;
    let media_type = bundle
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !media_type.starts_with("application/vnd.dev.sigstore.bundle") {
        return Err("the attestation is not a Sigstore bundle: its mediaType is not application/vnd.dev.sigstore.bundle…".into());
    }
    if !bundle
        .get("verificationMaterial")
        .is_some_and(Value::is_object)
    {
        return Err("the Sigstore bundle has no verificationMaterial".into());
    }
    match (bundle.get("dsseEnvelope"), bundle.get("messageSignature")) {
        (Some(envelope), None) => check_envelope(envelope, sha256_hex),
        (None, Some(signature)) => check_message_signature(signature, sha256_hex),
        _ => {
            Err("the Sigstore bundle needs exactly one of dsseEnvelope and messageSignature".into())
        }
    }
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("the bundle's {what} is not an object"))
}

fn decode_base64(text: Option<&Value>, what: &str) -> Result<Vec<u8>, String> {
    let text = text
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the bundle has no {what}"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
        .map_err(|_| format!("the bundle's {what} is not base64"))
}

/// A DSSE envelope must sign an in-toto statement with this package among its subjects.
fn check_envelope(envelope: &Value, sha256_hex: &str) -> Result<(), String> {
    let envelope = object(envelope, "dsseEnvelope")?;
    if envelope.get("payloadType").and_then(Value::as_str) != Some(IN_TOTO_PAYLOAD_TYPE) {
        return Err(format!(
            "the bundle's dsseEnvelope.payloadType is not {IN_TOTO_PAYLOAD_TYPE}"
        ));
    }
    let signatures = envelope.get("signatures").and_then(Value::as_array);
    if signatures.is_none_or(Vec::is_empty) {
        return Err("the bundle's dsseEnvelope has no signatures".into());
    }
    let payload = decode_base64(envelope.get("payload"), "dsseEnvelope.payload")?;
    let statement: Value = serde_json::from_slice(&payload)
        .map_err(|_| "the bundle's in-toto statement is not JSON".to_string())?;
    let names_package = statement
        .get("subject")
        .and_then(Value::as_array)
        .ok_or("the bundle's in-toto statement has no subject")?
        .iter()
        .filter_map(|subject| subject.pointer("/digest/sha256").and_then(Value::as_str))
        .any(|digest| digest.eq_ignore_ascii_case(sha256_hex));
    if !names_package {
        return Err(format!(
            "the attestation is for other bytes: no subject of its statement has the package's SHA-256 {sha256_hex}"
        ));
    }
    Ok(())
}

/// A message signature must be over this package's SHA-256.
fn check_message_signature(signature: &Value, sha256_hex: &str) -> Result<(), String> {
    let signature = object(signature, "messageSignature")?;
    let digest = signature
        .get("messageDigest")
        .ok_or("the bundle's messageSignature has no messageDigest")?;
    if digest.get("algorithm").and_then(Value::as_str) != Some("SHA2_256") {
        return Err("the bundle's messageDigest.algorithm is not SHA2_256".into());
    }
    let digest = decode_base64(digest.get("digest"), "messageDigest.digest")?;
    if !hex::encode(digest).eq_ignore_ascii_case(sha256_hex) {
        return Err(format!(
            "the attestation is for other bytes: its message digest is not the package's SHA-256 {sha256_hex}"
        ));
    }
    decode_base64(signature.get("signature"), "messageSignature.signature")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn dsse_bundle(sha256: &str) -> Value {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "a-1-0.conda", "digest": {"sha256": sha256}}],
            "predicateType": "https://schemas.conda.org/attestations-publish-1.schema.json",
            "predicate": {"targetChannel": "https://example.org/c"},
        });
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"certificate": {"rawBytes": "AAAA"}},
            "dsseEnvelope": {
                "payload": base64::engine::general_purpose::STANDARD.encode(statement.to_string()),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": [{"sig": "AAAA"}],
            },
        })
    }

    #[test]
    fn a_bundle_for_the_package_becomes_an_array() {
        let bundle = dsse_bundle(SHA);
        let served = sigs_document(bundle.to_string().as_bytes(), SHA).unwrap();
        let back: Value = serde_json::from_str(&served).unwrap();
        assert_eq!(back, json!([bundle]));
        // An array is taken as it is; the digest's case does not matter.
        let upper = dsse_bundle(&SHA.to_uppercase());
        let array = json!([upper, bundle]).to_string();
        assert_eq!(
            serde_json::from_str::<Value>(&sigs_document(array.as_bytes(), SHA).unwrap()).unwrap(),
            json!([upper, bundle])
        );
    }

    #[test]
    fn a_message_signature_over_the_digest() {
        let digest = base64::engine::general_purpose::STANDARD.encode(hex::decode(SHA).unwrap());
        let bundle = json!({
            "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.2",
            "verificationMaterial": {"publicKey": {"hint": "x"}},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": digest},
                "signature": "AAAA",
            },
        });
        assert!(sigs_document(bundle.to_string().as_bytes(), SHA).is_ok());
        let other = "0".repeat(64);
        let error = sigs_document(bundle.to_string().as_bytes(), &other).unwrap_err();
        assert!(error.contains("other bytes"), "{error}");
    }

    #[test]
    fn garbage_and_misplaced_bundles_are_refused() {
        let other = dsse_bundle(&"0".repeat(64)).to_string();
        let mut no_material = dsse_bundle(SHA);
        no_material
            .as_object_mut()
            .unwrap()
            .remove("verificationMaterial");
        let mut unsigned = dsse_bundle(SHA);
        unsigned["dsseEnvelope"]["signatures"] = json!([]);
        let mut garbled = dsse_bundle(SHA);
        garbled["dsseEnvelope"]["payload"] = json!("%%%");
        for (text, expected) in [
            ("not json".to_string(), "not JSON"),
            ("[]".to_string(), "empty array"),
            ("42".to_string(), "not a Sigstore bundle"),
            (json!({"mediaType": "x"}).to_string(), "mediaType"),
            (no_material.to_string(), "verificationMaterial"),
            (unsigned.to_string(), "no signatures"),
            (garbled.to_string(), "not base64"),
            (other, "other bytes"),
            ("x".repeat(MAX_ATTESTATION_BYTES + 1), "larger than"),
        ] {
            let error = sigs_document(text.as_bytes(), SHA).unwrap_err();
            assert!(error.contains(expected), "{error} should say {expected}");
        }
    }

    #[test]
    fn sigs_names() {
        assert_eq!(sigs_filename("a-1-0.conda"), "a-1-0.conda.v0.sigs");
        assert_eq!(sigs_package("a-1-0.conda.v0.sigs"), Some("a-1-0.conda"));
        assert_eq!(sigs_package("a-1-0.conda"), None);
    }
}
