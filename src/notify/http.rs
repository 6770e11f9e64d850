//! One HTTP POST, with a deadline, and a verdict on whether a failure may be retried.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::SendError;

/// How long one request may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting may take; a sink that does not answer by then never got anything.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// POSTs `body` to `url` with `headers`. Errors never quote the URL (it is a secret).
pub async fn post(
    url: &str,
    headers: &[(&str, String)],
    content_type: &str,
    body: Vec<u8>,
) -> Result<String, SendError> {
    let uri: hyper::Uri = url
        .trim()
        .parse()
        .map_err(|_| SendError::fatal("the URL in the Secret is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(SendError::fatal(
                "the URL in the Secret must start with https:// (or http:// inside the cluster)",
            ));
        }
    }
    let mut request = Request::post(uri).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .header("user-agent", concat!("coffer/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SendError::fatal(format!("cannot build the request: {e}")))?;
    // The provider named, not the process default: which one that is depends on what else
    // is linked in.
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| SendError::fatal(format!("cannot load the system's certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let response = match tokio::time::timeout(TIMEOUT, client.request(request)).await {
        Err(_) => {
            return Err(SendError::fatal(format!(
                "no answer within {}s; it may have arrived, so it is not sent again",
                TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) if e.is_connect() => {
            return Err(SendError::refused(format!(
                "cannot connect: {}",
                source_chain(&e)
            )));
        }
        Ok(Err(e)) => {
            return Err(SendError::fatal(format!(
                "the request failed after it was sent, so it is not sent again: {}",
                source_chain(&e)
            )));
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let text = match tokio::time::timeout(TIMEOUT, response.into_body().collect()).await {
        Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        _ => String::new(),
    };
    let text = crate::text::one_line(&text);
    let text: String = text.chars().take(200).collect();
    if status.is_success() {
        return Ok(format!("HTTP {}", status.as_u16()));
    }
    let message = format!("the receiver answered HTTP {status}: {text}");
    // Only "too many requests" and "unavailable" say the request was not processed; a 500
    // or a proxy's 502/504 may come after the receiver acted on it.
    if matches!(status.as_u16(), 429 | 503) {
        Err(SendError::refused(message))
    } else {
        Err(SendError::fatal(message))
    }
}

/// An error and its causes on one line.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}
