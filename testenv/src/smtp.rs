//! A real SMTP server (Debian's `python3-aiosmtpd`) on a free loopback port: STARTTLS
//! required, with a certificate from its own CA; AUTH with one user; every accepted message
//! kept as a file.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tempfile::TempDir;

use crate::process::{ChildGuard, free_port, spawn_tied, tied_command};
use crate::{Result, TestEnvError};

const PYTHON: &str = "/usr/bin/python3";

/// A running SMTP server, stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    _process: ChildGuard,
    port: u16,
    ca_pem: String,
    dir: TempDir,
}

impl SmtpServer {
    /// Starts a server that takes mail from `user` with `password`, after STARTTLS.
    pub fn start(user: &str, password: &str) -> Result<Self> {
        let missing = || {
            TestEnvError::ControlPlane(
                "python3-aiosmtpd is missing: apt-get install python3-aiosmtpd (scripts/install-test-deps does)"
                    .to_owned(),
            )
        };
        let found = std::process::Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|_| missing())?;
        if !found.success() {
            return Err(missing());
        }
        let dir = tempfile::Builder::new()
            .prefix("coffer-smtp-")
            .tempdir()
            .map_err(TestEnvError::io("creating a directory for the SMTP server"))?;
        let (ca_pem, cert, key) = certificates().map_err(|e| {
            TestEnvError::ControlPlane(format!("making the SMTP server's certificate: {e}"))
        })?;
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text)
                .map(|()| path)
                .map_err(TestEnvError::io("writing the SMTP server's files"))
        };
        let script = write("smtp_server.py", include_str!("smtp_server.py"))?;
        let cert = write("cert.pem", &cert)?;
        let key = write("key.pem", &key)?;
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).map_err(TestEnvError::io("creating the mail directory"))?;
        let port = free_port()?;
        let mut command = tied_command(PYTHON);
        command
            .arg(&script)
            .arg(port.to_string())
            .arg(&mail)
            .arg(&cert)
            .arg(&key)
            .args([user, password])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = spawn_tied("the SMTP server", command)?;
        let stdout = child.stdout.take();
        let mut process = ChildGuard(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "ready" => {}
            _ => {
                let _ = process.0.kill();
                return Err(TestEnvError::NotReady {
                    service: "the SMTP server",
                    seconds: 20,
                    tail: String::new(),
                    log: script,
                });
            }
        }
        Ok(Self {
            _process: process,
            port,
            ca_pem,
            dir,
        })
    }

    /// The port, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM certificate of the CA that signed the server's certificate (for 127.0.0.1
    /// and localhost).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every message accepted so far, oldest first, as received (with an `X-Envelope-To`
    /// header in front naming the envelope's recipients).
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }
}

fn certificates() -> std::result::Result<(String, String, String), rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "coffer test SMTP CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &ca)?;
    Ok((ca.as_ref().pem(), cert.pem(), key.serialize_pem()))
}
