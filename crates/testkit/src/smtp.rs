//! A real SMTP server on loopback for a test: aiosmtpd (from PyPI, installed by
//! `scripts/stack.sh up`) with its Maildir handler, one server and one mail directory per test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::test_python;

/// One message as the server stored it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The message as received (RFC 5322, with the server's added headers).
    pub raw: String,
}

impl ReceivedMail {
    /// The value of the first header called `name`, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\n\n").next().unwrap_or_default();
        let mut lines = head.lines().peekable();
        while let Some(line) = lines.next() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if !field.eq_ignore_ascii_case(name) {
                continue;
            }
            let mut value = value.trim().to_owned();
            while let Some(next) = lines.peek().filter(|next| next.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            }
            return Some(value);
        }
        None
    }

    /// The message with quoted-printable soft breaks and escapes decoded, for reading its parts'
    /// text (headers and part boundaries pass through unchanged).
    pub fn decoded(&self) -> String {
        let unfolded = self.raw.replace("\r\n", "\n").replace("=\n", "");
        let bytes = unfolded.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            let escaped = (bytes[index] == b'=')
                .then(|| bytes.get(index + 1..index + 3))
                .flatten()
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match escaped {
                Some(byte) => {
                    decoded.push(byte);
                    index += 3;
                }
                None => {
                    decoded.push(bytes[index]);
                    index += 1;
                }
            }
        }
        String::from_utf8_lossy(&decoded).into_owned()
    }
}

pub struct SmtpServer {
    port: u16,
    directory: PathBuf,
    child: Child,
}

impl SmtpServer {
    /// A server on a free port.
    pub async fn start() -> SmtpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        SmtpServer::start_on(port).await
    }

    /// A server on `port` (to bring one back where a stopped one was).
    pub async fn start_on(port: u16) -> SmtpServer {
        let python = test_python();
        let directory = std::env::temp_dir().join(format!("picket-smtp-{}", uuid::Uuid::new_v4()));
        for folder in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(directory.join(folder)).expect("maildir");
        }
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&directory)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "aiosmtpd did not listen on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SmtpServer {
            port,
            directory,
            child,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The messages stored so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|folder| std::fs::read_dir(self.directory.join(folder)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let modified = entry.metadata().ok()?.modified().ok()?;
                Some((modified, entry.path()))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .map(|raw| ReceivedMail { raw })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
        let _ignored = std::fs::remove_dir_all(&self.directory);
    }
}
