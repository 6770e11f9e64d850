//! Email over SMTP (STARTTLS, TLS, or plain to a relay in the cluster), with lettre.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Notice, SendError, render};
use crate::api::{EmailSink, EmailTls};

/// How long the whole SMTP conversation may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// What an email sink needs besides its spec: values read from Secrets.
#[derive(Default)]
pub struct EmailSecrets {
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}

/// The port used when the spec names none.
pub fn port(sink: &EmailSink) -> u16 {
    sink.port.unwrap_or(match sink.tls {
        EmailTls::Starttls => 587,
        EmailTls::Tls => 465,
        EmailTls::None => 25,
    })
}

/// The message for `notice`.
pub fn message(sink: &EmailSink, notice: &Notice) -> Result<Message, SendError> {
    let from: Mailbox = sink.from.parse().map_err(|e| {
        SendError::fatal(format!(
            "from: {:?} is not an email address ({e}): fix the Notifier",
            sink.from
        ))
    })?;
    let mut builder = Message::builder()
        .from(from)
        .subject(render::subject(notice))
        .header(ContentType::TEXT_PLAIN);
    for to in &sink.to {
        let to: Mailbox = to.parse().map_err(|e| {
            SendError::fatal(format!(
                "to: {to:?} is not an email address ({e}): fix the Notifier"
            ))
        })?;
        builder = builder.to(to);
    }
    builder
        .body(render::email_body(notice))
        .map_err(|e| SendError::fatal(format!("cannot write the email: {e}")))
}

/// Sends `notice` to the sink's recipients.
pub async fn send(
    sink: &EmailSink,
    secrets: &EmailSecrets,
    notice: &Notice,
) -> Result<String, SendError> {
    let email = message(sink, notice)?;
    let tls = match sink.tls {
        EmailTls::None => Tls::None,
        mode => {
            let mut parameters = TlsParameters::builder(sink.server.clone());
            if let Some(pem) = &secrets.ca_pem {
                let ca = Certificate::from_pem(pem).map_err(|e| {
                    SendError::fatal(format!(
                        "the CA in caSecretRef is not a PEM certificate ({e}): fix the Secret"
                    ))
                })?;
                parameters = parameters.add_root_certificate(ca);
            }
            let parameters = parameters
                .build_rustls()
                .map_err(|e| SendError::fatal(format!("cannot set up TLS: {e}")))?;
            match mode {
                EmailTls::Tls => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            }
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&sink.server)
        .port(port(sink))
        .tls(tls)
        .timeout(Some(TIMEOUT));
    if let (Some(user), Some(password)) = (&secrets.username, &secrets.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    } else if let Some(user) = &secrets.username {
        transport = transport.credentials(Credentials::new(user.clone(), String::new()));
    }
    let transport = transport.build();
    let secret_values: Vec<&str> = [&secrets.username, &secrets.password]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    match transport.send(email).await {
        Ok(response) => Ok(format!(
            "accepted by {}:{}: {}",
            sink.server,
            port(sink),
            response.code()
        )),
        Err(e) => Err(classify(&e, &sink.server, port(sink)).scrubbed(&secret_values)),
    }
}

/// Whether a failed send may be tried again: only when the server said "try later" (4xx,
/// which means it did not take the message) or the connection was never made.
fn classify(error: &lettre::transport::smtp::Error, server: &str, port: u16) -> SendError {
    let text = chain(error);
    let message = format!("SMTP server {server}:{port}: {text}");
    if error.is_transient() || never_connected(error) {
        return SendError::refused(message);
    }
    if error.is_permanent() {
        return SendError::fatal(format!(
            "{message} (rejected: fix the Notifier or the server)"
        ));
    }
    if error.is_tls() || error.is_client() {
        return SendError::fatal(message);
    }
    SendError::fatal(format!(
        "{message}; it may have been sent, so it is not sent again"
    ))
}

/// The connection was refused: nothing was exchanged.
fn never_connected(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        next = e.source();
    }
    false
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    crate::text::one_line(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> EmailSink {
        EmailSink {
            server: "smtp.example.com".to_owned(),
            port: None,
            tls: EmailTls::Starttls,
            ca_secret_ref: None,
            username_secret_ref: None,
            password_secret_ref: None,
            from: "Coffer <backups@example.com>".to_owned(),
            to: vec![
                "oncall@example.com".to_owned(),
                "Ops <ops@example.com>".to_owned(),
            ],
        }
    }

    #[test]
    fn ports_default_by_tls_mode() {
        let mut s = sink();
        assert_eq!(port(&s), 587);
        s.tls = EmailTls::Tls;
        assert_eq!(port(&s), 465);
        s.port = Some(2525);
        assert_eq!(port(&s), 2525);
    }

    #[test]
    fn a_message_goes_to_every_recipient_with_the_notice_as_subject() {
        let notice = Notice {
            event: "failed".to_owned(),
            kind: "Backup".to_owned(),
            namespace: "shop".to_owned(),
            name: "db-1".to_owned(),
            reason: "SourceUnreachable".to_owned(),
            message: "no route".to_owned(),
            ..Notice::default()
        };
        let text = String::from_utf8(
            message(&sink(), &notice)
                .map(|m| m.formatted())
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert!(
            text.contains("To: oncall@example.com, Ops <ops@example.com>"),
            "{text}"
        );
        assert!(text.contains("Subject: [coffer] Backup shop/db-1 failed (SourceUnreachable)"));
        let bad = EmailSink {
            to: vec!["not an address".to_owned()],
            ..sink()
        };
        let e = message(&bad, &notice)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(
            e.starts_with("to: \"not an address\" is not an email address"),
            "{e}"
        );
    }
}
