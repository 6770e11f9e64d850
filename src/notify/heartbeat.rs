//! Heartbeat pings in the style of healthchecks.io: `<url>/start` when a run starts,
//! `<url>` when it succeeds, `<url>/fail` when it fails.

use super::{Notice, SendError, http};

/// The URL to ping for `event` (`start`, `succeeded`, `failed`, `test`), or `None` for events that
/// heartbeats do not report.
pub fn ping_url(base: &str, event: &str) -> Option<String> {
    let base = base.trim().trim_end_matches('/');
    let (path, query) = match base.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (base, None),
    };
    let path = match event {
        "start" => format!("{path}/start"),
        // A test is a success ping: it shows the check is wired up.
        "succeeded" | "recovered" | "test" => path.to_owned(),
        "failed" => format!("{path}/fail"),
        _ => return None,
    };
    Some(match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    })
}

/// Pings for `notice`; the body is its summary line (healthchecks.io shows it).
pub async fn send(base: &str, notice: &Notice) -> Result<String, SendError> {
    let Some(url) = ping_url(base, &notice.event) else {
        return Ok("nothing to ping for this event".to_owned());
    };
    let headers = [(super::webhook::DELIVERY_HEADER, notice.id.clone())];
    http::post(
        &url,
        &headers,
        "text/plain; charset=utf-8",
        notice.summary().into_bytes(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_success_and_failure_have_their_own_urls() {
        let base = "https://hc-ping.com/0f2c/";
        assert_eq!(
            ping_url(base, "start").as_deref(),
            Some("https://hc-ping.com/0f2c/start")
        );
        assert_eq!(
            ping_url(base, "succeeded").as_deref(),
            Some("https://hc-ping.com/0f2c")
        );
        assert_eq!(
            ping_url(base, "recovered").as_deref(),
            Some("https://hc-ping.com/0f2c")
        );
        assert_eq!(
            ping_url(base, "failed").as_deref(),
            Some("https://hc-ping.com/0f2c/fail")
        );
        assert_eq!(
            ping_url("http://h/ping/abc?create=1", "failed").as_deref(),
            Some("http://h/ping/abc/fail?create=1")
        );
        assert_eq!(ping_url(base, "stale"), None);
    }
}
