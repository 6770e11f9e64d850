//! Webhooks: Coffer's JSON document, or Slack's or Teams' message, POSTed to a URL, signed
//! with HMAC-SHA256 when a key is given.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Notice, SendError, http, render};
use crate::api::WebhookFormat;

/// The header that carries the signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "coffer-signature";
/// The header that carries the delivery's id (the same on every retry).
pub const DELIVERY_HEADER: &str = "coffer-delivery";
/// The header that carries the event.
pub const EVENT_HEADER: &str = "coffer-event";

/// `sha256=<hex HMAC-SHA256 of body with key>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `notice` to `url`.
pub async fn send(
    url: &str,
    format: WebhookFormat,
    signing_key: Option<&[u8]>,
    notice: &Notice,
) -> Result<String, SendError> {
    let doc = render::webhook(notice, format, chrono::Utc::now());
    let body = serde_json::to_vec(&doc)
        .map_err(|e| SendError::fatal(format!("cannot write the document: {e}")))?;
    let mut headers = vec![
        (DELIVERY_HEADER, notice.id.clone()),
        (EVENT_HEADER, notice.event.clone()),
    ];
    if let Some(key) = signing_key {
        headers.push((SIGNATURE_HEADER, signature(key, &body)));
    }
    http::post(url, &headers, "application/json", body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
