//! An S3-compatible server (`s3s-fs`, which stores objects as files, with ListMultipartUploads
//! added: see [`crate::s3_uploads`]) serving real HTTP on a free loopback port, in a thread of
//! this process.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::process::random_token;
use crate::s3_hold::Held;
use crate::s3_tamper::{Served, Shared, Tampering};
use crate::s3_uploads::{Store, open_upload_ids};
use crate::{Result, TestEnvError};

/// The region the server is addressed with.
pub const REGION: &str = "us-east-1";

/// A running S3-compatible server with path-style addressing and SigV4 authentication by a
/// random access key. Stopped, and its files removed, when dropped.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    access_key: String,
    secret_key: String,
    read_only_access_key: String,
    read_only_secret_key: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    root: PathBuf,
    // The store's directory when the server made it (removed when dropped).
    _temp: Option<TempDir>,
    tampering: Shared,
    journal: crate::s3_journal::Shared,
    holds: crate::s3_hold::Shared,
}

impl S3Server {
    /// Starts a server with an empty store (create buckets through the S3 API).
    pub fn start() -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("coffer-s3-")
            .tempdir()
            .map_err(TestEnvError::io("creating a directory for the S3 server"))?;
        let access_key = format!("AK{}", random_token().to_uppercase());
        let secret_key = random_token();
        let root = temp.path().to_owned();
        Self::serve(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            root,
            Some(temp),
            access_key,
            secret_key,
        )
    }

    /// Serves the store in `root` (kept when dropped) on `listen`, with the given keys: the
    /// server in a container of the real node's tests (`coffer-s3-server`).
    pub fn start_in(
        listen: SocketAddr,
        root: &Path,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self> {
        Self::serve(
            listen,
            root.to_owned(),
            None,
            access_key.to_owned(),
            secret_key.to_owned(),
        )
    }

    fn serve(
        listen: SocketAddr,
        root: PathBuf,
        temp: Option<TempDir>,
        access_key: String,
        secret_key: String,
    ) -> Result<Self> {
        let listener = std::net::TcpListener::bind(listen)
            .map_err(TestEnvError::io("binding the S3 server's port"))?;
        let addr = listener
            .local_addr()
            .map_err(TestEnvError::io("reading the S3 server's address"))?;
        let mut server = Self {
            addr,
            access_key,
            secret_key,
            read_only_access_key: format!("RO{}", random_token().to_uppercase()),
            read_only_secret_key: random_token(),
            shutdown: None,
            thread: None,
            root,
            _temp: temp,
            tampering: Shared::default(),
            journal: crate::s3_journal::Shared::default(),
            holds: crate::s3_hold::Shared::default(),
        };
        server.serve_on(listener)?;
        Ok(server)
    }

    /// Stops serving (open connections get 2 s to finish): a store that went away.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Serves again, on the same port, with the same objects and keys.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let listener = std::net::TcpListener::bind(self.addr)
            .map_err(TestEnvError::io("binding the S3 server's port again"))?;
        self.serve_on(listener)
    }

    fn serve_on(&mut self, listener: std::net::TcpListener) -> Result<()> {
        let store = s3s_fs::FileSystem::new(&self.root).map_err(|e| TestEnvError::Io {
            what: "opening the S3 server's store".to_owned(),
            source: std::io::Error::other(format!("{e:?}")),
        })?;
        let mut builder = S3ServiceBuilder::new(Store::new(
            store,
            &self.root,
            self.tampering.clone(),
            self.journal.clone(),
            self.holds.clone(),
        ));
        let mut auth = SimpleAuth::from_single(self.access_key.clone(), self.secret_key.clone());
        auth.register(
            self.read_only_access_key.clone(),
            self.read_only_secret_key.clone().into(),
        );
        builder.set_auth(auth);
        builder.set_access(crate::s3_access::ReadOnlyKey {
            read_only_key: self.read_only_access_key.clone(),
        });
        let service = builder.build();
        listener
            .set_nonblocking(true)
            .map_err(TestEnvError::io("configuring the S3 server's socket"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-server")
            .enable_all()
            .build()
            .map_err(TestEnvError::io("starting the S3 server's runtime"))?;
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("s3-server".to_owned())
            .spawn(move || runtime.block_on(serve(listener, service, stop)))
            .map_err(TestEnvError::io("starting the S3 server's thread"))?;
        self.shutdown = Some(shutdown);
        self.thread = Some(thread);
        Ok(())
    }

    /// The endpoint URL, for example `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// A second key pair (access key id, secret) that may list and read but not write or
    /// delete: what a bucket policy granting only reads gives.
    pub fn read_only_keys(&self) -> (&str, &str) {
        (&self.read_only_access_key, &self.read_only_secret_key)
    }

    /// The secret access key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The region to sign requests for.
    pub fn region(&self) -> &'static str {
        REGION
    }

    /// The directory holding the buckets (one sub-directory per bucket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Multipart uploads that were started and neither completed nor aborted (s3s-fs keeps
    /// one `.upload-<id>.json` file in its root for each).
    pub fn open_multipart_uploads(&self) -> usize {
        open_upload_ids(&self.root).len()
    }

    /// From now on, the `read`th GET (counting from 1, all reads so far included) of the
    /// object whose key ends with `suffix` serves it with the byte in its middle changed (see
    /// [`crate::s3_tamper`]): a store that lies.
    pub fn tamper(&self, suffix: &str, read: u32) {
        Tampering::add(&self.tampering, suffix, read, Served::Changed);
    }

    /// Like [`S3Server::tamper`], and that response is also longer than the object: after its
    /// bytes it pauses, then sends more (see [`crate::s3_tamper`]).
    pub fn tamper_lengthening(&self, suffix: &str, read: u32) {
        Tampering::add(&self.tampering, suffix, read, Served::ChangedLonger);
    }

    /// Serves the `read`th GET of the object whose key ends with `suffix` unchanged, but its
    /// second half only after a pause of [`crate::s3_tamper::TAIL_PAUSE`]: its reader is then
    /// caught in the middle of it.
    pub fn pause_midway(&self, suffix: &str, read: u32) {
        Tampering::add(&self.tampering, suffix, read, Served::Paused);
    }

    /// Serves the `read`th GET of the object whose key ends with `suffix` cut off: its first
    /// half, then the connection is closed, as a store or network failing mid-read does.
    pub fn cut_midway(&self, suffix: &str, read: u32) {
        Tampering::add(&self.tampering, suffix, read, Served::Cut);
    }

    /// How many responses were served changed so far.
    pub fn tampered(&self) -> u32 {
        Tampering::changed(&self.tampering)
    }

    /// The sizes of the parts uploaded (multipart) to the object whose key ends with
    /// `suffix`, in the order they came.
    pub fn part_sizes(&self, suffix: &str) -> Vec<u64> {
        self.journal.part_sizes(suffix)
    }

    /// Every object written and deleted so far, in the order the server finished them:
    /// `put bucket/key` or `delete bucket/key`.
    pub fn journal(&self) -> Vec<String> {
        self.journal.events()
    }

    /// Holds back the answer to the next write (PutObject or CompleteMultipartUpload) of an
    /// object whose key ends with `suffix`, after storing it, until the [`Held`] is dropped
    /// (or two minutes pass): see [`crate::s3_hold`].
    pub fn hold_answer(&self, suffix: &str) -> Held {
        self.holds.add(crate::s3_hold::Answer::Write, suffix)
    }

    /// Holds back the answer to the next CreateMultipartUpload of an object whose key ends
    /// with `suffix`, after opening the upload, until the [`Held`] is dropped (or two minutes
    /// pass): the client cannot yet know the upload's id.
    pub fn hold_upload_start(&self, suffix: &str) -> Held {
        self.holds.add(crate::s3_hold::Answer::UploadStart, suffix)
    }

    /// Holds the answer to the next GET of an object whose key ends with `suffix`, before
    /// any of it is sent, until the returned [`Held`] is dropped (or two minutes pass): its
    /// reader is then caught waiting in the middle of its work.
    pub fn hold_read(&self, suffix: &str) -> Held {
        self.holds.add(crate::s3_hold::Answer::Read, suffix)
    }

    /// How many times objects whose key ends with `suffix` were read so far.
    pub fn reads(&self, suffix: &str) -> u32 {
        Tampering::reads(&self.tampering, suffix)
    }

    /// The standard AWS environment variables that point an S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    service: S3Service,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let connection = http.serve_connection(TokioIo::new(socket), service.clone());
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    // Give open connections a moment to finish, then drop them.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown()).await;
}
