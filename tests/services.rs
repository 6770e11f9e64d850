//! Smoke tests of the real services the test suite runs on: each is started on a free
//! loopback port, answers its own protocol, and refuses a wrong password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::primitives::ByteStream;
use coffer_testenv::{PostgresServer, RedisServer, S3Server};

mod support;

#[tokio::test]
async fn redis_server_answers_ping() {
    let server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn redis_server_with_a_password_refuses_strangers() {
    let server = RedisServer::start_with_password("s3cret-pass").unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");

    let anonymous = format!("redis://127.0.0.1:{}/0", server.port());
    let client = redis::Client::open(anonymous).unwrap();
    let refused = match client.get_multiplexed_async_connection().await {
        Err(_) => true,
        Ok(mut con) => redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a connection without the password must not be served"
    );
}

#[tokio::test]
async fn postgres_answers_select_1() {
    let server = PostgresServer::start().unwrap();
    let (client, connection) =
        tokio_postgres::connect(&server.connection_string("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        version.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{version}"
    );
    assert!(server.bin_dir().join("pg_dump").exists());

    let wrong = server
        .connection_string("postgres")
        .replace(server.password(), "wrong-password");
    let err = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password must be refused");
    let code = err.as_db_error().map(|e| e.code().clone());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err:?}"
    );
}

#[tokio::test]
async fn s3_server_puts_lists_and_gets_objects() {
    let server = S3Server::start().unwrap();
    let client = support::s3_client(&server);
    client.create_bucket().bucket("smoke").send().await.unwrap();
    let body = b"hello \x00 coffer".to_vec();
    client
        .put_object()
        .bucket("smoke")
        .key("prod/shop/manifest.json")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();

    let listed = client
        .list_objects_v2()
        .bucket("smoke")
        .prefix("prod/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["prod/shop/manifest.json"]);

    let got = client
        .get_object()
        .bucket("smoke")
        .key("prod/shop/manifest.json")
        .send()
        .await
        .unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(bytes.as_ref(), body.as_slice());
    // The object really is on disk under the server's root.
    assert!(server.root().join("smoke").is_dir());
}

#[tokio::test]
async fn s3_server_refuses_a_wrong_secret() {
    let server = S3Server::start().unwrap();
    let client = support::s3_client(&server);
    let wrong = client
        .config()
        .to_builder()
        .credentials_provider(Credentials::new(
            server.access_key(),
            "not-the-secret",
            None,
            None,
            "t",
        ))
        .build();
    let err = aws_sdk_s3::Client::from_conf(wrong)
        .list_buckets()
        .send()
        .await
        .unwrap_err();
    let text = format!("{:?}", err.into_service_error());
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
}
