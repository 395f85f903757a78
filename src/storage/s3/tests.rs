//! Unit tests of S3 URL options.

use super::*;

#[test]
fn s3_urls_parse_with_options() {
    let options = S3Options::from_url("s3://bkt/a/b/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1").unwrap();
    assert_eq!(options.bucket, "bkt");
    assert_eq!(options.prefix, "a/b");
    assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(options.region.as_deref(), Some("eu-west-1"));
    assert!(options.path_style, "an explicit endpoint defaults to path-style");
    let plain = S3Options::from_url("s3://bkt").unwrap();
    assert_eq!(plain.prefix, "");
    assert!(!plain.path_style);
    assert!(
        S3Options::from_url("s3:///x")
            .unwrap_err()
            .contains("bucket name is missing")
    );
    assert!(
        S3Options::from_url("s3://b?colour=red")
            .unwrap_err()
            .contains("unknown URL parameter")
    );
}

#[test]
fn debug_output_hides_the_secret_key() {
    let mut options = S3Options::new("b", "");
    options.secret_access_key = Some(Secret::new("wJalrXUtnFEMI"));
    assert!(!format!("{options:?}").contains("wJalr"));
}
