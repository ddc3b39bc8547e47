//! Stale multipart uploads are aborted at daemon start: against moto (which lists them), an
//! upload of an archive named before the start goes, and one of a newer archive, a stranger's
//! and one outside the prefix stay; against s3s-fs (which does not list them) the signed
//! request is accepted and the daemon says there is nothing it can sweep, and with a wrong
//! secret it says why, never the secret. And the real thing: a daemon killed (SIGKILL) in
//! the middle of an upload leaves it open on the server; started again, it aborts it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::TestHome;
use common::moto::MotoServer;
use common::s3::{S3Server, SECRET_KEY, env_for};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[test]
fn uploads_of_archives_named_before_the_start_are_aborted() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let t = TestHome::new();
    moto.create_bucket("backups", false);
    let stale = "host/tree_20200101_000000.tar.gz";
    let stale_encrypted = "host/tree_20200102_000000.tar.zst.age";
    let kept = [
        // A newer archive's: a run of this daemon, or a clock ahead; not ours to judge.
        "host/tree_29991231_235959.tar.gz",
        "host/notes.txt",
        "host/sub/tree_20200101_000000.tar.gz",
        "other/tree_20200101_000000.tar.gz",
    ];
    for key in [stale, stale_encrypted].iter().chain(&kept) {
        moto.start_upload("backups", key);
    }
    assert_eq!(moto.uploads("backups").len(), 6);
    t.append_config(&moto.remote_table("off", "backups", "host", ""));

    let _daemon = t.start_daemon_with_env(&moto.env());
    common::wait_for(
        Duration::from_secs(30),
        "the stale uploads to be aborted",
        || (moto.uploads("backups").len() == 4).then_some(()),
    );
    let mut expected = kept.map(str::to_owned).to_vec();
    expected.sort();
    assert_eq!(moto.uploads("backups"), expected);
    let log = common::wait_for(Duration::from_secs(10), "the log lines", || {
        let log = t.log();
        log.contains(&format!(
            "Aborted a stale upload of {stale_encrypted} on remote off"
        ))
        .then_some(log)
    });
    assert!(
        log.contains(&format!("Aborted a stale upload of {stale} on remote off")),
        "{log}"
    );
}

#[test]
fn a_server_that_does_not_list_uploads_is_told_apart_from_a_refused_signature() {
    let server = S3Server::start();
    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host", ""));
    let mut daemon = t.start_daemon_with_env(&env_for(&server, SECRET_KEY));
    // s3s checks the signature before it finds that the call is not implemented.
    common::wait_for(Duration::from_secs(30), "the sweep's log line", || {
        t.log()
            .contains("remote off: the server does not list multipart uploads; none swept")
            .then_some(())
    });
    assert!(!t.log().contains("can't sweep"), "{}", t.log());
    daemon.signal("TERM");
    daemon.wait();

    let t = TestHome::new();
    t.append_config(&server.remote_table("off", "host", ""));
    let _daemon = t.start_daemon_with_env(&env_for(&server, "not-the-secret-4b1d"));
    let log = common::wait_for(Duration::from_secs(30), "the sweep's log line", || {
        let log = t.log();
        log.contains("can't sweep stale uploads on remote off")
            .then_some(log)
    });
    assert!(log.contains("SignatureDoesNotMatch"), "{log}");
    assert!(!log.contains("not-the-secret-4b1d"), "{log}");
}

/// A loopback TCP proxy to `target` that stops forwarding what clients send once `limit`
/// bytes have passed (all connections), until the limit is lifted: an upload then hangs
/// midway with its multipart upload started, as on a slow link.
struct StallingProxy {
    port: u16,
    limit: Arc<AtomicU64>,
}

impl StallingProxy {
    fn start(target: u16, limit: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limit = Arc::new(AtomicU64::new(limit));
        let sent = Arc::new(AtomicU64::new(0));
        let shared = Arc::clone(&limit);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (limit, sent) = (Arc::clone(&shared), Arc::clone(&sent));
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client_in, server_out, Some((limit, sent))));
                std::thread::spawn(move || pump(server, client, None));
            }
        });
        Self { port, limit }
    }

    fn lift(&self) {
        self.limit.store(u64::MAX, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes; with `stall`, holds back bytes past its limit.
fn pump(mut from: TcpStream, mut to: TcpStream, stall: Option<(Arc<AtomicU64>, Arc<AtomicU64>)>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((limit, sent)) = &stall {
            while sent.load(Ordering::SeqCst) + n as u64 > limit.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            sent.fetch_add(n as u64, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn an_upload_cut_by_sigkill_is_aborted_when_the_daemon_starts_again() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let t = TestHome::new();
    moto.create_bucket("backups", false);
    // 1 MiB passes: the small requests and the start of the first 5 MiB part.
    let proxy = StallingProxy::start(moto.port, 1 << 20);
    let table = moto
        .remote_table("off", "backups", "host", "part_size = \"5MiB\"\n")
        .replace(
            &moto.endpoint(),
            &format!("http://127.0.0.1:{}", proxy.port),
        );
    t.append_config(&table);
    let src = t.work().join("big");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data.bin"), common::incompressible(12 << 20, 7)).unwrap();

    let mut daemon = t.start_daemon_with_env(&moto.env());
    let mut run = t
        .ctl_command(&["run", "--sources", "big", "--offsite", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let key = common::wait_for(
        Duration::from_secs(60),
        "the offsite upload to start",
        || moto.uploads("backups").into_iter().next(),
    );
    assert!(
        key.starts_with("host/big_") && key.ends_with(".tar.gz"),
        "{key}"
    );
    daemon.signal("KILL");
    daemon.wait();
    let _ = run.wait();
    proxy.lift();
    assert_eq!(
        moto.uploads("backups"),
        std::slice::from_ref(&key),
        "left by the crash"
    );

    // Archive names carry their second: the restart must come after it.
    let stamp = key
        .trim_start_matches("host/big_")
        .trim_end_matches(".tar.gz");
    let stamp = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").unwrap();
    common::wait_for(
        Duration::from_secs(10),
        "the clock to pass the archive",
        || {
            (chrono::Local::now().naive_local() > stamp + chrono::TimeDelta::seconds(1))
                .then_some(())
        },
    );
    let _daemon = t.start_daemon_with_env(&moto.env());
    common::wait_for(
        Duration::from_secs(30),
        "the crash's upload to be aborted",
        || moto.uploads("backups").is_empty().then_some(()),
    );
    assert!(
        t.log()
            .contains(&format!("Aborted a stale upload of {key} on remote off")),
        "{}",
        t.log()
    );
}
