//! Webhook notifications: each finished run's outcome posted as JSON to the configured URL, with
//! a timeout and a few retries, never failing or holding up the run for long.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::config::notifications::Notifications;
use crate::jobs::history::FinishedRun;

/// The JSON body a webhook receives.
#[derive(Debug, Serialize)]
pub struct Notification<'a> {
    pub source: &'a str,
    pub command: &'a str,
    /// `success` or `failure`.
    pub result: &'static str,
    pub exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<&'a str>,
    pub host: &'a str,
    pub cairn_version: &'a str,
}

impl<'a> Notification<'a> {
    pub fn of(run: &'a FinishedRun) -> Self {
        let record = &run.record;
        Notification {
            source: &run.source,
            command: &record.command,
            result: if record.succeeded() { "success" } else { "failure" },
            exit_code: record.exit_code,
            // Already masked when the run was recorded.
            error: record.error.as_deref(),
            started_at: record.started_at,
            finished_at: record.finished_at,
            bytes: record.bytes,
            copy: record.copy.as_deref(),
            host: &record.host,
            cairn_version: &record.cairn_version,
        }
    }
}

/// Posts each run the settings want to the webhook. Failures are logged as warnings — without
/// the URL, which may hold a token — and never change the run's outcome.
pub async fn send(settings: &Notifications, runs: &[FinishedRun]) {
    let Some(url) = &settings.webhook_url else {
        return;
    };
    let wanted: Vec<&FinishedRun> = runs.iter().filter(|r| settings.wants(r.record.succeeded())).collect();
    if wanted.is_empty() {
        return;
    }
    let connector = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
    {
        Ok(builder) => builder.https_or_http().enable_http1().build(),
        Err(e) => {
            tracing::warn!("notifications: cannot load the system's CA certificates: {e}");
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let timeout = Duration::from_secs(settings.timeout_seconds.unwrap_or(10));
    let retries = settings.retries.unwrap_or(2);
    for run in wanted {
        let body = Bytes::from(serde_json::to_vec(&Notification::of(run)).expect("notifications serialize"));
        let mut attempt = 0;
        loop {
            match post(&client, url.expose(), body.clone(), timeout).await {
                Ok(()) => break,
                Err(e) if attempt < retries => {
                    attempt += 1;
                    tracing::debug!("{}: notification attempt {attempt} failed: {e}; retrying", run.source);
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(e) => {
                    tracing::warn!(
                        "{}: the {} notification was not delivered after {} attempts: {e}",
                        run.source,
                        run.command,
                        attempt + 1
                    );
                    break;
                }
            }
        }
    }
}

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

async fn post(client: &HttpsClient, url: &str, body: Bytes, timeout: Duration) -> Result<(), String> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, format!("cairn/{}", crate::CAIRN_VERSION))
        .body(Full::new(body))
        .map_err(|_| "the webhook URL is not a valid request URI".to_string())?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| format!("no response within {}s", timeout.as_secs()))?
        .map_err(|e| strip_url(&e, url))?;
    match response.status() {
        status if status.is_success() => Ok(()),
        status => Err(format!("the webhook answered {status}")),
    }
}

/// The client's error text, without the URL should it ever quote it.
fn strip_url(error: &dyn std::error::Error, url: &str) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace(url, "the webhook URL")
}
