//! What went wrong with one S3 request, read from the SDK's typed errors and the store's error
//! codes, before it is given the object's name.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// What went wrong with one request, before it is given the object's name.
pub(super) enum Failure {
    NotFound,
    Precondition(String),
    NoBucket,
    Denied(String),
    Unreachable(String),
    /// No credentials could be found (environment, profile, instance role).
    NoCredentials(String),
    /// 5xx after the SDK's retries.
    Unavailable(String),
    Other(String),
}

/// The errors an SDK error is made of, outermost first.
pub(super) fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// One line saying why a request never got an answer: the operating system's words when there
/// are some (connection refused, host not found), else the innermost cause — never the SDK's
/// debug rendering.
pub(super) fn transport_detail(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(io) = causes(err).find_map(|e| e.downcast_ref::<std::io::Error>()) {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("{io}: nothing accepts connections there; check the endpoint and that the store runs")
            }
            std::io::ErrorKind::TimedOut => format!("{io}: check the endpoint, the network and firewalls"),
            _ => io.to_string(),
        };
    }
    causes(err)
        .last()
        .map(|e| e.to_string())
        .unwrap_or_else(|| err.to_string())
}

pub(super) fn classify<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ConstructionFailure(_) = err {
        let chain: Vec<_> = causes(err).collect();
        if let Some(credentials) = chain
            .iter()
            .find_map(|e| e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>())
        {
            use aws_credential_types::provider::error::CredentialsError;
            return match credentials {
                CredentialsError::ProviderTimedOut(_) => Failure::Unreachable(transport_detail(err)),
                CredentialsError::CredentialsNotLoaded(_) => Failure::NoCredentials(
                    "none were found in the environment, an AWS profile or the instance's metadata".into(),
                ),
                _ => Failure::NoCredentials(
                    causes(credentials)
                        .last()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| credentials.to_string()),
                ),
            };
        }
        return Failure::Unreachable(transport_detail(err));
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or("");
    // The store's own words when it sent an error document.
    let detail = match (code, status) {
        (code, Some(status)) if !code.is_empty() => {
            format!("{code} (HTTP {status}): {}", err.message().unwrap_or("no message"))
        }
        (_, Some(status)) => format!("HTTP {status}"),
        (_, None) => transport_detail(err),
    };
    match (status, code) {
        (_, "NoSuchBucket") => Failure::NoBucket,
        (_, "NoSuchKey") | (Some(404), _) => Failure::NotFound,
        (Some(412), _) | (Some(409), "ConditionalRequestConflict") | (_, "PreconditionFailed") => {
            Failure::Precondition(if code.is_empty() {
                "precondition failed".into()
            } else {
                code.to_string()
            })
        }
        (Some(401 | 403), _)
        | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken") => {
            Failure::Denied(if code.is_empty() {
                format!("HTTP {}", status.unwrap_or(403))
            } else {
                code.to_string()
            })
        }
        (Some(500..=599), _) => Failure::Unavailable(detail),
        _ => Failure::Other(detail),
    }
}
