//! The S3 server lists open multipart uploads (ListMultipartUploads, which s3s-fs lacks), by
//! bucket and prefix, page by page, and forgets them once completed or aborted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use coffer_testenv::S3Server;

fn client(server: &S3Server) -> Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let credentials =
        Credentials::new(server.access_key(), server.secret_key(), None, None, "test");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(server.endpoint())
        .region(Region::new(server.region()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}

/// (key, upload id) of the open uploads in `bucket` below `prefix`, one request.
async fn listed(s3: &Client, bucket: &str, prefix: Option<&str>) -> Vec<(String, String)> {
    let page = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .set_prefix(prefix.map(str::to_owned))
        .send()
        .await
        .unwrap();
    assert_eq!(page.is_truncated(), Some(false));
    page.uploads()
        .iter()
        .map(|u| {
            assert!(u.initiated().is_some(), "{u:?}");
            (
                u.key().unwrap().to_owned(),
                u.upload_id().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn start(s3: &Client, bucket: &str, key: &str) -> String {
    s3.create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_multipart_uploads_are_listed_by_prefix_until_aborted_or_completed() {
    let server = S3Server::start().unwrap();
    let s3 = client(&server);
    for bucket in ["backups", "other"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let redis = start(&s3, "backups", "shop/redis/20260101T000000Z/dump.rdb.gz").await;
    let pg = start(&s3, "backups", "shop/postgres/20260101T000000Z/db.sql.gz").await;
    // Another bucket's upload is not listed in this one.
    let elsewhere = start(&s3, "other", "shop/redis/x").await;
    assert_eq!(server.open_multipart_uploads(), 3);

    let both = listed(&s3, "backups", None).await;
    assert_eq!(
        both,
        [
            (
                "shop/postgres/20260101T000000Z/db.sql.gz".to_owned(),
                pg.clone()
            ),
            (
                "shop/redis/20260101T000000Z/dump.rdb.gz".to_owned(),
                redis.clone()
            ),
        ]
    );
    let below = listed(&s3, "backups", Some("shop/redis/")).await;
    assert_eq!(
        below,
        [(
            "shop/redis/20260101T000000Z/dump.rdb.gz".to_owned(),
            redis.clone()
        )]
    );
    assert!(listed(&s3, "backups", Some("nope/")).await.is_empty());

    // Pages of one, as Coffer's loop reads them: by key-marker and upload-id-marker.
    let first = s3
        .list_multipart_uploads()
        .bucket("backups")
        .max_uploads(1)
        .send()
        .await
        .unwrap();
    assert_eq!(first.is_truncated(), Some(true));
    assert_eq!(first.uploads().len(), 1);
    assert_eq!(first.uploads()[0].upload_id(), Some(pg.as_str()));
    let second = s3
        .list_multipart_uploads()
        .bucket("backups")
        .max_uploads(1)
        .set_key_marker(first.next_key_marker().map(str::to_owned))
        .set_upload_id_marker(first.next_upload_id_marker().map(str::to_owned))
        .send()
        .await
        .unwrap();
    assert_eq!(second.is_truncated(), Some(false));
    assert_eq!(second.uploads().len(), 1);
    assert_eq!(second.uploads()[0].upload_id(), Some(redis.as_str()));

    // Aborted: gone from the listing and from the server's files.
    s3.abort_multipart_upload()
        .bucket("backups")
        .key("shop/redis/20260101T000000Z/dump.rdb.gz")
        .upload_id(&redis)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed(&s3, "backups", None).await,
        [(
            "shop/postgres/20260101T000000Z/db.sql.gz".to_owned(),
            pg.clone()
        )]
    );
    assert!(listed(&s3, "backups", Some("shop/redis/")).await.is_empty());
    assert_eq!(server.open_multipart_uploads(), 2);

    // Completed: gone too, and the object is there.
    let part = s3
        .upload_part()
        .bucket("backups")
        .key("shop/postgres/20260101T000000Z/db.sql.gz")
        .upload_id(&pg)
        .part_number(1)
        .body(ByteStream::from_static(b"SELECT 1;"))
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket("backups")
        .key("shop/postgres/20260101T000000Z/db.sql.gz")
        .upload_id(&pg)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(listed(&s3, "backups", None).await.is_empty());
    assert_eq!(server.open_multipart_uploads(), 1);
    let body = s3
        .get_object()
        .bucket("backups")
        .key("shop/postgres/20260101T000000Z/db.sql.gz")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(&body[..], b"SELECT 1;");

    assert_eq!(
        listed(&s3, "other", None).await,
        [("shop/redis/x".to_owned(), elsewhere.clone())]
    );
    // A bucket that does not exist is an error, as in S3.
    let missing = s3
        .list_multipart_uploads()
        .bucket("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        missing.into_service_error().meta().code(),
        Some("NoSuchBucket")
    );
    // No record outlives its upload: only the open one's is left.
    let records: Vec<String> = std::fs::read_dir(server.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".coffer-upload-"))
        .collect();
    assert_eq!(records, [format!(".coffer-upload-{elsewhere}.json")]);
}
