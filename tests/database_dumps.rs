//! Command sources (`--source-command NAME=COMMAND`): real SQLite (`sqlite3 db .dump`) and
//! PostgreSQL (`pg_dump` of a throwaway cluster) dumps archived, restored into a fresh
//! database and compared row by row; failures keep the archive unpublished and quote stderr.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Client, TestHome, run_json, threads_of};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether `tool` can be run; outside CI a missing tool skips the test, in CI it fails it.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing in CI"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

#[track_caller]
fn sh(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Extracts `member` of `archive` into `into`.
fn extract(archive: &str, member: &str, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    sh(Command::new("tar")
        .args(["-xf", archive, "-C"])
        .arg(into)
        .arg(member));
    into.join(member)
}

fn app_folder(t: &TestHome) {
    std::fs::create_dir_all(t.work().join("app")).unwrap();
    std::fs::write(t.work().join("app/config.ini"), b"[app]\n").unwrap();
}

/// `app_folder` with `app.db` beside its config, made by `sql`; the folder.
fn app_with_database(t: &TestHome, sql: &str) -> PathBuf {
    app_folder(t);
    let app = t.work().join("app");
    sh(Command::new("sqlite3").arg(app.join("app.db")).arg(sql));
    app
}

#[test]
fn a_sqlite_dump_is_archived_and_restores_the_same_rows() {
    if !have("sqlite3") || !have("tar") {
        return;
    }
    let t = TestHome::new();
    app_folder(&t);
    let db = t.work().join("app.db");
    let rows = "create table t(id integer primary key, name text);
        insert into t(name) values ('alpha'), ('bêta'), ('it''s');";
    sh(Command::new("sqlite3").arg(&db).arg(rows));
    let _daemon = t.start_daemon();
    // A plain dump: nothing writes to the database meanwhile.
    let dump = format!("app.sql=sqlite3 {} .dump", db.display());
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "app",
            "--source-command",
            &dump,
            "--verify-after",
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let report = &answer["data"]["sources"][0];
    let archive = report["archive"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(report["manifest"].as_str().unwrap()).unwrap())
            .unwrap();
    let listed = &manifest["commands"][0];
    assert_eq!(listed["name"], "app.sql");
    assert_eq!(listed["command"], json!(["sqlite3", db, ".dump"]));
    assert_eq!(listed["exit_status"], 0);
    assert_eq!(report["verified"], true);

    let restored_sql = extract(archive, "app.sql", &t.work().join("out"));
    assert_eq!(
        listed["bytes"],
        std::fs::metadata(&restored_sql).unwrap().len()
    );
    // The folder is archived beside it, as always.
    assert!(extract(archive, "app/config.ini", &t.work().join("out")).exists());
    let fresh = t.work().join("fresh.db");
    sh(Command::new("sqlite3")
        .arg(&fresh)
        .arg(format!(".read {}", restored_sql.display())));
    let select = |db: &Path| {
        sh(Command::new("sqlite3")
            .arg(db)
            .arg("select * from t order by id"))
    };
    assert_eq!(select(&fresh), select(&db));
    assert!(select(&fresh).contains("bêta"));
}

#[test]
fn a_failing_command_fails_the_backup_with_its_stderr_and_publishes_nothing() {
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "app",
            "--source-command",
            "db.sql=sh -c 'echo partial; echo no such database >&2; exit 3'",
        ],
    );
    assert_eq!(code, 1, "{answer}");
    let error = answer["data"]["sources"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("command source db.sql failed: exited with status 3: no such database"),
        "{error}"
    );
    let backups = t.home().join("backups");
    let left: Vec<_> = std::fs::read_dir(&backups)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(
        left.iter().all(|n| *n == 0),
        "something was left in {}",
        backups.display()
    );

    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "app",
            "--source-command",
            "x.sql=sh -c 'kill -9 $$'",
        ],
    );
    assert_eq!(code, 1);
    let error = answer["data"]["sources"][0]["error"].as_str().unwrap();
    assert!(error.contains("killed by signal 9"), "{error}");

    for (spec, reason) in [
        ("../evil=true", "invalid command source name"),
        ("noequals", "expected NAME=COMMAND"),
        ("a.sql=sh -c 'open", "unterminated quote"),
    ] {
        let out = t.ctl(&["run", "--sources", "app", "--source-command", spec]);
        assert_ne!(out.code(), 0);
        assert!(out.stderr().contains(reason), "{spec}: {}", out.stderr());
    }
}

#[test]
fn command_sources_come_over_the_raw_protocol() {
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    let request = json!({
        "cmd": "run",
        "sources": [t.work().join("app")],
        "source_commands": [{"name": "hello.txt", "command": ["printf", "%s\\n", "hi there"]}]
    });
    let answer = Client::connect(&t.socket())
        .unwrap()
        .request(&request.to_string());
    assert_eq!(answer["ok"], true, "{answer}");
    let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    let file = extract(archive, "hello.txt", &t.work().join("out"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "hi there\n");
    let two = json!({
        "cmd": "run",
        "sources": [t.work().join("app"), t.work()],
        "source_commands": [{"name": "x", "command": ["true"]}]
    });
    let refused = Client::connect(&t.socket())
        .unwrap()
        .request(&two.to_string());
    assert_eq!(refused["ok"], false, "{refused}");
}

/// A dump of 4 MiB of `MARKER` lines that then waits for the file `GO` in the work folder
/// (commands run in the daemon's folder, so the path is absolute).
fn waiting_dump(t: &TestHome) -> String {
    let go = t.work().join("GO");
    format!(
        "db.sql=sh -c 'yes STREAMED-MARKER | head -c 4194304; \
         while [ ! -e {} ]; do sleep 0.05; done; echo end'",
        go.display()
    )
}
const WAITING_DUMP_BYTES: u64 = 4_194_304 + 4;

/// The content of the first `.partial` archive in `folder`, if any.
fn partial_in(folder: &Path) -> Option<Vec<u8>> {
    std::fs::read_dir(folder)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .and_then(|e| std::fs::read(e.path()).ok())
}

#[test]
fn a_dump_streams_into_the_archive_while_the_command_runs() {
    // Without compression the output is visible in the partial archive as it streams: had it
    // gone through a temporary file first, nothing of it would be there before the command
    // ends, and the command only ends once the test has seen it.
    let t = TestHome::new();
    app_folder(&t);
    let daemon = t.start_daemon();
    let run = t
        .ctl_command(&[
            "run",
            "--json",
            "--sources",
            "app",
            "--compression",
            "none",
            "--source-command",
            &waiting_dump(&t),
            "--verify-after",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let backups = t.home().join("backups");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let marker = b"STREAMED-MARKER\n";
    loop {
        let seen = partial_in(&backups)
            .is_some_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker));
        if seen {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dump never reached the partial archive while its command ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The header will be rewritten, so the digest is taken from the file afterwards: no
    // SHA-256 runs on the way, though megabytes have passed.
    assert_eq!(threads_of(daemon.pid(), "sha256"), 0);
    std::fs::write(t.work().join("GO"), b"").unwrap();
    let out = run.wait_with_output().unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{answer}");
    let report = &answer["data"]["sources"][0];
    assert_eq!(report["verified"], true, "{answer}");
    let archive = report["archive"].as_str().unwrap();
    let dump = extract(archive, "db.sql", &t.work().join("out"));
    let content = std::fs::read(&dump).unwrap();
    assert_eq!(content.len() as u64, WAITING_DUMP_BYTES);
    assert!(content.ends_with(b"STREAMED-MARKER\nend\n") || content.ends_with(b"\nend\n"));
    // The header was rewritten in place and the manifest's SHA-256 is that of the final file.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(report["manifest"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(manifest["commands"][0]["bytes"], WAITING_DUMP_BYTES);
    let sha = sh(Command::new("sha256sum").arg(archive));
    assert_eq!(
        sha.split_whitespace().next().unwrap(),
        manifest["checksum_sha256"].as_str().unwrap()
    );
}

/// Whether a process whose command line mentions `needle` is still running.
fn process_running(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
}

#[test]
fn cancelling_a_streaming_dump_kills_its_command_and_publishes_nothing() {
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    let dump = waiting_dump(&t);
    let run = t
        .ctl_command(&[
            "run",
            "--sources",
            "app",
            "--compression",
            "none",
            "--source-command",
            &dump,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let backups = t.home().join("backups");
    common::wait_for(common::PATIENCE, "the dump to stream", || {
        partial_in(&backups)
            .is_some_and(|bytes| bytes.windows(15).any(|w| w == b"STREAMED-MARKER"))
            .then_some(())
    });
    t.ctl(&["cancel", "--name", "app"]).ok();
    let out = run.wait_with_output().unwrap();
    assert!(!out.status.success());
    let go = t.work().join("GO");
    let go = go.to_str().unwrap();
    common::wait_for(common::PATIENCE, "the command to be killed", || {
        (!process_running(go)).then_some(())
    });
    let left: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn streamed_dumps_round_trip_through_every_codec_and_the_usual_readers() {
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    std::fs::write(t.work().join("GO"), b"").unwrap();
    for compression in ["gzip", "zstd", "none"] {
        let (code, answer) = run_json(
            &t,
            &[
                "--sources",
                "app",
                "--compression",
                compression,
                "--source-command",
                &waiting_dump(&t),
                "--source-command",
                "small.txt=printf 'two\\nlines\\n'",
                "--source-command",
                "empty=true",
                "--verify-after",
            ],
        );
        assert_eq!(code, 0, "{compression}: {answer}");
        let report = &answer["data"]["sources"][0];
        assert_eq!(report["verified"], true, "{compression}: {answer}");
        let archive = report["archive"].as_str().unwrap();
        // GNU tar (which runs gzip or zstd), then the codec's own test.
        let out = t.work().join(format!("out-{compression}"));
        let big = extract(archive, "db.sql", &out);
        assert_eq!(std::fs::metadata(big).unwrap().len(), WAITING_DUMP_BYTES);
        let small = extract(archive, "small.txt", &out);
        assert_eq!(std::fs::read_to_string(small).unwrap(), "two\nlines\n");
        assert_eq!(
            std::fs::metadata(extract(archive, "empty", &out))
                .unwrap()
                .len(),
            0
        );
        assert!(extract(archive, "app/config.ini", &out).exists());
        match compression {
            "gzip" => {
                sh(Command::new("gzip").args(["-t", archive]));
            }
            "zstd" => {
                sh(Command::new("zstd").args(["-t", "-q", archive]));
            }
            _ => {}
        }
        if compression == "zstd" {
            // Python's tarfile has no zstd before 3.14.
            continue;
        }
        // Python's tarfile reads every entry with its size.
        let listing = sh(Command::new("python3").args([
            "-c",
            "import sys, tarfile; \
             [print(m.name, m.size) for m in tarfile.open(sys.argv[1]) if m.isfile()]",
            archive,
        ]));
        assert!(
            listing.contains("db.sql 4194308"),
            "{compression}: {listing}"
        );
        assert!(listing.contains("small.txt 10"), "{compression}: {listing}");
    }
}

#[test]
fn an_encrypted_dump_goes_through_a_temporary_file_and_restores() {
    // age authenticates every chunk, so a written header cannot be rewritten: the output is
    // spilled first, and the archive is as readable as a streamed one.
    let t = TestHome::new();
    app_folder(&t);
    let identity = t.work().join("key.txt");
    let public = t.ctl(&["keygen", "--out", identity.to_str().unwrap()]).ok();
    let _daemon = t.start_daemon();
    std::fs::write(t.work().join("GO"), b"").unwrap();
    let (code, answer) = run_json(
        &t,
        &[
            "--sources",
            "app",
            "--encrypt-to",
            public.trim(),
            "--source-command",
            &waiting_dump(&t),
        ],
    );
    assert_eq!(code, 0, "{answer}");
    let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    let into = t.work().join("restored");
    let restored = t.ctl(&[
        "restore",
        archive,
        "--to",
        into.to_str().unwrap(),
        "--identity",
        identity.to_str().unwrap(),
    ]);
    restored.ok();
    assert_eq!(
        std::fs::metadata(into.join("db.sql")).unwrap().len(),
        WAITING_DUMP_BYTES
    );
}

/// PostgreSQL's server binaries: Debian keeps them out of PATH.
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// A throwaway cluster on a unix socket in a temp folder, stopped on drop.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_user: Vec<String>,
}

impl Cluster {
    /// Runs `program` of the cluster's bin folder as the cluster's user.
    fn tool(&self, program: &str) -> Command {
        let mut command = Command::new(
            self.as_user
                .first()
                .map_or(self.bin.join(program), PathBuf::from),
        );
        command.args(self.as_user.iter().skip(1));
        if !self.as_user.is_empty() {
            command.arg(self.bin.join(program));
        }
        command
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        sh(self
            .tool("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]))
    }

    fn start() -> Option<Self> {
        let Some(bin) = pg_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "postgresql is missing in CI"
            );
            eprintln!(
                "skipped: PostgreSQL (initdb under /usr/lib/postgresql/*/bin) is not installed"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // initdb refuses root: the cluster runs as nobody, in folders nobody may write.
        let as_user: Vec<String> = if rustix::process::geteuid().is_root() {
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ]
            .map(String::from)
            .to_vec()
        } else {
            Vec::new()
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        for sub in ["data", "sock"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::set_permissions(dir.path().join(sub), std::fs::Permissions::from_mode(0o777))
                .unwrap();
        }
        let port = 20000 + u16::try_from(std::process::id() % 20000).unwrap();
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_user,
        };
        let data = cluster.dir.path().join("data/pg");
        sh(cluster
            .tool("initdb")
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "-D"])
            .arg(&data));
        let options = format!(
            "-k {} -c listen_addresses='' -p {}",
            cluster.socket_dir().display(),
            cluster.port
        );
        sh(cluster
            .tool("pg_ctl")
            .args(["-w", "-t", "120", "-D"])
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(cluster.dir.path().join("data/log"))
            .arg("start"));
        Some(cluster)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data/pg"))
            .arg("stop")
            .output();
    }
}

#[test]
fn a_postgresql_dump_is_archived_and_restores_the_same_rows() {
    if !have("tar") || (rustix::process::geteuid().is_root() && !have("setpriv")) {
        return;
    }
    let Some(cluster) = Cluster::start() else {
        return;
    };
    cluster.psql("postgres", "create database app");
    cluster.psql(
        "app",
        "create table t(id serial primary key, name text, at timestamptz default '2026-01-01T00:00:00Z');
         insert into t(name) values ('alpha'), ('bêta'), (null);",
    );
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    // pg_dump as the README shows it, against this test's cluster.
    let dump = format!(
        "app.sql=pg_dump -h {} -p {} -U postgres app",
        cluster.socket_dir().display(),
        cluster.port
    );
    let (code, answer) = run_json(&t, &["--sources", "app", "--source-command", &dump]);
    assert_eq!(code, 0, "{answer}");
    let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    let sql = extract(archive, "app.sql", &cluster.dir.path().join("out"));
    std::fs::set_permissions(&sql, std::fs::Permissions::from_mode(0o644)).unwrap();
    cluster.psql("postgres", "create database restored");
    sh(cluster
        .tool("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
        .arg(cluster.socket_dir())
        .args(["-p", &cluster.port.to_string(), "-d", "restored", "-f"])
        .arg(&sql));
    let rows = "select id, name, at from t order by id";
    let original = cluster.psql("app", rows);
    assert_eq!(cluster.psql("restored", rows), original);
    assert_eq!(original.lines().count(), 3);
}

#[test]
fn the_readme_sqlite_example_fails_rather_than_archive_a_dump_a_writer_locked_out() {
    // `sqlite3 app.db .dump` writes `database is locked` into the dump and exits 0: the
    // backup succeeded with no data in it.
    if !have("sqlite3") || !have("tar") || !have("python3") {
        return;
    }
    let t = TestHome::new();
    app_folder(&t);
    let app = t.work().join("app");
    let db = app.join("app.db");
    sh(Command::new("sqlite3")
        .arg(&db)
        .arg("create table t(x); insert into t values (42);"));
    let _daemon = t.start_daemon();
    let example = &common::readme_examples("Database dumps")["dumps"];
    let sqlite = &example[..example.find("\n# PostgreSQL").unwrap()];
    assert!(sqlite.contains(".timeout 60000"), "{sqlite}");
    let script = sqlite
        .replace("/srv/app", &app.display().to_string())
        .replace(".timeout 60000", ".timeout 500");
    // A writer in the middle of its transaction, as the application may be.
    let mut writer = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             db.execute('BEGIN EXCLUSIVE')\n\
             db.execute('insert into t values (7)')\n\
             print('locked', flush=True)\n\
             sys.stdin.read()",
        ])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    let out = common::readme_example_output(&t, &script);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("database is locked"), "{said}");
    let published: Vec<_> = std::fs::read_dir(t.home().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(published.is_empty(), "{published:?}");
    drop(writer.stdin.take());
    assert!(writer.wait().unwrap().success());
    // The writer gone, the same command dumps.
    let out = common::readme_example_output(&t, &script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_example_dumps_sqlite_beside_the_folder_and_stores_the_postgresql_schedule() {
    if !have("sqlite3") || !have("tar") {
        return;
    }
    let t = TestHome::new();
    let app = app_with_database(&t, "create table t(x); insert into t values (42);");
    let _daemon = t.start_daemon();
    let example = &common::readme_examples("Database dumps")["dumps"];
    // The example's folder is this test's.
    let script = example.replace("/srv/app", &app.display().to_string());
    common::run_readme_example(&t, "dumps", &script);

    let archives: Vec<_> = std::fs::read_dir(t.home().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let archive = archives[0].to_str().unwrap();
    let sql = extract(archive, "app.sql", &t.work().join("out"));
    // The restore line of the example, in the extracted folder.
    let fresh = t.work().join("out/fresh.db");
    sh(Command::new("sqlite3")
        .arg(&fresh)
        .arg(format!(".read {}", sql.display())));
    assert_eq!(
        sh(Command::new("sqlite3").arg(&fresh).arg("select x from t")).trim(),
        "42"
    );
    // The PostgreSQL line made a schedule holding the command as an argv.
    let list = t.ctl(&["--json", "list"]);
    let list: Value = serde_json::from_str(list.stdout().trim()).unwrap();
    let schedule = list["data"]["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "app")
        .unwrap_or_else(|| panic!("no schedule app in {list}"))
        .clone();
    assert_eq!(
        schedule["source_commands"][0]["command"],
        json!(["pg_dump", "-h", "/run/postgresql", "-U", "app", "app"]),
        "{schedule}"
    );
}

#[test]
fn what_a_dump_leaves_running_is_killed_and_the_job_ends() {
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    let pid_file = t.work().join("helper.pid");
    // The helper keeps the dump's stderr open, and would for 1000 s.
    let script = format!(
        "sleep 1000 > /dev/null & echo $! > {}; echo data",
        pid_file.display()
    );
    let request = json!({
        "cmd": "run",
        "sources": [t.work().join("app")],
        "source_commands": [{"name": "db.sql", "command": ["sh", "-c", script]}]
    });
    let socket = t.socket();
    let (done, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let answer = Client::connect(&socket)
            .unwrap()
            .request(&request.to_string());
        let _ = done.send(answer);
    });
    let answer = answered
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the job waited for what its dump left running");
    assert_eq!(answer["ok"], true, "{answer}");
    let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    let file = extract(archive, "db.sql", &t.work().join("out"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "data\n");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()));
    // Gone, or a zombie waiting for a reaper.
    assert!(
        status.as_deref().map_or(true, |s| s.contains("State:\tZ")),
        "the helper still runs: {status:?}"
    );
}

/// Sends `request` on a connection of its own that waits for the answer as long as it takes;
/// the answer comes on the channel.
fn answer_of(t: &TestHome, request: &Value) -> std::sync::mpsc::Receiver<Value> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(t.socket()).unwrap();
    writeln!(stream, "{request}").unwrap();
    let (done, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut line)
            .unwrap();
        let _ = done.send(serde_json::from_str(&line).unwrap());
    });
    answered
}

/// A shell line that leaves `sleep 1000` running outside its process group (`setsid`),
/// holding its stdout, and goes on once that process has written its pid to `pid_file`.
fn escape_holding_stdout(pid_file: &Path) -> String {
    let pid_file = pid_file.display();
    format!(
        "setsid sh -c 'echo $$ > {pid_file}; exec sleep 1000' & \
         while [ ! -s {pid_file} ]; do sleep 0.05; done"
    )
}

/// Kills the process whose pid is in a file when the test ends, passed or not: it is out of
/// the daemon's reach.
struct KillOnDrop(String);

impl KillOnDrop {
    fn read(pid_file: &Path) -> Self {
        Self(std::fs::read_to_string(pid_file).unwrap().trim().to_owned())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.0).status();
    }
}

#[test]
fn a_dump_ends_when_its_command_exits_though_others_hold_its_output() {
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    let helper = t.work().join("helper.pid");
    let escaped = t.work().join("escaped.pid");
    // Both would keep the dump's stdout open for 1000 s: the helper in the command's group,
    // the escaped process out of it.
    let script = format!(
        "sleep 1000 & echo $! > {}; {}; echo data",
        helper.display(),
        escape_holding_stdout(&escaped)
    );
    let request = json!({
        "cmd": "run",
        "sources": [t.work().join("app")],
        "source_commands": [{"name": "db.sql", "command": ["sh", "-c", script]}]
    });
    let answered = answer_of(&t, &request);
    let answer = answered.recv_timeout(std::time::Duration::from_secs(120));
    let _escaped = KillOnDrop::read(&escaped);
    let answer = answer.expect("the job waited for the processes holding its dump's output");
    assert_eq!(answer["ok"], true, "{answer}");
    let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
    let file = extract(archive, "db.sql", &t.work().join("out"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "data\n");
    let pid = std::fs::read_to_string(&helper).unwrap();
    common::wait_for(common::PATIENCE, "the helper to be killed", || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()));
        // Gone, or a zombie waiting for a reaper.
        status
            .map_or(true, |s| s.contains("State:\tZ"))
            .then_some(())
    });
}

#[test]
fn cancel_ends_a_dump_whose_output_a_process_out_of_its_group_holds() {
    let t = TestHome::new();
    app_folder(&t);
    let _daemon = t.start_daemon();
    let escaped = t.work().join("escaped.pid");
    let script = format!(
        "{}; echo data; exec sleep 1000",
        escape_holding_stdout(&escaped)
    );
    let request = json!({
        "cmd": "run",
        "sources": [t.work().join("app")],
        "source_commands": [{"name": "db.sql", "command": ["sh", "-c", script]}]
    });
    let answered = answer_of(&t, &request);
    common::wait_for(common::PATIENCE, "the dump to start", || {
        std::fs::read_to_string(&escaped)
            .is_ok_and(|pid| pid.ends_with('\n'))
            .then_some(())
    });
    let _escaped = KillOnDrop::read(&escaped);
    t.ctl(&["cancel", "--name", "app"]).ok();
    let answer = answered
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the cancelled job waited for the process holding its dump's output");
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["data"]["sources"][0]["cancelled"], true, "{answer}");
    let backups = t.home().join("backups");
    assert!(archives_left(&backups).is_empty(), "{answer}");
}

fn archives_left(folder: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(folder)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

#[test]
fn a_dump_named_relative_to_its_folder_reads_that_folder_wherever_the_daemon_runs() {
    // `cd app && backupctl run --sources . --source-command "app.sql=sqlite3 app.db .dump"`:
    // the command ran in the daemon's working directory, where sqlite3 made an empty app.db,
    // and an empty dump was archived as a good backup.
    if !have("sqlite3") || !have("tar") {
        return;
    }
    let t = TestHome::new();
    let app = app_with_database(
        &t,
        "create table t(name text); insert into t values ('kept');",
    );
    std::fs::write(
        app.join("dump.sh"),
        "#!/bin/sh\nexec sqlite3 -bail app.db .dump\n",
    )
    .unwrap();
    std::fs::set_permissions(app.join("dump.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The daemon runs elsewhere: in a folder of its own.
    let elsewhere = t.work().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let _daemon = t.spawn_daemon_via(&["env", "-C", elsewhere.to_str().unwrap()], &[]);
    common::wait_until_answering(&t.socket());
    let dumps = ["app.sql=sqlite3 -bail app.db .dump", "script.sql=./dump.sh"];
    for dump in dumps {
        let (code, answer) = run_json(&t, &["--sources", "app", "--source-command", dump]);
        assert_eq!(code, 0, "{answer}");
        let archive = answer["data"]["sources"][0]["archive"].as_str().unwrap();
        let member = dump.split('=').next().unwrap();
        let sql = extract(archive, member, &t.work().join("out"));
        let text = std::fs::read_to_string(sql).unwrap();
        assert!(text.contains("'kept'"), "{dump}: {text}");
    }
    assert!(!elsewhere.join("app.db").exists());
}
