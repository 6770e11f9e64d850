//! A Redis dataset with every type and encoding, and a comparable picture of a server.

use std::collections::BTreeMap;

use redis::Value;
use redis::aio::MultiplexedConnection;

pub async fn connect(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(120)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

async fn q<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, cmd: &mut redis::Cmd) -> T {
    cmd.query_async(con).await.unwrap()
}

/// Fills databases 0 and 2 with every type (string incl. binary, empty, integer and long
/// LZF-compressible values; hashes, lists, sets, sorted sets in small and large encodings;
/// a stream with consumer groups, consumers and pending entries; HyperLogLog, bitmap, geo),
/// TTLs, and a function library.
pub async fn populate(con: &mut MultiplexedConnection) {
    let c = con;
    let _: () = q(c, redis::cmd("SELECT").arg(0)).await;
    let _: () = q(c, redis::cmd("SET").arg("string").arg("hello")).await;
    let _: () = q(
        c,
        redis::cmd("SET")
            .arg(&b"bin\x00\xff\xfekey"[..])
            .arg(&b"\x00\x01\xff value \xc3\x28"[..]),
    )
    .await;
    let _: () = q(c, redis::cmd("SET").arg("empty").arg("")).await;
    let _: () = q(c, redis::cmd("SET").arg("int").arg(12345)).await;
    let _: () = q(
        c,
        redis::cmd("SET").arg("long").arg("abcdefgh".repeat(2000)),
    )
    .await;
    let _: () = q(
        c,
        redis::cmd("SET")
            .arg("ttl-string")
            .arg("v")
            .arg("PX")
            .arg(3_600_000),
    )
    .await;
    let _: () = q(
        c,
        redis::cmd("HSET")
            .arg("small-hash")
            .arg("f1")
            .arg("v1")
            .arg("f2")
            .arg(&b"\x00\xff"[..]),
    )
    .await;
    for i in 0..600 {
        let _: () = q(
            c,
            redis::cmd("HSET")
                .arg("big-hash")
                .arg(format!("field-{i}"))
                .arg(i * 7),
        )
        .await;
    }
    let _: () = q(c, redis::cmd("PEXPIRE").arg("big-hash").arg(7_200_000)).await;
    let _: () = q(
        c,
        redis::cmd("RPUSH")
            .arg("small-list")
            .arg("a")
            .arg("b")
            .arg("c"),
    )
    .await;
    for chunk in (0..10_000).collect::<Vec<u32>>().chunks(1000) {
        let _: () = q(c, redis::cmd("RPUSH").arg("big-list").arg(chunk)).await;
    }
    let _: () = q(c, redis::cmd("SADD").arg("intset").arg(1).arg(2).arg(3)).await;
    let _: () = q(
        c,
        redis::cmd("SADD")
            .arg("small-set")
            .arg("a")
            .arg("b")
            .arg("c"),
    )
    .await;
    let members: Vec<String> = (0..1000).map(|i| format!("member-{i}")).collect();
    let _: () = q(c, redis::cmd("SADD").arg("big-set").arg(&members)).await;
    let _: () = q(
        c,
        redis::cmd("ZADD")
            .arg("small-zset")
            .arg(1)
            .arg("a")
            .arg(2.5)
            .arg("b")
            .arg("-inf")
            .arg("c"),
    )
    .await;
    for (i, m) in members.iter().enumerate() {
        let _: () = q(
            c,
            redis::cmd("ZADD")
                .arg("big-zset")
                .arg(i as f64 / 3.0)
                .arg(m),
        )
        .await;
    }
    for i in 0..50 {
        let _: () = q(
            c,
            redis::cmd("XADD")
                .arg("stream")
                .arg("*")
                .arg("n")
                .arg(i)
                .arg("bin")
                .arg(&b"\x00\x01"[..]),
        )
        .await;
    }
    let _: () = q(
        c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream")
            .arg("g1")
            .arg("0"),
    )
    .await;
    let _: Value = q(
        c,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g1")
            .arg("alice")
            .arg("COUNT")
            .arg(10)
            .arg("STREAMS")
            .arg("stream")
            .arg(">"),
    )
    .await;
    let _: Value = q(
        c,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g1")
            .arg("bob")
            .arg("COUNT")
            .arg(5)
            .arg("STREAMS")
            .arg("stream")
            .arg(">"),
    )
    .await;
    let pending: Vec<Value> = q(
        c,
        redis::cmd("XPENDING")
            .arg("stream")
            .arg("g1")
            .arg("-")
            .arg("+")
            .arg(3),
    )
    .await;
    for entry in pending {
        if let Value::Array(fields) = entry
            && let Some(Value::BulkString(id)) = fields.first()
        {
            let _: i64 = q(
                c,
                redis::cmd("XACK")
                    .arg("stream")
                    .arg("g1")
                    .arg(id.as_slice()),
            )
            .await;
        }
    }
    let _: () = q(
        c,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("stream")
            .arg("g2")
            .arg("$"),
    )
    .await;
    let _: i64 = q(
        c,
        redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg("stream")
            .arg("g2")
            .arg("idle"),
    )
    .await;
    let _: i64 = q(
        c,
        redis::cmd("PFADD")
            .arg("hll")
            .arg("a")
            .arg("b")
            .arg("c")
            .arg("d"),
    )
    .await;
    let _: i64 = q(c, redis::cmd("SETBIT").arg("bitmap").arg(100_000).arg(1)).await;
    let _: i64 = q(
        c,
        redis::cmd("GEOADD")
            .arg("geo")
            .arg(13.361389)
            .arg(38.115556)
            .arg("Palermo")
            .arg(15.087269)
            .arg(37.502669)
            .arg("Catania"),
    )
    .await;
    let _: () = q(c, redis::cmd("SELECT").arg(2)).await;
    let _: () = q(c, redis::cmd("SET").arg("in-db2").arg("x")).await;
    let _: () = q(c, redis::cmd("HSET").arg("h2").arg("a").arg("b")).await;
    let _: () = q(c, redis::cmd("SELECT").arg(0)).await;
    let library = "#!lua name=coffertest\nredis.register_function('cofferecho', function(keys, args) return args[1] end)";
    let _: Value = q(
        c,
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(library),
    )
    .await;
}

/// What a key holds, in a form that compares equal when the data is the same.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyState {
    pub kind: String,
    pub content: String,
    /// When the key expires (Unix milliseconds, `PEXPIRETIME`), if it does.
    pub expire_at: Option<i64>,
}

/// Every key of every database, and the function libraries.
pub async fn state(
    con: &mut MultiplexedConnection,
) -> (BTreeMap<(u32, Vec<u8>), KeyState>, String) {
    let mut out = BTreeMap::new();
    for db in 0..16u32 {
        let _: () = q(con, redis::cmd("SELECT").arg(db)).await;
        let mut cursor = 0u64;
        let mut keys: Vec<Vec<u8>> = vec![];
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) =
                q(con, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000)).await;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for key in keys {
            let kind: String = q(con, redis::cmd("TYPE").arg(&key)).await;
            let content = match kind.as_str() {
                "string" => format!("{:?}", q::<Vec<u8>>(con, redis::cmd("GET").arg(&key)).await),
                "hash" => {
                    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                        q(con, redis::cmd("HGETALL").arg(&key)).await;
                    pairs.sort();
                    format!("{pairs:?}")
                }
                "list" => format!(
                    "{:?}",
                    q::<Vec<Vec<u8>>>(con, redis::cmd("LRANGE").arg(&key).arg(0).arg(-1)).await
                ),
                "set" => {
                    let mut members: Vec<Vec<u8>> = q(con, redis::cmd("SMEMBERS").arg(&key)).await;
                    members.sort();
                    format!("{members:?}")
                }
                "zset" => format!(
                    "{:?}",
                    q::<Vec<Vec<u8>>>(
                        con,
                        redis::cmd("ZRANGE")
                            .arg(&key)
                            .arg(0)
                            .arg(-1)
                            .arg("WITHSCORES")
                    )
                    .await
                ),
                "stream" => stream_state(con, &key).await,
                other => panic!("unexpected type {other}"),
            };
            let expire_at: i64 = q(con, redis::cmd("PEXPIRETIME").arg(&key)).await;
            out.insert(
                (db, key),
                KeyState {
                    kind,
                    content,
                    expire_at: (expire_at >= 0).then_some(expire_at),
                },
            );
        }
    }
    let _: () = q(con, redis::cmd("SELECT").arg(0)).await;
    let functions: Value = q(con, redis::cmd("FUNCTION").arg("LIST").arg("WITHCODE")).await;
    (out, format!("{functions:?}"))
}

/// Entries, groups (without idle times), pending entries and consumers of a stream.
async fn stream_state(con: &mut MultiplexedConnection, key: &[u8]) -> String {
    let entries: Value = q(con, redis::cmd("XRANGE").arg(key).arg("-").arg("+")).await;
    let groups: Vec<BTreeMap<String, Value>> =
        q(con, redis::cmd("XINFO").arg("GROUPS").arg(key)).await;
    let mut text = format!("{entries:?}");
    for group in groups {
        let name = match group.get("name") {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        };
        let kept: Vec<_> = [
            "name",
            "consumers",
            "pending",
            "last-delivered-id",
            "entries-read",
        ]
        .iter()
        .map(|f| format!("{f}={:?}", group.get(*f)))
        .collect();
        text.push_str(&format!(" group {kept:?}"));
        let pending: Vec<(String, String, i64, i64)> = q(
            con,
            redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .arg("-")
                .arg("+")
                .arg(1000),
        )
        .await;
        let pending: Vec<_> = pending
            .into_iter()
            .map(|(id, consumer, _idle, count)| (id, consumer, count))
            .collect();
        text.push_str(&format!(" pending {pending:?}"));
        let consumers: Vec<BTreeMap<String, Value>> = q(
            con,
            redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name),
        )
        .await;
        let consumers: Vec<_> = consumers
            .iter()
            .map(|c| {
                (
                    format!("{:?}", c.get("name")),
                    format!("{:?}", c.get("pending")),
                )
            })
            .collect();
        text.push_str(&format!(" consumers {consumers:?}"));
    }
    text
}

/// Asserts two pictures hold the same keys, values and expiry times, exactly: an RDB holds
/// each key's absolute expiry, and keys mode reads it with PEXPIRETIME (Redis 7+), so a
/// restore gives back the very millisecond (no tolerance, no dependence on when the pictures
/// are taken).
pub fn assert_same(
    expected: &BTreeMap<(u32, Vec<u8>), KeyState>,
    actual: &BTreeMap<(u32, Vec<u8>), KeyState>,
) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (key, want) in expected {
        let got = &actual[key];
        assert_eq!(
            (&got.kind, &got.content),
            (&want.kind, &want.content),
            "key {key:?}"
        );
        assert_eq!(got.expire_at, want.expire_at, "expiry time of {key:?}");
    }
}

/// Sets `count` string keys `{key_prefix}{i}` to `{value_prefix}{i}`, for i in 0..count.
pub async fn set_numbered(
    con: &mut MultiplexedConnection,
    key_prefix: &str,
    value_prefix: &str,
    count: usize,
) {
    for i in 0..count {
        redis::cmd("SET")
            .arg(format!("{key_prefix}{i}"))
            .arg(format!("{value_prefix}{i}"))
            .query_async::<()>(con)
            .await
            .unwrap();
    }
}

/// Sets `count` keys `blob:{i}` to 8 KiB of incompressible bytes each (distinct in their
/// first 8 bytes), in one pipeline: a dataset a backup takes a few seconds to stream.
pub async fn fill_blobs(url: &str, count: u64) {
    let mut con = connect(url).await;
    let value = super::noise(8 << 10);
    let mut pipe = redis::pipe();
    for i in 0..count {
        let mut v = value.clone();
        v[..8].copy_from_slice(&i.to_le_bytes());
        pipe.set(format!("blob:{i}"), v).ignore();
    }
    pipe.query_async::<()>(&mut con).await.unwrap();
}
