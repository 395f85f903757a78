//! The checksummed JSON envelope shared by status files and manifests.
//!
//! An envelope is a JSON object with `format`, `version`, an `md5` and whatever else its owner
//! puts in it. The MD5 covers the canonical rendering of every member except `md5` itself:
//! object keys sorted by their UTF-8 bytes, no whitespace, strings escaped as serde_json does.
//! The file on disk is pretty-printed for people; the canonical form is recomputed when read, so
//! formatting never matters but any change of content does.

use serde_json::{Map, Value};

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("expected format {expected:?}, found {found:?}")]
    WrongFormat { expected: String, found: String },
    #[error("member {0:?} is missing or has the wrong type")]
    Missing(&'static str),
    #[error("checksum mismatch: recorded md5 {recorded}, content hashes to {actual}")]
    Checksum { recorded: String, actual: String },
}

/// Renders a JSON value canonically (sorted keys, no whitespace).
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn checksum_of(members: &Map<String, Value>) -> String {
    let mut without = members.clone();
    without.remove("md5");
    crate::storage::md5_hex(canonical(&Value::Object(without)).as_bytes())
}

/// Adds `format`, `version` and the `md5` to `members` and renders the file's bytes.
pub fn seal(format: &str, version: u32, mut members: Map<String, Value>) -> Vec<u8> {
    members.insert("format".into(), Value::String(format.into()));
    members.insert("version".into(), Value::from(version));
    members.remove("md5");
    let md5 = checksum_of(&members);
    members.insert("md5".into(), Value::String(md5));
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(members)).expect("JSON values always serialize");
    bytes.push(b'\n');
    bytes
}

/// An opened envelope whose checksum matched.
#[derive(Debug, Clone)]
pub struct Opened {
    pub version: u32,
    /// Every member but `format`, `version` and `md5`.
    pub members: Map<String, Value>,
}

/// Parses and verifies an envelope of `format`.
///
/// # Errors
/// [`EnvelopeError`] when the bytes are not JSON, not this format, or the checksum differs.
pub fn open(format: &str, bytes: &[u8]) -> Result<Opened, EnvelopeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Json(e.to_string()))?;
    let Value::Object(mut members) = value else {
        return Err(EnvelopeError::Json("the top level is not an object".into()));
    };
    let found = members
        .get("format")
        .and_then(Value::as_str)
        .ok_or(EnvelopeError::Missing("format"))?;
    if found != format {
        return Err(EnvelopeError::WrongFormat {
            expected: format.into(),
            found: found.into(),
        });
    }
    let recorded = members
        .get("md5")
        .and_then(Value::as_str)
        .ok_or(EnvelopeError::Missing("md5"))?
        .to_string();
    let actual = checksum_of(&members);
    if recorded != actual {
        return Err(EnvelopeError::Checksum { recorded, actual });
    }
    let version = members
        .get("version")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(EnvelopeError::Missing("version"))?;
    members.remove("format");
    members.remove("version");
    members.remove("md5");
    Ok(Opened { version, members })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let value = json!({"b": [1, {"z": null, "a": "x\ny"}], "a": true});
        assert_eq!(canonical(&value), r#"{"a":true,"b":[1,{"a":"x\ny","z":null}]}"#);
    }

    #[test]
    fn sealed_envelopes_open_and_any_flipped_byte_is_caught() {
        let mut members = Map::new();
        members.insert("body".into(), json!({"copies": ["one", "two"], "n": 42}));
        let bytes = seal("test-format", 3, members.clone());
        let opened = open("test-format", &bytes).unwrap();
        assert_eq!(opened.version, 3);
        assert_eq!(opened.members, members);
        // Flip every byte in turn: each must be refused (as bad JSON, bad format or bad checksum),
        // except changes that only touch insignificant whitespace.
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            if let Ok(reopened) = open("test-format", &damaged) {
                assert_eq!(reopened.members, members, "byte {i} changed content undetected");
                assert_eq!(reopened.version, 3);
            }
        }
        assert!(matches!(open("other", &bytes), Err(EnvelopeError::WrongFormat { .. })));
    }
}
