//! Email about a job, over SMTP (`lettre`): the `[email]` section of `backupd.toml` says the
//! server, how to secure the connection, who writes and who reads, and where the password is
//! (a file or an environment variable: never the configuration itself, never the schedules).
//! A password file is refused unless it is the daemon user's (or root's) alone, mode 0600.
//!
//! ```toml
//! [email]
//! server = "smtp.example.org"
//! port = 587                   # default: 587 starttls, 465 tls, 25 none
//! tls = "starttls"             # or "tls", or "none" (no login unless the server is on loopback)
//! from = "backupd <backupd@example.org>"
//! to = ["admin@example.org"]
//! username = "backupd"
//! password_file = "/etc/backupd/smtp-password"   # or password_env = "BACKUPD_SMTP_PASSWORD"
//! ```

use crate::fsutil::Links;
use crate::outcome::JobOutcome;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption at all: a relay on loopback, or one that asks for no login (a password
    /// would go in clear text).
    None,
}

/// The `[email]` section as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub server: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

/// Why email cannot be sent; never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("email: {0}")]
    Invalid(String),
    #[error("email: can't read password_file {path}: {cause}")]
    PasswordFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("email: password_env {0} is not set")]
    PasswordEnv(String),
    #[error(
        "email: tls = \"none\" would send the password in clear text to {server}; use \"starttls\" \
         or \"tls\", or a relay on loopback (127.0.0.1, ::1, localhost)"
    )]
    CleartextLogin { server: String },
    #[error("email to {to} via {server} failed: {reason}")]
    Send {
        to: String,
        server: String,
        reason: String,
    },
}

impl EmailSettings {
    /// Checks what can be checked without reading the password.
    pub fn check(&self) -> Result<(), EmailError> {
        let invalid = |reason: &str| Err(EmailError::Invalid(reason.to_owned()));
        if self.server.trim().is_empty() {
            return invalid("server must name the SMTP server");
        }
        mailbox(&self.from, "from")?;
        if self.to.is_empty() {
            return invalid("to must list at least one address");
        }
        for to in &self.to {
            mailbox(to, "to")?;
        }
        match (&self.username, &self.password_file, &self.password_env) {
            (_, Some(_), Some(_)) => invalid("give password_file or password_env, not both"),
            (None, Some(_), _) | (None, _, Some(_)) => invalid("a password needs a username"),
            (Some(_), None, None) => invalid("a username needs password_file or password_env"),
            _ => Ok(()),
        }?;
        if self.tls == TlsMode::None && self.username.is_some() && !is_loopback(&self.server) {
            return Err(EmailError::CleartextLogin {
                server: self.server.trim().to_owned(),
            });
        }
        Ok(())
    }
}

/// Whether `server` is this machine by address (127.0.0.0/8, ::1, an IPv4-mapped loopback)
/// or by the name `localhost`, which resolvers keep on loopback (RFC 6761); any other name
/// could resolve anywhere.
fn is_loopback(server: &str) -> bool {
    let server = server.trim();
    match server.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(std::net::IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let name = server.strip_suffix('.').unwrap_or(server);
            name.eq_ignore_ascii_case("localhost")
        }
    }
}

fn mailbox(text: &str, key: &str) -> Result<Mailbox, EmailError> {
    text.parse()
        .map_err(|e| EmailError::Invalid(format!("{key}: {text:?} is not an address ({e})")))
}

/// Sends the emails: the transport and addresses, checked and with the password read once,
/// at start.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// How long one email may take in all; [`EMAIL_DEADLINE`] but in tests.
    deadline: Duration,
}

/// Neither the transport (it holds the credentials) nor its settings.
impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Bound on each read and write of the SMTP conversation (lettre's timeout).
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on a whole email: a server that sends a line now and then never trips
/// [`SMTP_TIMEOUT`].
pub const EMAIL_DEADLINE: Duration = Duration::from_secs(60);

/// Bound on a password file: it holds one line.
const MAX_PASSWORD_FILE: u64 = 64 << 10;

impl Mailer {
    /// Checks the settings and reads the password; the daemon does not start without it.
    pub fn new(settings: &EmailSettings) -> Result<Self, EmailError> {
        settings.check()?;
        let server = settings.server.trim().to_owned();
        let builder = match settings.tls {
            TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&server),
            TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&server),
            TlsMode::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &server,
            )),
        }
        .map_err(|e| EmailError::Invalid(format!("server {server:?}: {e}")))?;
        let port = settings.port.unwrap_or(match settings.tls {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        });
        let mut builder = builder.port(port).timeout(Some(SMTP_TIMEOUT));
        if let Some(username) = &settings.username {
            let password = read_password(settings)?;
            builder = builder.credentials(Credentials::new(username.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
            server: format!("{server}:{port}"),
            from: mailbox(&settings.from, "from")?,
            to: settings
                .to
                .iter()
                .map(|to| mailbox(to, "to"))
                .collect::<Result<_, _>>()?,
            deadline: EMAIL_DEADLINE,
        })
    }

    /// Emails the outcome and the job's last log lines.
    pub async fn send(&self, outcome: &JobOutcome) -> Result<(), EmailError> {
        let failed = |reason: String| EmailError::Send {
            to: self
                .to
                .iter()
                .map(|to| to.email.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            server: self.server.clone(),
            reason,
        };
        let mut body = outcome.summary();
        body.push_str(&format!("\nHost: {}\n", outcome.host));
        if !outcome.log_lines.is_empty() {
            body.push_str("\nLast log lines of the job:\n");
            for line in &outcome.log_lines {
                body.push_str(line);
                body.push('\n');
            }
        }
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(outcome.title())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message.body(body).map_err(|e| failed(e.to_string()))?;
        match tokio::time::timeout(self.deadline, self.transport.send(message)).await {
            Ok(sent) => sent.map(drop).map_err(|e| failed(e.to_string())),
            Err(_) => Err(failed(format!("not sent within {:?}", self.deadline))),
        }
    }
}

fn read_password(settings: &EmailSettings) -> Result<String, EmailError> {
    if let Some(path) = &settings.password_file {
        // Checked as a credentials file is: not a symlink, root's or ours, mode 0600.
        let text = crate::fsutil::read_secret(path, Links::Refuse, MAX_PASSWORD_FILE).map_err(
            |cause| EmailError::PasswordFile {
                path: path.clone(),
                cause,
            },
        )?;
        // A file written by `echo` ends with a newline that is no part of the password.
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    let name = settings.password_env.clone().unwrap_or_default();
    std::env::var(&name).map_err(|_| EmailError::PasswordEnv(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EmailSettings {
        EmailSettings {
            server: "127.0.0.1".into(),
            port: Some(2525),
            tls: TlsMode::None,
            from: "backupd <backupd@example.org>".into(),
            to: vec!["admin@example.org".into()],
            username: None,
            password_file: None,
            password_env: None,
        }
    }

    #[test]
    fn settings_are_checked_before_the_daemon_starts() {
        assert!(settings().check().is_ok());
        let bad = |change: fn(&mut EmailSettings)| {
            let mut s = settings();
            change(&mut s);
            s.check().unwrap_err().to_string()
        };
        assert!(bad(|s| s.to.clear()).contains("to must list"));
        assert!(bad(|s| s.from = "not an address".into()).contains("from"));
        assert!(bad(|s| s.username = Some("u".into())).contains("password_file"));
        assert!(bad(|s| s.password_env = Some("X".into())).contains("username"));
        assert!(
            bad(|s| {
                s.username = Some("u".into());
                s.password_env = Some("X".into());
                s.password_file = Some("/p".into());
            })
            .contains("not both")
        );
    }

    #[test]
    fn a_login_without_tls_is_refused_unless_the_server_is_on_loopback() {
        let with_login = |server: &str, tls| EmailSettings {
            server: server.into(),
            tls,
            username: Some("backupd".into()),
            password_env: Some("BACKUPD_SMTP_PASSWORD".into()),
            ..settings()
        };
        for server in [
            "192.0.2.2",
            "smtp.example.org",
            "localhost.example.org",
            "::ffff:192.0.2.2",
        ] {
            let err = with_login(server, TlsMode::None).check().unwrap_err();
            assert!(
                matches!(err, EmailError::CleartextLogin { .. }),
                "{server}: {err}"
            );
            assert!(err.to_string().contains(server), "{err}");
            assert!(with_login(server, TlsMode::Starttls).check().is_ok());
            assert!(with_login(server, TlsMode::Tls).check().is_ok());
            // Without a login there is no password to give away.
            let relay = EmailSettings {
                server: server.into(),
                ..settings()
            };
            assert!(relay.check().is_ok(), "{server}");
        }
        for server in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "localhost",
            "LocalHost.",
        ] {
            assert!(
                with_login(server, TlsMode::None).check().is_ok(),
                "{server}"
            );
        }
    }

    #[test]
    fn the_password_comes_from_its_file_and_errors_do_not_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut s = settings();
        s.username = Some("backupd".into());
        s.password_file = Some(file.clone());
        assert_eq!(read_password(&s).unwrap(), "s3cret");
        let mailer = Mailer::new(&s).unwrap();
        assert!(!format!("{mailer:?}").contains("s3cret"));
        s.password_file = Some(dir.path().join("missing"));
        assert!(matches!(
            Mailer::new(&s).unwrap_err(),
            EmailError::PasswordFile { .. }
        ));
        s.password_file = None;
        s.password_env = Some("BACKUPD_TEST_SURELY_UNSET_PASSWORD".into());
        let err = Mailer::new(&s).unwrap_err().to_string();
        assert!(
            err.contains("BACKUPD_TEST_SURELY_UNSET_PASSWORD is not set"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_email_to_a_server_that_answers_a_line_at_a_time_ends_at_its_deadline() {
        use tokio::io::AsyncWriteExt;
        // A greeting that never ends: a `220-` line every 100 ms, far within each read's
        // timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            while socket.write_all(b"220-still greeting\r\n").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut mailer = Mailer::new(&EmailSettings {
            port: Some(port),
            ..settings()
        })
        .unwrap();
        assert_eq!(mailer.deadline, EMAIL_DEADLINE);
        mailer.deadline = Duration::from_millis(500);
        let now = chrono::Local::now().fixed_offset();
        let outcome = JobOutcome {
            job: 1,
            name: "docs".into(),
            schedule: None,
            source: "/srv/docs".into(),
            archive: String::new(),
            manifest: String::new(),
            status: crate::outcome::JobStatus::Failure,
            error: Some("Backup failed".into()),
            published: false,
            size_bytes: 0,
            sha256: None,
            started: now,
            finished: now,
            duration_ms: 0,
            host: "h".into(),
            log_lines: Vec::new(),
        };
        // Far past the deadline: only a send that never ends gets there.
        let sent = tokio::time::timeout(Duration::from_secs(120), mailer.send(&outcome))
            .await
            .expect("the email is still being sent after 120 s");
        let err = sent.unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "via 127.0.0.1:{port} failed: not sent within 500ms"
            )),
            "{err}"
        );
    }

    #[test]
    fn a_password_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut s = settings();
        s.username = Some("backupd".into());
        s.password_file = Some(file.clone());
        for mode in [0o644, 0o640] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_password(&s).unwrap_err().to_string();
            assert!(err.contains(&file.display().to_string()), "{err}");
            assert!(err.contains("readable by group or others"), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
