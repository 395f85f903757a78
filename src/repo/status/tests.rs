//! The status file's encoding, versions, generations and recovery rules.

use super::*;
use crate::repo::kinds::RunType;

#[test]
fn a_generation_at_its_largest_is_damage_not_a_wrap_to_zero() {
    assert_eq!(next_generation(7, "s").unwrap(), 8);
    assert!(matches!(
        next_generation(u64::MAX, "s"),
        Err(StatusError::Corrupted { .. })
    ));
}

fn body() -> StatusBody {
    StatusBody {
        source: "app".into(),
        copies: vec![query::tests::copy("f1", RunType::Daily, None, 1)],
        verifications: Vec::new(),
        runs: Vec::new(),
    }
}

#[test]
fn encoded_status_decodes_to_the_same() {
    let bytes = encode(7, &body());
    let status = decode("f", &bytes).unwrap();
    assert_eq!(status.generation, 7);
    assert_eq!(status.body, body());
}

#[test]
fn a_flipped_byte_is_detected_as_corruption() {
    let bytes = encode(7, &body());
    let text = String::from_utf8(bytes.clone()).unwrap();
    let at = text.find("\"bytes\": 1").unwrap() + "\"bytes\": ".len();
    let mut damaged = bytes;
    damaged[at] = b'2';
    let err = decode("app/status.json at /b", &damaged).unwrap_err().to_string();
    assert!(
        err.contains("app/status.json at /b is damaged: checksum mismatch"),
        "{err}"
    );
}

#[test]
fn newer_versions_are_refused_naming_both_versions() {
    let mut members = Map::new();
    members.insert("generation".into(), Value::from(1));
    members.insert(
        "body".into(),
        serde_json::json!({"source": "app", "copies": [], "shards": 4}),
    );
    let bytes = envelope::seal(STATUS_FORMAT, STATUS_VERSION + 1, members);
    let err = decode("app/status.json", &bytes).unwrap_err();
    assert!(
        matches!(err, StatusError::NewerVersion { found, supported, .. } if found == STATUS_VERSION + 1 && supported == STATUS_VERSION)
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("version {}", STATUS_VERSION + 1))
            && text.contains(&format!("version {STATUS_VERSION}")),
        "{text}"
    );
}
