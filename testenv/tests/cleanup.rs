//! Services stop, and their directories go, when the test holding them panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};

use coffer_testenv::{PostgresServer, RedisServer, S3Server};

/// True while a process exists and is not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name: "pid (comm) S ...".
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X"))
}

struct Seen {
    redis_pid: u32,
    redis_dir: PathBuf,
    pg_pid: u32,
    pg_dir: PathBuf,
    s3_endpoint: String,
    s3_root: PathBuf,
}

#[test]
fn services_stop_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let redis = RedisServer::start().unwrap();
        let pg = PostgresServer::start().unwrap();
        let s3 = S3Server::start().unwrap();
        let seen = Seen {
            redis_pid: redis.pid(),
            redis_dir: redis.dir(),
            pg_pid: pg.pid().expect("postmaster.pid"),
            pg_dir: pg.dir().to_owned(),
            s3_endpoint: s3.endpoint(),
            s3_root: s3.root().to_owned(),
        };
        assert!(alive(seen.redis_pid) && alive(seen.pg_pid));
        tx.send(seen).unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let seen = rx.recv().unwrap();
    assert!(
        !alive(seen.redis_pid),
        "redis-server {} still runs",
        seen.redis_pid
    );
    assert!(!alive(seen.pg_pid), "postgres {} still runs", seen.pg_pid);
    let address = seen.s3_endpoint.trim_start_matches("http://");
    assert!(
        TcpStream::connect(address).is_err(),
        "the S3 server still listens"
    );
    for dir in [&seen.redis_dir, &seen.pg_dir, &seen.s3_root] {
        assert!(!Path::new(dir).exists(), "{dir:?} was left behind");
    }
}
