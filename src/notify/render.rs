//! What each sink sends, from a [`Notice`]: pure functions, no I/O.

use serde_json::{Value, json};

use super::{Notice, SCHEMA};
use crate::api::WebhookFormat;

/// The webhook body in `format`.
pub fn webhook(
    notice: &Notice,
    format: WebhookFormat,
    sent_at: chrono::DateTime<chrono::Utc>,
) -> Value {
    match format {
        WebhookFormat::Json => {
            let mut doc = json!({
                "schema": SCHEMA,
                "sentAt": sent_at,
                "summary": notice.summary(),
            });
            if let (Value::Object(doc), Ok(Value::Object(fields))) =
                (&mut doc, serde_json::to_value(notice))
            {
                doc.extend(fields);
            }
            doc
        }
        WebhookFormat::Slack => json!({ "text": slack_text(notice) }),
        WebhookFormat::Teams => json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "summary": notice.summary(),
            "themeColor": if notice.is_bad() { "D13438" } else { "2EB886" },
            "title": title(notice),
            "text": teams_text(notice),
        }),
    }
}

fn slack_text(notice: &Notice) -> String {
    let icon = if notice.is_bad() {
        ":red_circle:"
    } else {
        ":large_green_circle:"
    };
    let mut text = format!("{icon} {}", notice.summary());
    if !notice.action.is_empty() {
        text.push_str(&format!("\n{}", notice.action));
    }
    if let Some(command) = notice.look_further().first() {
        text.push_str(&format!("\n`{command}`"));
    }
    text
}

fn teams_text(notice: &Notice) -> String {
    let mut lines = vec![notice.summary()];
    if !notice.action.is_empty() {
        lines.push(notice.action.clone());
    }
    if let Some(command) = notice.look_further().first() {
        lines.push(format!("`{command}`"));
    }
    lines.join("\n\n")
}

/// A short title: `[coffer] Backup shop/redis-1 failed`.
pub fn title(notice: &Notice) -> String {
    let summary = notice.summary();
    let head = summary.split(": ").next().unwrap_or(&summary);
    format!("[coffer] {head}")
}

/// The email's subject.
pub fn subject(notice: &Notice) -> String {
    match notice.is_bad() {
        true if !notice.reason.is_empty() => format!("{} ({})", title(notice), notice.reason),
        _ => title(notice),
    }
}

/// The email's plain-text body: what happened, why, what to do, and where to look.
pub fn email_body(notice: &Notice) -> String {
    let mut out = String::new();
    out.push_str(&notice.summary());
    out.push_str("\n\n");
    let mut facts: Vec<(&str, String)> = vec![
        ("Event", notice.event.clone()),
        ("Namespace", notice.namespace.clone()),
        (notice.kind.as_str(), notice.name.clone()),
    ];
    if let Some(schedule) = &notice.schedule {
        facts.push(("Schedule", schedule.clone()));
    }
    if let Some(kind) = &notice.source_kind {
        facts.push(("Source", kind.clone()));
    }
    if !notice.reason.is_empty() {
        facts.push(("Reason", notice.reason.clone()));
    }
    if let Some(location) = &notice.location {
        facts.push(("Location", location.clone()));
    }
    if let Some(stored) = notice.stored_bytes {
        facts.push((
            "Stored",
            crate::units::bytes(u64::try_from(stored).unwrap_or(0)),
        ));
    }
    if let Some(seconds) = notice.duration_seconds {
        facts.push(("Duration", crate::controller::status::duration(seconds)));
    }
    if let Some(t) = notice.start_time {
        facts.push(("Started", t.to_rfc3339()));
    }
    if let Some(t) = notice.completion_time {
        facts.push(("Finished", t.to_rfc3339()));
    }
    if let Some(t) = notice.last_success_time {
        facts.push(("Last good backup", t.to_rfc3339()));
    }
    for (label, value) in facts {
        out.push_str(&format!("{label}: {value}\n"));
    }
    if !notice.message.is_empty() {
        out.push_str(&format!("\nWhat happened:\n  {}\n", notice.message));
    }
    if !notice.action.is_empty() {
        out.push_str(&format!("\nWhat to do:\n  {}\n", notice.action));
    }
    out.push_str("\nTo look further:\n");
    for command in notice.look_further() {
        out.push_str(&format!("  {command}\n"));
    }
    out.push_str(&format!(
        "\nSent by Coffer (notification {}); you get one message per event.\n",
        notice.id
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            event: "failed".to_owned(),
            id: "uid-1/failed/on-call".to_owned(),
            kind: "Backup".to_owned(),
            namespace: "shop".to_owned(),
            name: "redis-1".to_owned(),
            schedule: Some("redis".to_owned()),
            source_kind: Some("redis".to_owned()),
            phase: Some("Failed".to_owned()),
            reason: "SourceUnreachable".to_owned(),
            message: "cannot connect to redis:6379".to_owned(),
            action: "check that the Redis Service answers".to_owned(),
            ..Notice::default()
        }
    }

    #[test]
    fn the_json_document_has_the_schema_the_summary_and_every_set_field() {
        let sent = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let doc = webhook(&notice(), WebhookFormat::Json, sent);
        assert_eq!(doc["schema"], SCHEMA);
        assert_eq!(doc["event"], "failed");
        assert_eq!(doc["schedule"], "redis");
        assert_eq!(doc["reason"], "SourceUnreachable");
        assert_eq!(doc["id"], "uid-1/failed/on-call");
        assert_eq!(doc["sentAt"], "2027-01-15T08:00:00Z");
        assert_eq!(
            doc["summary"],
            "Backup shop/redis-1 failed: SourceUnreachable: cannot connect to redis:6379"
        );
        assert!(
            doc.get("storedBytes").is_none(),
            "unset fields are left out"
        );
    }

    #[test]
    fn slack_and_teams_get_their_own_shapes() {
        let now = chrono::Utc::now();
        let slack = webhook(&notice(), WebhookFormat::Slack, now);
        let text = slack["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(":red_circle: Backup shop/redis-1 failed"),
            "{text}"
        );
        assert!(text.contains("`kubectl -n shop describe backup redis-1`"));
        let teams = webhook(&notice(), WebhookFormat::Teams, now);
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(teams["title"], "[coffer] Backup shop/redis-1 failed");
    }

    #[test]
    fn an_email_says_what_failed_why_what_to_do_and_where_to_look() {
        let n = notice();
        assert_eq!(
            subject(&n),
            "[coffer] Backup shop/redis-1 failed (SourceUnreachable)"
        );
        let body = email_body(&n);
        assert!(body.contains("What happened:\n  cannot connect to redis:6379"));
        assert!(body.contains("What to do:\n  check that the Redis Service answers"));
        assert!(body.contains("kubectl -n shop describe backup redis-1"));
        assert!(body.contains("Schedule: redis\n"));
    }
}
