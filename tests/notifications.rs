//! Notifications end to end: the operator (as the chart's RBAC identity) against a real
//! SMTP server (aiosmtpd, STARTTLS and AUTH) and real HTTP receivers, with Backups that
//! really fail and succeed. Each notification is sent once, retried only when the sink
//! certainly did not take it, never twice across operator kills, and never carries a secret
//! into status, Events, Job specs or logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer::api::{Backup, Delivery, DeliveryState, Notifier};
use coffer_testenv::{RedisServer, SmtpServer};
use kube::api::Api;
use serde_json::{Value, json};

use support::operator::{Operator, admin, eventually, free_port};
use support::resources::{
    create, events_of, finished_backup, jobs, redis_source, secret, setup, storage, times_said,
};

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// How a receiver answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Ok,
    Status(u16),
    /// Takes the request and never answers.
    Hang,
}

/// A real HTTP server on 127.0.0.1 that records every request.
struct Receiver {
    address: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(answer));
        let (g, a) = (got.clone(), answer.clone());
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (got, answer) = (g.clone(), a.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                got.lock().unwrap().push(Received {
                    path: parts.uri.path().to_owned(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect(),
                    body: body.to_vec(),
                });
                let mode = *answer.lock().unwrap();
                match mode {
                    Answer::Ok => (axum::http::StatusCode::OK, "ok".to_owned()),
                    // Like many receivers, it quotes the URL it was called at.
                    Answer::Status(code) => (
                        axum::http::StatusCode::from_u16(code).unwrap(),
                        format!("busy, try later: POST {}", parts.uri.path()),
                    ),
                    Answer::Hang => std::future::pending().await,
                }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            got,
            answer,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn got(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn notifier(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

/// A Backup that looks like a run of `schedule`, telling `notify`.
fn run(name: &str, schedule: &str, source: &Value, storage: &Value, notify: &[&str]) -> Value {
    let notify: Vec<Value> = notify.iter().map(|n| json!({"name": n})).collect();
    json!({"metadata": {"name": name, "labels": {"coffer.dev/schedule": schedule}},
        "spec": {"scheduleRef": {"name": schedule}, "source": source, "storage": storage, "notify": notify}})
}

/// A Redis source nothing listens on: its backups fail (SourceUnreachable).
fn dead_source() -> Value {
    json!({"redis": {"host": "127.0.0.1", "port": free_port()}})
}

/// Waits until every delivery of the Backup is settled (none Pending or Sending), and
/// returns them.
async fn settled(ns: &str, name: &str) -> Vec<Delivery> {
    let api: Api<Backup> = Api::namespaced(admin().await, ns);
    eventually(
        Duration::from_secs(90),
        &format!("the notifications of Backup {name} to settle"),
        || async {
            let b = api.get_opt(name).await.unwrap()?;
            let status = b.status?;
            let done = matches!(
                status.phase?,
                coffer::api::BackupPhase::Succeeded | coffer::api::BackupPhase::Failed
            );
            let settled = status
                .notifications
                .iter()
                .all(|d| !matches!(d.state, DeliveryState::Pending | DeliveryState::Sending));
            (done && settled).then_some(status.notifications)
        },
    )
    .await
}

fn states(deliveries: &[Delivery]) -> BTreeMap<String, DeliveryState> {
    deliveries.iter().map(|d| (d.id.clone(), d.state)).collect()
}

fn condition(backup: &Backup, type_: &str) -> (String, String, String) {
    let c = backup
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition: {backup:?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn failures_recoveries_and_heartbeats_reach_every_sink_once_without_secrets() {
    let (_namespace, ns, s3) = setup("notify").await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    secret(&ns, "redis-auth", &[("password", "redis-pw")]).await;
    let hooks = Receiver::start(0, Answer::Ok).await;
    let smtp_user = "coffer-mailer";
    let smtp_password = support::distinctive_secret("smtp-pw");
    let smtp = SmtpServer::start(smtp_user, &smtp_password).unwrap();
    let hook_token = support::distinctive_secret("hooktoken");
    let signing_key = support::distinctive_secret("signing");
    let ping_token = support::distinctive_secret("pinguuid");
    let hook_path = format!("/hooks/T01/{hook_token}");
    let slack_path = format!("/services/T01/B01/{hook_token}");
    let ping_path = format!("/ping/{ping_token}");
    secret(
        &ns,
        "notify",
        &[
            ("hook", &hooks.url(&hook_path)),
            ("slack", &hooks.url(&slack_path)),
            ("ping", &hooks.url(&ping_path)),
            ("signing", &signing_key),
            ("smtp-user", smtp_user),
            ("smtp-password", &smtp_password),
            ("smtp-ca", smtp.ca_pem()),
        ],
    )
    .await;
    let key = |k: &str| json!({"name": "notify", "key": k});
    create::<Notifier>(
        &ns,
        notifier(
            "hook",
            json!({"webhook": {"urlSecretRef": key("hook"), "signingSecretRef": key("signing")}}),
        ),
    )
    .await;
    create::<Notifier>(
        &ns,
        notifier(
            "slack",
            json!({"webhook": {"urlSecretRef": key("slack"), "format": "slack"}}),
        ),
    )
    .await;
    create::<Notifier>(
        &ns,
        notifier(
            "on-call",
            json!({"email": {"server": "127.0.0.1", "port": smtp.port(), "tls": "starttls",
                "caSecretRef": key("smtp-ca"), "usernameSecretRef": key("smtp-user"),
                "passwordSecretRef": key("smtp-password"),
                "from": "Coffer <coffer@example.com>", "to": ["oncall@example.com", "dba@example.com"]}}),
        ),
    )
    .await;
    create::<Notifier>(
        &ns,
        notifier("beat", json!({"heartbeat": {"urlSecretRef": key("ping")}})),
    )
    .await;
    let mut operator = Operator::start(&ns, "solo");
    let storage = storage(&s3);
    let all = ["hook", "slack", "on-call", "beat"];

    // The first failure: one message on every sink, and the heartbeat's start and fail.
    create::<Backup>(&ns, run("shop-1", "shop", &dead_source(), &storage, &all)).await;
    let first = finished_backup(&ns, "shop-1").await;
    assert_eq!(condition(&first, "Ready").1, "SourceUnreachable");
    let deliveries = settled(&ns, "shop-1").await;
    assert_eq!(
        states(&deliveries),
        BTreeMap::from([
            ("failed/hook".to_owned(), DeliveryState::Sent),
            ("failed/slack".to_owned(), DeliveryState::Sent),
            ("failed/on-call".to_owned(), DeliveryState::Sent),
            ("failed/beat".to_owned(), DeliveryState::Sent),
            ("start/beat".to_owned(), DeliveryState::Sent),
        ]),
        "{deliveries:?}"
    );
    let first = Api::<Backup>::namespaced(admin().await, &ns)
        .get("shop-1")
        .await
        .unwrap();
    assert_eq!(condition(&first, "Notified").0, "True");

    let hook = hooks.got(&hook_path);
    assert_eq!(hook.len(), 1, "one webhook for the failure: {hook:?}");
    let doc = hook[0].json();
    assert_eq!(doc["schema"], "coffer.dev/notification/v1");
    assert_eq!(doc["event"], "failed");
    assert_eq!(doc["namespace"], ns.as_str());
    assert_eq!(doc["schedule"], "shop");
    assert_eq!(doc["backup"], "shop-1");
    assert_eq!(doc["phase"], "Failed");
    assert_eq!(doc["reason"], "SourceUnreachable");
    assert_eq!(doc["sourceKind"], "redis");
    assert!(
        doc["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{doc}"
    );
    assert!(
        doc["startTime"].is_string() && doc["completionTime"].is_string(),
        "{doc}"
    );
    assert!(
        doc["summary"].as_str().is_some_and(
            |s| s.starts_with(&format!("Backup {ns}/shop-1 failed: SourceUnreachable: "))
        ),
        "{doc}"
    );
    // The signature is the HMAC-SHA256 of the body with the signing key.
    let signature = hook[0].header("coffer-signature");
    assert_eq!(
        signature,
        coffer::notify::webhook::signature(signing_key.as_bytes(), &hook[0].body),
        "the receiver can verify the signature"
    );
    assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
    let delivery_id = hook[0].header("coffer-delivery").to_owned();
    assert!(delivery_id.ends_with("/failed/hook"), "{delivery_id}");

    let slack = hooks.got(&slack_path);
    assert_eq!(slack.len(), 1, "{slack:?}");
    let text = slack[0].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains(&format!("Backup {ns}/shop-1 failed")),
        "{text}"
    );
    assert!(
        slack[0].header("coffer-signature").is_empty(),
        "no key, no signature"
    );

    let mail = smtp.messages();
    assert_eq!(mail.len(), 1, "one email for the failure: {mail:?}");
    assert!(
        mail[0].starts_with("X-Envelope-To: oncall@example.com, dba@example.com"),
        "{}",
        mail[0]
    );
    assert!(
        mail[0].contains(&format!(
            "Subject: [coffer] Backup {ns}/shop-1 failed (SourceUnreachable)"
        )),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains("What happened:"), "{}", mail[0]);
    assert!(mail[0].contains("What to do:"), "{}", mail[0]);
    assert!(
        mail[0].contains(&format!("kubectl -n {ns} describe backup shop-1")),
        "{}",
        mail[0]
    );

    let pings: Vec<String> = hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.starts_with(&ping_path))
        .map(|r| r.path.trim_start_matches(&ping_path).to_owned())
        .collect();
    assert_eq!(
        pings,
        ["/start", "/fail"],
        "the heartbeat saw start, then fail"
    );

    // The second failure in a row: only the heartbeat hears of it.
    create::<Backup>(&ns, run("shop-2", "shop", &dead_source(), &storage, &all)).await;
    finished_backup(&ns, "shop-2").await;
    let deliveries = settled(&ns, "shop-2").await;
    assert_eq!(
        states(&deliveries),
        BTreeMap::from([
            ("failed/beat".to_owned(), DeliveryState::Sent),
            ("start/beat".to_owned(), DeliveryState::Sent),
        ]),
        "a repeated failure is not notified again: {deliveries:?}"
    );
    assert_eq!(hooks.got(&hook_path).len(), 1);
    assert_eq!(hooks.got(&slack_path).len(), 1);
    assert_eq!(smtp.messages().len(), 1);

    // The next success: one `recovered` on every sink, and the heartbeat's plain ping.
    create::<Backup>(
        &ns,
        run(
            "shop-3",
            "shop",
            &redis_source(&redis, "redis-auth"),
            &storage,
            &all,
        ),
    )
    .await;
    let third = finished_backup(&ns, "shop-3").await;
    assert_eq!(condition(&third, "Ready").0, "True", "{third:?}");
    settled(&ns, "shop-3").await;
    let hook = hooks.got(&hook_path);
    assert_eq!(hook.len(), 2, "{hook:?}");
    assert_eq!(hook[1].json()["event"], "recovered");
    assert_eq!(hook[1].json()["phase"], "Succeeded");
    assert!(
        hook[1].json()["storedBytes"]
            .as_i64()
            .is_some_and(|b| b > 0)
    );
    assert_eq!(hooks.got(&slack_path).len(), 2);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 2, "{mail:?}");
    assert!(
        mail[1].contains(&format!(
            "Subject: [coffer] Backup {ns}/shop-3 succeeded again after failures"
        )),
        "{}",
        mail[1]
    );
    assert_eq!(hooks.got(&format!("{ping_path}/start")).len(), 3);
    assert_eq!(hooks.got(&ping_path).len(), 1, "one success ping");

    // A success after a success: nothing but the heartbeat (successes are off by default).
    create::<Backup>(
        &ns,
        run(
            "shop-4",
            "shop",
            &redis_source(&redis, "redis-auth"),
            &storage,
            &all,
        ),
    )
    .await;
    finished_backup(&ns, "shop-4").await;
    settled(&ns, "shop-4").await;
    assert_eq!(hooks.got(&hook_path).len(), 2);
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(hooks.got(&ping_path).len(), 2);

    // A test notification, once per annotation value.
    let notifiers: Api<Notifier> = Api::namespaced(admin().await, &ns);
    let annotate = |value: &'static str| {
        let notifiers = notifiers.clone();
        async move {
            notifiers
                .patch(
                    "hook",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"coffer.dev/test-notification": value}}})),
                )
                .await
                .unwrap();
        }
    };
    annotate("first").await;
    let got = eventually(Duration::from_secs(60), "the test notification", || async {
        let got = hooks.got(&hook_path);
        (got.len() == 3).then_some(got)
    })
    .await;
    assert_eq!(got[2].json()["event"], "test");
    assert_eq!(got[2].json()["kind"], "Notifier");
    annotate("second").await;
    eventually(
        Duration::from_secs(60),
        "the second test notification",
        || async { (hooks.got(&hook_path).len() == 4).then_some(()) },
    )
    .await;
    let status = notifiers
        .get("hook")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert_eq!(
        states(&status.notifications),
        BTreeMap::from([
            ("test-first".to_owned(), DeliveryState::Sent),
            ("test-second".to_owned(), DeliveryState::Sent),
        ])
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hooks.got(&hook_path).len(), 4, "each value sends once");

    // No secret anywhere the operator writes: statuses, Events, Job specs, its log.
    operator.kill();
    let secrets = [
        hook_token.as_str(),
        signing_key.as_str(),
        ping_token.as_str(),
        smtp_password.as_str(),
    ];
    let mut written = String::new();
    for name in ["shop-1", "shop-2", "shop-3", "shop-4"] {
        let b = Api::<Backup>::namespaced(admin().await, &ns)
            .get(name)
            .await
            .unwrap();
        written.push_str(&serde_json::to_string(&b).unwrap());
        written.push_str(&format!("{:?}", events_of(&ns, name).await));
    }
    for job in jobs(&ns).await {
        written.push_str(&serde_json::to_string(&job.spec).unwrap());
    }
    written.push_str(&operator.log());
    for secret in secrets {
        assert!(!written.contains(secret), "a secret leaked: {secret}");
    }
    assert!(written.contains("failed/hook"), "the record was read");
}

#[tokio::test]
async fn a_sink_that_refuses_is_retried_then_marked_failed_and_the_backup_stays_good() {
    let (_namespace, ns, s3) = setup("notify-down").await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    secret(&ns, "redis-auth", &[("password", "redis-pw")]).await;
    let hooks = Receiver::start(0, Answer::Status(503)).await;
    let token = support::distinctive_secret("busytoken");
    let busy = format!("/busy/{token}");
    secret(&ns, "notify", &[("hook", &hooks.url(&busy))]).await;
    create::<Notifier>(
        &ns,
        notifier(
            "audit",
            json!({"webhook": {"urlSecretRef": {"name": "notify", "key": "hook"}},
                "events": ["succeeded", "failed"]}),
        ),
    )
    .await;
    let mut operator = Operator::start_with(
        &ns,
        "solo",
        &["--notify-attempts", "3", "--notify-backoff", "1"],
    );
    create::<Backup>(
        &ns,
        run(
            "audit-1",
            "audit",
            &redis_source(&redis, "redis-auth"),
            &storage(&s3),
            &["audit", "missing"],
        ),
    )
    .await;
    let deliveries = settled(&ns, "audit-1").await;
    assert_eq!(
        states(&deliveries),
        BTreeMap::from([
            ("succeeded/audit".to_owned(), DeliveryState::Failed),
            ("succeeded/missing".to_owned(), DeliveryState::Failed),
        ]),
        "{deliveries:?}"
    );
    let audit = deliveries.iter().find(|d| d.notifier == "audit").unwrap();
    assert_eq!(audit.attempts, 3, "{audit:?}");
    assert!(
        audit
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("HTTP 503"),
        "{audit:?}"
    );
    let got = hooks.got(&busy);
    assert_eq!(got.len(), 3, "three attempts: {got:?}");
    let ids: Vec<&str> = got.iter().map(|r| r.header("coffer-delivery")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one delivery id on every attempt: {ids:?}"
    );

    let backup = Api::<Backup>::namespaced(admin().await, &ns)
        .get("audit-1")
        .await
        .unwrap();
    // The backup itself is unaffected: it succeeded.
    assert_eq!(condition(&backup, "Ready").0, "True");
    let (ok, reason, message) = condition(&backup, "Notified");
    assert_eq!(
        (ok.as_str(), reason.as_str()),
        ("False", "NotificationFailed")
    );
    assert!(
        message.contains("Notifier audit") && message.contains("HTTP 503"),
        "{message}"
    );
    assert!(
        message.contains("Notifier missing does not exist: create it, or fix spec.notify"),
        "{message}"
    );
    assert!(times_said(&ns, "audit-1", "NotificationFailed").await >= 2);
    assert!(times_said(&ns, "audit-1", "NotificationRetrying").await >= 1);
    // The receiver's answer quoted the URL, token and all; nothing the operator wrote does.
    operator.kill();
    let written = format!(
        "{}{:?}{}",
        serde_json::to_string(&backup).unwrap(),
        events_of(&ns, "audit-1").await,
        operator.log()
    );
    assert!(written.contains("busy, try later: POST /***"), "{message}");
    assert!(!written.contains(&token), "the URL's token leaked");
}

#[tokio::test]
async fn a_notification_is_sent_at_most_once_when_the_operator_is_killed() {
    let (_namespace, ns, s3) = setup("notify-kill").await;
    let storage = storage(&s3);
    // Nothing listens at first: the delivery is refused and waits for its next attempt.
    let port = free_port();
    secret(
        &ns,
        "notify",
        &[("hook", &format!("http://127.0.0.1:{port}/hook"))],
    )
    .await;
    create::<Notifier>(
        &ns,
        notifier(
            "hook",
            json!({"webhook": {"urlSecretRef": {"name": "notify", "key": "hook"}}}),
        ),
    )
    .await;
    let args = ["--notify-attempts", "10", "--notify-backoff", "3"];
    let mut operator = Operator::start_with(&ns, "first", &args);
    create::<Backup>(
        &ns,
        run("kill-1", "kill-a", &dead_source(), &storage, &["hook"]),
    )
    .await;
    let api: Api<Backup> = Api::namespaced(admin().await, &ns);
    eventually(Duration::from_secs(90), "a refused attempt", || async {
        let b = api.get("kill-1").await.unwrap();
        let d = b.status?.notifications.into_iter().next()?;
        (d.state == DeliveryState::Pending && d.attempts >= 1).then_some(())
    })
    .await;
    // Killed between the transition (recorded) and a send that happened.
    operator.kill();
    let hooks = Receiver::start(port, Answer::Ok).await;
    let _second = Operator::start_with(&ns, "second", &args);
    let deliveries = settled(&ns, "kill-1").await;
    assert_eq!(deliveries[0].state, DeliveryState::Sent, "{deliveries:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hooks.got("/hook").len(), 1, "exactly one notification");
    drop(_second);

    // Killed while sending: the receiver took the request and never answered.
    hooks.answer(Answer::Hang);
    let mut third = Operator::start_with(&ns, "third", &args);
    create::<Backup>(
        &ns,
        run("kill-2", "kill-b", &dead_source(), &storage, &["hook"]),
    )
    .await;
    eventually(
        Duration::from_secs(90),
        "the delivery being sent",
        || async {
            let d = api
                .get("kill-2")
                .await
                .unwrap()
                .status?
                .notifications
                .into_iter()
                .next()?;
            (d.state == DeliveryState::Sending && hooks.got("/hook").len() == 2).then_some(())
        },
    )
    .await;
    third.kill();
    hooks.answer(Answer::Ok);
    let _fourth = Operator::start_with(&ns, "fourth", &args);
    let deliveries = settled(&ns, "kill-2").await;
    assert_eq!(
        deliveries[0].state,
        DeliveryState::Unknown,
        "a send that may have happened is never repeated: {deliveries:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        hooks.got("/hook").len(),
        2,
        "no second request after the restart"
    );
    let backup = api.get("kill-2").await.unwrap();
    assert_eq!(condition(&backup, "Notified").1, "NotificationUnknown");
    assert!(times_said(&ns, "kill-2", "NotificationUnknown").await >= 1);
}

#[tokio::test]
async fn a_run_whose_start_was_never_recorded_is_recorded_and_told_once() {
    let (_namespace, ns, s3) = setup("notify-adopt").await;
    let hooks = Receiver::start(0, Answer::Ok).await;
    secret(&ns, "notify", &[("ping", &hooks.url("/ping/adopt"))]).await;
    let beat = json!({"heartbeat": {"urlSecretRef": {"name": "notify", "key": "ping"}}});
    create::<Notifier>(&ns, notifier("beat", beat)).await;
    create::<Backup>(
        &ns,
        run("adopt-1", "adopt", &dead_source(), &storage(&s3), &["beat"]),
    )
    .await;
    let api: Api<Backup> = Api::namespaced(admin().await, &ns);
    let uid = api.get("adopt-1").await.unwrap().metadata.uid.unwrap();
    // As an operator leaves it that stopped between creating the worker Job and recording
    // it (suspended, so that it stays running).
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "metadata": {"name": "adopt-1-backup", "labels": {"coffer.dev/owner-uid": uid}},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "worker", "image": "coffer:never-pulled"}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(admin().await, &ns)
        .create(&Default::default(), &job)
        .await
        .unwrap();
    let _operator = Operator::start(&ns, "solo");
    let backup = eventually(
        Duration::from_secs(60),
        "the run's start recorded and told",
        || async {
            let b = api.get("adopt-1").await.unwrap();
            let status = b.status.clone()?;
            let sent = status
                .notifications
                .iter()
                .any(|d| d.id == "start/beat" && d.state == DeliveryState::Sent);
            (sent && status.job_name.is_some()).then_some(b)
        },
    )
    .await;
    let status = backup.status.unwrap();
    assert_eq!(status.job_name.as_deref(), Some("adopt-1-backup"));
    assert_eq!(status.phase, Some(coffer::api::BackupPhase::Running));
    assert!(status.start_time.is_some(), "{status:?}");
    assert!(status.resolved.is_some(), "{status:?}");
    // Told once, and the run is never started a second time.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hooks.got("/ping/adopt/start").len(), 1);
    assert_eq!(times_said(&ns, "adopt-1", "Started").await, 1);
    let job_names: Vec<String> = jobs(&ns)
        .await
        .into_iter()
        .map(|j| kube::ResourceExt::name_any(&j))
        .collect();
    assert_eq!(job_names, ["adopt-1-backup"]);
}

#[tokio::test]
async fn a_schedule_whose_runs_keep_failing_turns_stale_and_each_is_told_once() {
    let (_namespace, ns, s3) = setup("notify-stale").await;
    let hooks = Receiver::start(0, Answer::Ok).await;
    secret(
        &ns,
        "notify",
        &[
            ("hook", &hooks.url("/stale")),
            ("pager", &hooks.url("/pager")),
            ("ping", &hooks.url("/ping")),
        ],
    )
    .await;
    let key = |k: &str| json!({"name": "notify", "key": k});
    create::<Notifier>(
        &ns,
        notifier(
            "rpo",
            json!({"webhook": {"urlSecretRef": key("hook")}, "events": ["stale"]}),
        ),
    )
    .await;
    create::<Notifier>(
        &ns,
        notifier(
            "pager",
            json!({"webhook": {"urlSecretRef": key("pager")}, "events": ["failed"]}),
        ),
    )
    .await;
    create::<Notifier>(
        &ns,
        notifier("beat", json!({"heartbeat": {"urlSecretRef": key("ping")}})),
    )
    .await;
    let _operator = Operator::start(&ns, "solo");
    // Its runs (every minute) fail, and retention deletes each failed run at once
    // (`keepFailed: 0`): stale one minute after its creation, said once while the failures
    // go on; the failure series paged once although no failed run is left to show it.
    create::<coffer::api::BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "cache"}, "spec": {
            "schedule": "* * * * *", "source": dead_source(), "storage": storage(&s3),
            "retention": {"keepLast": 3, "keepFailed": 0},
            "freshness": {"maxAge": "1m"},
            "notify": [{"name": "rpo"}, {"name": "pager"}, {"name": "beat"}]}}),
    )
    .await;
    let got = eventually(
        Duration::from_secs(150),
        "the stale notification",
        || async {
            let got = hooks.got("/stale");
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    let doc = got[0].json();
    assert_eq!(doc["event"], "stale");
    assert_eq!(doc["kind"], "BackupSchedule");
    assert_eq!(doc["name"], "cache");
    assert_eq!(doc["reason"], "Stale");
    assert!(doc["summary"].as_str().is_some_and(|s| s.starts_with(&format!("BackupSchedule {ns}/cache is stale: Stale: "))), "{doc}");
    // Still stale after more failed runs (each pinged by the heartbeat): nothing more.
    eventually(
        Duration::from_secs(150),
        "two failed runs pinged",
        || async { (hooks.got("/ping/fail").len() >= 2).then_some(()) },
    )
    .await;
    let gone = Api::<Backup>::namespaced(admin().await, &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|b| {
            b.status.as_ref().and_then(|s| s.phase) == Some(coffer::api::BackupPhase::Failed)
        })
        .count();
    assert!(gone <= 1, "retention deletes failed runs: {gone} left");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pages = hooks.got("/pager");
    assert_eq!(pages.len(), 1, "one page for the series: {pages:?}");
    assert_eq!(pages[0].json()["event"], "failed");
    assert_eq!(hooks.got("/stale").len(), 1);
    let schedule = Api::<coffer::api::BackupSchedule>::namespaced(admin().await, &ns)
        .get("cache")
        .await
        .unwrap();
    let status = schedule.status.unwrap();
    assert_eq!(status.notifications.len(), 1, "{:?}", status.notifications);
    assert_eq!(status.notifications[0].state, DeliveryState::Sent);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Notified" && c.status == "True")
    );
}

/// Waits until every delivery of the RestoreRequest is settled, and returns it.
async fn settled_restore(ns: &str, name: &str) -> coffer::api::RestoreRequest {
    let api: Api<coffer::api::RestoreRequest> = Api::namespaced(admin().await, ns);
    eventually(
        Duration::from_secs(120),
        &format!("RestoreRequest {name} to finish and its notifications to settle"),
        || async {
            let r = api.get_opt(name).await.unwrap()?;
            let status = r.status.as_ref()?;
            let done = matches!(
                status.phase?,
                coffer::api::RestorePhase::Succeeded | coffer::api::RestorePhase::Failed
            );
            let settled = status
                .notifications
                .iter()
                .all(|d| !matches!(d.state, DeliveryState::Pending | DeliveryState::Sending));
            (done && settled).then_some(r)
        },
    )
    .await
}

#[tokio::test]
async fn a_restore_notifies_its_result_once_to_its_own_or_its_backups_notifiers() {
    let (_namespace, ns, s3) = setup("notify-restore").await;
    let redis = RedisServer::start().unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "order:", "", 10).await;
    let hooks = Receiver::start(0, Answer::Ok).await;
    secret(&ns, "notify", &[("hook", &hooks.url("/ops"))]).await;
    create::<Notifier>(
        &ns,
        notifier(
            "ops",
            json!({"webhook": {"urlSecretRef": {"name": "notify", "key": "hook"}},
                "events": ["restoreSucceeded", "restoreFailed"]}),
        ),
    )
    .await;
    let _operator = Operator::start(&ns, "solo");
    let source = json!({"redis": {"host": "127.0.0.1", "port": redis.port()}});
    create::<Backup>(&ns, run("kept", "shop", &source, &storage(&s3), &["ops"])).await;
    let kept = finished_backup(&ns, "kept").await;
    assert_eq!(condition(&kept, "Ready").0, "True", "{kept:?}");
    assert!(
        settled(&ns, "kept").await.is_empty(),
        "ops does not listen for backups"
    );

    // No notify of its own: the Backup's Notifiers hear of it.
    create::<coffer::api::RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "r-ok"}, "spec": {"backupRef": {"name": "kept"}}}),
    )
    .await;
    let ok = settled_restore(&ns, "r-ok").await;
    let status = ok.status.unwrap();
    assert_eq!(status.phase, Some(coffer::api::RestorePhase::Succeeded));
    assert_eq!(
        states(&status.notifications),
        BTreeMap::from([(status.notifications[0].id.clone(), DeliveryState::Sent)]),
        "{:?}",
        status.notifications
    );
    assert!(status.notifications[0].id.starts_with("restoreSucceeded-"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Notified" && c.status == "True" && c.reason == "Sent")
    );
    let got = hooks.got("/ops");
    assert_eq!(got.len(), 1, "{got:?}");
    let doc = got[0].json();
    assert_eq!(doc["event"], "restoreSucceeded");
    assert_eq!(doc["kind"], "RestoreRequest");
    assert_eq!(doc["name"], "r-ok");
    assert_eq!(doc["backup"], "kept");
    assert_eq!(doc["phase"], "Succeeded");

    // Its own list, one of them missing; a backup that is not there: a failed restore.
    create::<coffer::api::RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "r-bad"}, "spec": {
            "from": {"storage": storage(&s3), "location": format!("{ns}/nothing-here/20260101T000000Z-00000000/")},
            "target": source,
            "notify": [{"name": "ops"}, {"name": "nobody"}]}}),
    )
    .await;
    let bad = settled_restore(&ns, "r-bad").await;
    let status = bad.status.unwrap();
    assert_eq!(status.phase, Some(coffer::api::RestorePhase::Failed));
    let by_notifier: BTreeMap<String, DeliveryState> = status
        .notifications
        .iter()
        .map(|d| (d.notifier.clone(), d.state))
        .collect();
    assert_eq!(
        by_notifier,
        BTreeMap::from([
            ("ops".to_owned(), DeliveryState::Sent),
            ("nobody".to_owned(), DeliveryState::Failed),
        ])
    );
    let notified = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Notified")
        .unwrap();
    assert_eq!(notified.reason, "NotificationFailed");
    assert!(
        notified.message.contains("Notifier nobody does not exist"),
        "{notified:?}"
    );
    let got = eventually(Duration::from_secs(30), "the failure's webhook", || async {
        let got = hooks.got("/ops");
        (got.len() == 2).then_some(got)
    })
    .await;
    let doc = got[1].json();
    assert_eq!(doc["event"], "restoreFailed");
    assert_eq!(doc["name"], "r-bad");
    assert_eq!(doc["phase"], "Failed");
    let reason = doc["reason"].as_str().unwrap().to_owned();
    assert!(!reason.is_empty(), "{doc}");
    assert!(
        doc["summary"].as_str().is_some_and(
            |s| s.starts_with(&format!("RestoreRequest {ns}/r-bad failed: {reason}: "))
        ),
        "{doc}"
    );

    // Reconciled again (a label) a while later: nothing is sent twice.
    let patch = json!({"metadata": {"labels": {"seen": "yes"}}});
    for name in ["r-ok", "r-bad"] {
        Api::<coffer::api::RestoreRequest>::namespaced(admin().await, &ns)
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hooks.got("/ops").len(), 2);
}
