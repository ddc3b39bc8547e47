//! Shared harness: builds the real binaries, gives each test its own home in a temporary
//! directory, starts `backupd` there and drives it through `backupctl` or the raw socket.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod http_receiver;
pub mod moto;
pub mod ports;
pub mod smtp;
pub mod terminal;
pub mod watcher;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Generous bound for anything that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The directory holding freshly built `backupd` and `backupctl`. Built once per test binary
/// so that a test never runs against stale executables.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // This test runs from <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let mut build = Command::new(env!("CARGO"));
        // Into the test's own target folder, also when the test binary is started by hand
        // without CARGO_TARGET_DIR: else the build goes elsewhere (a cold build that looks
        // like a hung test) and the test drives stale binaries.
        build
            .args(["build", "--quiet", "-p", "backupd", "-p", "backupctl"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        profile_dir
    })
}

pub fn backupd_bin() -> PathBuf {
    bin_dir().join("backupd")
}

pub fn backupctl_bin() -> PathBuf {
    bin_dir().join("backupctl")
}

/// Sets the umask users usually have (022), once for the whole test process and the daemons it
/// starts: tests create homes and trees with default modes, and the daemon rightly refuses a
/// home that others can write, which is what a umask of 0 (as some CI runners have) makes.
fn normalize_umask() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    });
}

/// A temporary home: `<tmp>/home` is the daemon's home, `<tmp>` the user's working directory.
pub struct TestHome {
    dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> Self {
        normalize_umask();
        Self {
            dir: tempfile::Builder::new()
                .prefix("bkd")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// The working directory tests run `backupctl` in.
    pub fn work(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn socket(&self) -> PathBuf {
        self.home().join("backupd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home().join("logs/backupd.log")).unwrap_or_default()
    }

    pub fn client_log(&self) -> String {
        std::fs::read_to_string(self.home().join("logs/backupctl.log")).unwrap_or_default()
    }

    /// A `backupctl` command set up for this home, run from [`Self::work`].
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(backupctl_bin());
        command
            .args(args)
            .current_dir(self.work())
            .env("BACKUPD_HOME", self.home())
            .env_remove("BACKUPD_SOCKET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    pub fn ctl(&self, args: &[&str]) -> Ctl {
        Ctl(self.ctl_command(args).output().expect("run backupctl"))
    }

    /// `backupctl ARGS` giving the daemon `answer_timeout` seconds to answer
    /// (`BACKUPCTL_ANSWER_TIMEOUT`), under `timeout 60`: a client waiting for ever fails the
    /// test with exit 124.
    pub fn ctl_impatient(&self, args: &[&str], answer_timeout: u64) -> Ctl {
        let command = self.ctl_command(args);
        let out = Command::new("timeout")
            .arg("60")
            .arg(command.get_program())
            .args(command.get_args())
            .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .current_dir(self.work())
            .env("BACKUPCTL_ANSWER_TIMEOUT", answer_timeout.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run backupctl under timeout");
        Ctl(out)
    }

    /// Starts `backupd` in the foreground as a child of the test, and waits until it answers.
    pub fn start_daemon(&self) -> Daemon {
        let daemon = self.spawn_daemon(&[]);
        wait_until_answering(&self.socket());
        daemon
    }

    /// Spawns `backupd` with extra arguments, without waiting for it.
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        self.spawn_daemon_via(&[], args)
    }

    /// Spawns `backupd` through a wrapper command (such as `setpriv` to drop privileges).
    pub fn spawn_daemon_via(&self, wrapper: &[&str], args: &[&str]) -> Daemon {
        let stderr =
            std::fs::File::create(self.work().join("daemon.stderr")).expect("create daemon.stderr");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(backupd_bin());
                command
            }
            None => Command::new(backupd_bin()),
        };
        let child = command
            .arg("--home")
            .arg(self.home())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn backupd");
        Daemon { child }
    }

    pub fn daemon_stderr(&self) -> String {
        std::fs::read_to_string(self.work().join("daemon.stderr")).unwrap_or_default()
    }
}

/// Stops a daemon started by `backupctl start` when the test ends, even if it panics.
pub struct StopOnDrop<'a>(pub &'a TestHome);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if self.0.socket().exists() {
            let _ = self.0.ctl_command(&["stop"]).output();
        }
    }
}

/// The output of one `backupctl` run.
#[derive(Debug)]
pub struct Ctl(pub Output);

impl Ctl {
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("exited normally")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(
            self.code(),
            0,
            "backupctl failed: stdout {:?} stderr {:?}",
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
}

/// A `backupd` child process.
pub struct Daemon {
    child: Child,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, within [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "backupd did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls with `hello` until the daemon answers.
#[track_caller]
pub fn wait_until_answering(socket: &Path) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(mut client) = Client::connect(socket)
            && client.request(r#"{"cmd":"hello"}"#)["ok"] == Value::Bool(true)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backupd never answered on {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw protocol client over the socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(socket: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to daemon");
    }

    /// Reads one response line as JSON.
    pub fn read_response(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read from daemon");
        assert!(n > 0, "daemon closed the connection");
        assert!(line.ends_with('\n'), "response is one whole line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    /// Sends one request line (newline added) and reads its response.
    pub fn request(&mut self, line: &str) -> Value {
        self.send_bytes(format!("{line}\n").as_bytes());
        self.read_response()
    }

    /// A second handle on the connection, for writing from another thread.
    pub fn writer_clone(&self) -> UnixStream {
        self.writer.try_clone().expect("clone socket")
    }

    /// Reads until the daemon closes the connection.
    pub fn read_to_end(&mut self) -> String {
        let mut rest = String::new();
        let _ = self.reader.read_to_string(&mut rest);
        rest
    }
}

/// The tree cases every round trip needs: nested folders, an empty folder, non-ASCII names,
/// a path over 100 bytes, an executable and a private file. Tests add their own cases.
pub fn base_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = |p: &str| std::fs::create_dir_all(root.join(p)).expect("create folder");
    let file = |p: &str, content: &[u8]| std::fs::write(root.join(p), content).expect("write");
    dir("docs/nested/deeper");
    dir("empty");
    dir("café");
    file("docs/readme.txt", b"hello\n");
    file(
        "docs/nested/deeper/data.bin",
        &(0..=255u8).cycle().take(300_000).collect::<Vec<_>>(),
    );
    file("café/日本.txt", "unicode ✓\n".as_bytes());
    let long_dir = format!("long/{}", "d".repeat(60));
    dir(&long_dir);
    file(
        &format!("{long_dir}/{}.txt", "n".repeat(120)),
        b"long path\n",
    );
    file("run.sh", b"#!/bin/sh\necho hi\n");
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    mode("run.sh", 0o755);
    file("secret", b"s");
    mode("secret", 0o600);
}

/// A source folder `<work>/<dir>` whose one file is `size` bytes of sparse zeros: as slow to
/// archive as its size, without using the disk. The home's configuration (written here:
/// call this before the daemon starts) has backups read holes as zeros (`sparse_files =
/// false`), else the file would be stored as a sparse entry of no data, at once.
pub fn sparse_source(t: &TestHome, dir: &str, size: u64) -> PathBuf {
    assert!(
        !t.socket().exists(),
        "sparse_source configures the daemon: call it before the daemon starts"
    );
    std::fs::create_dir_all(t.home()).expect("create the home");
    let config = t.home().join("backupd.toml");
    let rest = std::fs::read_to_string(&config).unwrap_or_default();
    if !rest.starts_with("sparse_files = false\n") {
        // First: a top-level key after a table would belong to the table.
        std::fs::write(&config, format!("sparse_files = false\n{rest}")).expect("configure");
    }
    let src = t.work().join(dir);
    std::fs::create_dir_all(&src).expect("create source");
    std::fs::File::create(src.join("sparse"))
        .and_then(|file| file.set_len(size))
        .expect("create sparse file");
    src
}

/// Big enough that a backup of it outlasts any test watching it.
pub const ENDLESS: u64 = 64 << 30;

/// `HH:MM` twelve hours from now: a one-shot schedule at that time does not fire during a test.
pub fn far_time() -> String {
    (chrono::Local::now() + chrono::TimeDelta::hours(12))
        .format("%H:%M")
        .to_string()
}

/// Log lines without their `[dd/mm/yyyy hh:mm] ` prefix, after checking that every line has it.
#[track_caller]
pub fn log_messages(log: &str) -> Vec<String> {
    log.lines()
        .map(|line| {
            let bytes = line.as_bytes();
            let stamped = bytes.len() > 19
                && bytes[0] == b'['
                && bytes[3] == b'/'
                && bytes[6] == b'/'
                && bytes[11] == b' '
                && bytes[14] == b':'
                && bytes[17] == b']'
                && bytes[18] == b' '
                && [1, 2, 4, 5, 7, 8, 9, 10, 12, 13, 15, 16]
                    .iter()
                    .all(|&i| bytes[i].is_ascii_digit());
            assert!(stamped, "log line without [dd/mm/yyyy hh:mm]: {line:?}");
            line[19..].to_owned()
        })
        .collect()
}

/// What an entry is, for comparing trees: kind, content or link target, mode, mtime.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        content: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Link {
        target: PathBuf,
    },
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let mode = meta.mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                Entry::Link {
                    target: std::fs::read_link(&path).expect("read_link"),
                }
            } else if meta.is_dir() {
                stack.push(path.clone());
                Entry::Dir { mode }
            } else if meta.is_file() {
                Entry::File {
                    content: std::fs::read(&path).expect("read"),
                    mode,
                    mtime: meta.mtime(),
                }
            } else {
                continue; // FIFOs are not archived
            };
            entries.insert(rel, kind);
        }
    }
    entries
}

/// The SHA-256 of a file as `sha256sum` prints it.
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("hex")[..64].to_owned()
}

/// A home whose daemon ran once and stopped, leaving a schedule `far` (not due soon) of
/// `<work>/src` into `<work>/elsewhere`, a destination outside the home: for what the next
/// start finds there. Returns that destination (not created yet).
pub fn stopped_with_a_schedule_elsewhere(t: &TestHome) -> PathBuf {
    std::fs::create_dir(t.work().join("src")).expect("create the source");
    let elsewhere = t.work().join("elsewhere");
    let mut daemon = t.start_daemon();
    t.ctl(&[
        "create",
        "--source",
        "src",
        "--name",
        "far",
        "--daily",
        &far_time(),
        "--destination",
        elsewhere.to_str().expect("a UTF-8 temp path"),
    ])
    .ok();
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    elsewhere
}

/// Threads of process `pid` whose name starts with `prefix`.
pub fn threads_of(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Polls `check` until it returns `Some`, for at most `limit`.
#[track_caller]
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
pub mod s3;

/// `size` pseudo-random bytes: incompressible, and the same for the same `seed`.
pub fn incompressible(size: usize, seed: u64) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed;
    (0..size)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// `backupctl --json run ARGS`, which must succeed; the path of the first source's archive.
pub fn run_for_archive(t: &TestHome, args: &[&str]) -> PathBuf {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let (code, answer) = ctl_json(t, &full);
    assert_eq!(code, 0, "{answer}");
    PathBuf::from(
        answer["data"]["sources"][0]["archive"]
            .as_str()
            .unwrap_or_else(|| panic!("no archive in {answer}")),
    )
}

/// The code blocks of README's section `heading` (`## …`) that a `<!-- readme-example: NAME -->`
/// line names, by name: the examples a test runs.
pub fn readme_examples(heading: &str) -> BTreeMap<String, String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading} section"));
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let mut examples = BTreeMap::new();
    let mut rest = section;
    while let Some(marker) = rest.find("<!-- readme-example: ") {
        let after = &rest[marker + "<!-- readme-example: ".len()..];
        let name = &after[..after.find(" -->").expect("closed marker")];
        let code = &after[after.find("```").expect("a code block after the marker")..];
        let code = &code[code.find('\n').expect("a code block's first line") + 1..];
        let close = code.find("```").expect("closed code block");
        examples.insert(name.to_owned(), code[..close].to_owned());
        rest = &code[close + 3..];
    }
    examples
}

/// Runs a README example with bash, as a user would: `backupctl` on `PATH`, `BACKUPD_HOME` set
/// to the test's home, in the test's working folder.
#[track_caller]
pub fn run_readme_example(t: &TestHome, name: &str, script: &str) -> String {
    let out = readme_example_output(t, script);
    assert!(
        out.status.success(),
        "README example {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What [`run_readme_example`] runs, however it ends.
pub fn readme_example_output(t: &TestHome, script: &str) -> std::process::Output {
    let path = format!(
        "{}:{}",
        backupctl_bin()
            .parent()
            .expect("backupctl lives in a folder")
            .display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(t.work())
        .env("HOME", t.work())
        .env("BACKUPD_HOME", t.home())
        .env("PATH", path)
        .output()
        .expect("run bash")
}

/// `backupctl --json run ARGS`: the exit code and the answer line.
pub fn run_json(t: &TestHome, args: &[&str]) -> (i32, serde_json::Value) {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    ctl_json(t, &full)
}

/// `backupctl --json ARGS`: the exit code and the answer line.
pub fn ctl_json(t: &TestHome, args: &[&str]) -> (i32, serde_json::Value) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = t.ctl(&full);
    let answer = serde_json::from_str(out.stdout().trim()).unwrap_or_else(|e| {
        panic!(
            "bad JSON {:?} ({e}); stderr {:?}",
            out.stdout(),
            out.stderr()
        )
    });
    (out.code(), answer)
}

/// The file name of the archive a run's answer reports for its first source.
pub fn first_archive_name(answer: &serde_json::Value) -> String {
    let path = answer["data"]["sources"][0]["archive"]
        .as_str()
        .unwrap_or_else(|| panic!("no archive in {answer}"));
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("no file name in {path}"))
        .to_owned()
}
