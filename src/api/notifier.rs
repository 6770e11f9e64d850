//! `Notifier`: where Coffer tells people that something happened (a webhook, an email, a
//! heartbeat ping), and which events it tells them about. Defined once per namespace and
//! named by any number of schedules, Backups and RestoreRequests in `spec.notify`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeySelector;

/// A Notifier is one place to send notifications to, with the events it wants. Every
/// secret part (a webhook's URL, which carries its token; a signing key; an SMTP password)
/// is read from a Secret in the Notifier's namespace when a notification is sent, and never
/// written anywhere else.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "Notifier",
    namespaced,
    status = "NotifierStatus",
    derive = "PartialEq",
    shortname = "cn",
    category = "coffer",
    doc = "A Notifier is one place Coffer sends notifications to (a webhook, Slack or Teams, an email, a heartbeat ping) and the events it wants. Schedules, Backups and RestoreRequests name it in spec.notify.",
    printcolumn(name = "Events", type_ = "string", json_path = ".spec.events"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.webhook) ? 1 : 0) + (has(self.email) ? 1 : 0) + (has(self.heartbeat) ? 1 : 0) == 1")
        .message("a Notifier has exactly one of webhook, email or heartbeat: make one Notifier per place to notify")
)]
pub struct NotifierSpec {
    /// An HTTP POST of a JSON document to a URL: Coffer's own documented schema, or a
    /// message in the format of Slack's (also Mattermost's, Rocket.Chat's, Discord's
    /// `/slack`) or Microsoft Teams' incoming webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSink>,
    /// An email over SMTP, in plain text a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSink>,
    /// Pings in the style of healthchecks.io for every run: `<url>/start` when its worker
    /// starts, `<url>` when it succeeds, `<url>/fail` when it fails. A dead-man's switch on
    /// the other side notices runs that never happen. `events` does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatSink>,
    /// The events to notify about. Default: `failed`, `recovered`, `stale`,
    /// `restoreFailed`, `preflightFailed`, `copyFailed`, `drillFailed`.
    #[serde(default = "default_events")]
    pub events: Vec<NotifyEvent>,
    /// Notify about every failed backup, not only the first of a series of failures of the
    /// same schedule. Default: false (the next notification is the `recovered` one).
    #[serde(default)]
    pub every_failure: bool,
}

fn default_events() -> Vec<NotifyEvent> {
    vec![
        NotifyEvent::Failed,
        NotifyEvent::Recovered,
        NotifyEvent::Stale,
        NotifyEvent::RestoreFailed,
        NotifyEvent::PreflightFailed,
        NotifyEvent::CopyFailed,
        NotifyEvent::DrillFailed,
    ]
}

/// Something that happened that a Notifier may tell people about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifyEvent {
    /// A backup failed (by default only the first failure of a series; see `everyFailure`).
    Failed,
    /// A backup succeeded.
    Succeeded,
    /// A schedule's backup succeeded after one or more failed.
    Recovered,
    /// No backup of a schedule succeeded within its `freshness.maxAge`.
    Stale,
    /// A RestoreRequest succeeded.
    RestoreSucceeded,
    /// A RestoreRequest failed.
    RestoreFailed,
    /// A schedule's pre-flight check found its source or storage unusable.
    PreflightFailed,
    /// A copy of a backup to one of its schedule's copy stores failed (once per copy of a
    /// Backup; its retries are not told again) or was given up.
    CopyFailed,
    /// A restore drill of a backup (a schedule's `spec.drill`) found that it does not
    /// restore as recorded (`VerificationFailed`) or could not run (`DrillNotRun`); once
    /// per drill.
    DrillFailed,
}

impl NotifyEvent {
    /// The name used in specs, delivery ids and webhook documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Succeeded => "succeeded",
            Self::Recovered => "recovered",
            Self::Stale => "stale",
            Self::RestoreSucceeded => "restoreSucceeded",
            Self::RestoreFailed => "restoreFailed",
            Self::PreflightFailed => "preflightFailed",
            Self::CopyFailed => "copyFailed",
            Self::DrillFailed => "drillFailed",
        }
    }
}

/// An HTTP endpoint that takes a JSON POST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSink {
    /// The key of a Secret holding the URL (`https://…`; `http://` only for a receiver in
    /// the cluster). The URL is a secret: incoming-webhook URLs carry their token.
    pub url_secret_ref: SecretKeySelector,
    /// The document sent: `json` (Coffer's schema, `coffer.dev/notification/v1`, in the
    /// README), `slack` or `teams`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// The key of a Secret holding an HMAC key: each request then carries
    /// `Coffer-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeySelector>,
}

/// The document a webhook receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Coffer's JSON document (`coffer.dev/notification/v1`).
    #[default]
    Json,
    /// `{"text": …}` for Slack-compatible incoming webhooks.
    Slack,
    /// A message card for Microsoft Teams incoming webhooks.
    Teams,
}

/// An SMTP server and the people to write to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.tls != 'none' || !has(self.passwordSecretRef)")
        .message("tls: none would send the SMTP password in clear text: use starttls or tls")
)]
pub struct EmailSink {
    /// Host name of the SMTP server, for example `smtp.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub server: String,
    /// Port. Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// `starttls` (the default: upgrade the connection, refusing a server that cannot),
    /// `tls` (TLS from the first byte), or `none` (a relay in the cluster; no password).
    #[serde(default)]
    pub tls: EmailTls,
    /// The key of a Secret holding a PEM certificate authority to trust besides the
    /// system's (a relay with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,
    /// The key of a Secret holding the user name, when the server wants authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_secret_ref: Option<SecretKeySelector>,
    /// The key of a Secret holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// The sender, for example `Coffer <backups@example.com>`.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,
    /// The recipients.
    #[schemars(length(min = 1, max = 50))]
    pub to: Vec<String>,
}

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS; a server that cannot is refused.
    #[default]
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// No TLS, for a relay inside the cluster. No password is sent.
    None,
}

/// A heartbeat URL in the style of healthchecks.io.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatSink {
    /// The key of a Secret holding the ping URL (for example
    /// `https://hc-ping.com/<uuid>`); `/start` and `/fail` are appended to it.
    pub url_secret_ref: SecretKeySelector,
}

/// The observed state of a Notifier: its test notifications (annotate it with
/// `coffer.dev/test-notification=<anything new>` to send one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifierStatus {
    /// `Notified` says whether the newest test notification was delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// The test notifications, newest last (the newest 10 are kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Delivery>,
}

/// A Notifier named by a schedule, Backup or RestoreRequest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifierReference {
    /// Name of the Notifier, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One notification, recorded in the status of the object it is about before it is sent,
/// so that it is sent at most once, even when the operator restarts or another replica
/// takes over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// What the notification is about, unique per object: `<event>` (or `start`,
    /// `succeeded`, `failed` for heartbeats) and the Notifier's name.
    pub id: String,
    /// The Notifier it goes to.
    pub notifier: String,
    /// The event (`failed`, `recovered`, `start`, …).
    pub event: String,
    /// `Pending` (not sent yet, or to be tried again), `Sending` (claimed: being sent
    /// now), `Sent`, `Failed` (not delivered; `message` says why), `Unknown` (the operator
    /// stopped while sending it: never sent again, so that nobody gets it twice).
    pub state: DeliveryState,
    /// Attempts made.
    #[serde(default)]
    pub attempts: i32,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// The sink's answer, or why it was not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a notification is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeliveryState {
    Pending,
    Sending,
    Sent,
    Failed,
    Unknown,
}
