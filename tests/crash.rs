//! The crash test: SIGKILLs at random moments while clients create and delete schedules, ask
//! for backups, and scheduled backups run. After every kill the saved state is checked as the
//! daemon left it (the schedule file parses and holds every acknowledged change, every
//! acknowledged backup is there; the runs it started and never finished), then after the restart: leftover partial archives and temporary files are swept,
//! every archive that was final-named at the kill verifies, and every interrupted run is caught
//! up. The moments come from a seeded xorshift; the seed is printed and `CRASH_SEED` replays one.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use chrono::{DateTime, FixedOffset, Local};
use common::{Daemon, TestHome};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How many times the daemon is killed.
const KILLS: usize = 50;
/// Schedules the clients keep at most; beyond it they delete.
const MAX_SCHEDULES: usize = 6;
/// The seed used unless `CRASH_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x5EED_0010_2026;

/// A small xorshift64*: enough randomness for moments and choices, and no new crate.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the test knows of a schedule name from the replies it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Created with an ok reply, not deleted since.
    Present,
    /// Deleted with an ok reply (or never created).
    Absent,
    /// A request about it got no reply before the kill: either is fine.
    Unsure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every two seconds: runs all the time.
    Cron,
    /// A one-shot for the current minute: runs at once, then goes.
    Once,
    /// Daily at a time far off: never runs during the test.
    Daily,
}

#[derive(Debug, Default)]
struct Model {
    names: BTreeMap<String, (Kind, Known)>,
    next: u64,
    /// Archives of `run` requests that got an ok reply.
    backed_up: Vec<PathBuf>,
}

/// A protocol client that gives up quietly when the daemon dies.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(socket: &Path) -> Option<Self> {
        let stream = UnixStream::connect(socket).ok()?;
        stream.set_read_timeout(Some(common::PATIENCE)).ok()?;
        Some(Self {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        })
    }

    /// The reply, or `None` if the connection broke first.
    fn request(&mut self, request: &Value) -> Option<Value> {
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .ok()?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => serde_json::from_str(&line).ok(),
            _ => None,
        }
    }
}

/// One client's loop until `stop`: creates and deletes schedules, keeping the model true to
/// the replies.
fn client_loop(
    socket: &Path,
    source: &Path,
    model: &Mutex<Model>,
    stop: &AtomicBool,
    mut rng: Rng,
) {
    let Some(mut client) = Client::connect(socket) else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        // One request in eight is a backup now, besides the scheduled ones.
        if rng.below(8) == 0 {
            let name = {
                let mut model = model.lock().unwrap();
                model.next += 1;
                format!("r{}", model.next)
            };
            let request = json!({"cmd": "run", "sources": [source], "name": name});
            let Some(reply) = client.request(&request) else {
                return;
            };
            if reply["ok"] == true {
                let archive = reply["data"]["sources"][0]["archive"].as_str().unwrap();
                model.lock().unwrap().backed_up.push(archive.into());
            }
            continue;
        }
        let (request, name, previous, acknowledged) = {
            let mut model = model.lock().unwrap();
            let present: Vec<String> = model
                .names
                .iter()
                .filter(|(_, (_, known))| *known == Known::Present)
                .map(|(name, _)| name.clone())
                .collect();
            // Few schedules at a time, so that the runs stay short on two busy cores.
            if !present.is_empty() && (present.len() >= MAX_SCHEDULES || rng.below(10) < 3) {
                let name = present[rng.below(present.len() as u64) as usize].clone();
                let entry = model.names.get_mut(&name).unwrap();
                let previous = *entry;
                entry.1 = Known::Unsure;
                let request = json!({"cmd": "delete", "name": name});
                (request, name, previous, (previous.0, Known::Absent))
            } else {
                model.next += 1;
                let kind = match rng.below(10) {
                    0..=3 => Kind::Cron,
                    4..=6 => Kind::Once,
                    _ => Kind::Daily,
                };
                let name = format!("s{}", model.next);
                let request = match kind {
                    Kind::Cron => json!({"cmd": "create", "name": name,
                        "sources": [source], "cron": "*/2 * * * * *"}),
                    Kind::Daily => json!({"cmd": "create", "name": name,
                        "sources": [source], "daily": common::far_time()}),
                    Kind::Once => {
                        let now = Local::now().format("%H:%M");
                        json!({"cmd": "create",
                            "spec": format!("{};{now};{name}", source.display())})
                    }
                };
                model.names.insert(name.clone(), (kind, Known::Unsure));
                (request, name, (kind, Known::Absent), (kind, Known::Present))
            }
        };
        let reply = client.request(&request);
        let mut model = model.lock().unwrap();
        match reply {
            Some(reply) if reply["ok"] == true => {
                model.names.insert(name, acknowledged);
            }
            // Refused: nothing changed.
            Some(_) => {
                model.names.insert(name, previous);
            }
            // No reply: the daemon died; the request may or may not have been applied.
            None => return,
        }
        drop(model);
        std::thread::sleep(Duration::from_millis(20 + rng.below(60)));
    }
}

/// A run the daemon started and had not finished when it was killed.
#[derive(Debug, Clone)]
struct Owed {
    kind: Kind,
    /// When the daemon was killed: the run that catches up starts after it.
    started: DateTime<FixedOffset>,
}

/// What went wrong, by check: each a list of details, so that the report says how often.
#[derive(Debug, Default)]
struct Failures(BTreeMap<&'static str, Vec<String>>);

impl Failures {
    /// Notes a failure once: a leftover that survives several restarts counts once.
    fn add(&mut self, check: &'static str, detail: String) {
        let details = self.0.entry(check).or_default();
        if !details.contains(&detail) {
            eprintln!("crash test: {check}: {detail}");
            details.push(detail);
        }
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn is_final_archive(name: &str) -> bool {
    name.ends_with(".tar.gz") || name.ends_with(".tar.zst") || name.ends_with(".tar")
}

/// Files in `dir` named like a leftover (`*.partial`, or a `.backupd-….tmp` or older `.tmp…`
/// file of an atomic write)
/// whose last change is not after `before`: left by the killed daemon, not new.
fn leftovers(dir: &Path, before: SystemTime) -> Vec<PathBuf> {
    names_in(dir)
        .into_iter()
        .filter(|n| {
            n.ends_with(".partial")
                || n.starts_with(".tmp")
                || (n.starts_with(".backupd-") && n.ends_with(".tmp"))
        })
        .map(|n| dir.join(n))
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|changed| changed <= before)
        })
        .collect()
}

/// The saved schedules by name, or why the file cannot be read.
fn saved_schedules(home: &Path) -> Result<BTreeMap<String, Value>, String> {
    let path = home.join("schedules.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.to_string()),
    };
    let file: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text:?}"))?;
    let schedules = file["schedules"]
        .as_array()
        .ok_or_else(|| format!("no schedules array: {text:?}"))?;
    Ok(schedules
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or_default().to_owned(), s.clone()))
        .collect())
}

fn has_archive_of(backups: &Path, name: &str) -> bool {
    let prefix = format!("{name}_");
    names_in(backups)
        .iter()
        .any(|n| n.starts_with(&prefix) && is_final_archive(n))
}

fn timestamp(value: &Value) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(value.as_str()?).ok()
}

/// Whether an owed run has happened since: a one-shot is gone with its archive written, a
/// recurring schedule has a run that started after the interrupted one.
fn caught_up(saved: &BTreeMap<String, Value>, backups: &Path, name: &str, owed: &Owed) -> bool {
    match (saved.get(name), owed.kind) {
        (None, Kind::Once) => has_archive_of(backups, name),
        (None, _) => false,
        (Some(schedule), _) => {
            timestamp(&schedule["last_run"]["started"]).is_some_and(|s| s > owed.started)
        }
    }
}

fn kill(mut daemon: Daemon) {
    daemon.signal("KILL");
    daemon.wait();
}

#[test]
fn sigkills_at_random_moments_lose_nothing_acknowledged() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("crash test seed: {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let t = TestHome::new();
    // Small, so that runs take milliseconds and often end between kills; some bigger files
    // so that some kills land mid-write.
    let source = t.work().join("src");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    for i in 0..8u64 {
        let mut bytes_rng = Rng::new(seed ^ i);
        let bytes: Vec<u8> = (0..(16 << 10) * (i + 1))
            .map(|_| bytes_rng.next() as u8)
            .collect();
        std::fs::write(source.join(format!("sub/f{i}")), bytes).unwrap();
    }
    let source = source.canonicalize().unwrap();

    let model = Arc::new(Mutex::new(Model::default()));
    let mut owed: BTreeMap<String, Owed> = BTreeMap::new();
    let mut verified: BTreeSet<String> = BTreeSet::new();
    let mut failures = Failures::default();
    let began = Instant::now();
    let mut restarts_checked = 0;
    let mut caught_up_runs = 0;
    // When the daemon last died: files changed no later were left by a dead daemon.
    let mut killed_at = SystemTime::UNIX_EPOCH;

    for kill_number in 1..=KILLS {
        let daemon = t.spawn_daemon(&[]);
        // One kill in five comes during start-up, before the daemon answers.
        let clients = if rng.below(5) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(40)));
            None
        } else {
            common::wait_until_answering(&t.socket());
            restarts_checked += 1;
            caught_up_runs +=
                check_after_restart(&t, killed_at, &mut owed, &mut verified, &mut failures);
            let stop = Arc::new(AtomicBool::new(false));
            let clients: Vec<_> = (0..2)
                .map(|_| {
                    let (socket, source) = (t.socket(), source.clone());
                    let (model, stop) = (Arc::clone(&model), Arc::clone(&stop));
                    let rng = Rng::new(rng.next());
                    std::thread::spawn(move || client_loop(&socket, &source, &model, &stop, rng))
                })
                .collect();
            std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
            Some((stop, clients))
        };
        kill(daemon);
        // The clients see their connections break (or stop between requests).
        if let Some((stop, clients)) = clients {
            stop.store(true, Ordering::Relaxed);
            for client in clients {
                client.join().unwrap();
            }
        }
        killed_at = SystemTime::now();
        check_after_kill(&t, &model, &mut owed, &mut failures, kill_number);
    }
    // A last start, so that the last kill's leftovers and owed runs are checked too.
    let _daemon = t.start_daemon();
    caught_up_runs += check_after_restart(&t, killed_at, &mut owed, &mut verified, &mut failures);
    println!(
        "crash test: {KILLS} kills, {restarts_checked} restarts with clients, \
         {caught_up_runs} interrupted runs caught up, {} archives verified, {:.1}s",
        verified.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        verified.len() >= 5,
        "too few archives to have tested anything: {verified:?}"
    );
    let summary: Vec<String> = failures
        .0
        .iter()
        .map(|(check, details)| format!("{check}: {} times, e.g. {}", details.len(), details[0]))
        .collect();
    assert!(summary.is_empty(), "seed {seed}:\n{}", summary.join("\n"));
}

/// Checks the state the killed daemon left on disk, and notes the runs it owes.
fn check_after_kill(
    t: &TestHome,
    model: &Mutex<Model>,
    owed: &mut BTreeMap<String, Owed>,
    failures: &mut Failures,
    kill_number: usize,
) {
    let home = t.home();
    let backups = home.join("backups");
    let saved = match saved_schedules(&home) {
        Ok(saved) => saved,
        Err(e) => {
            // Nothing else can be checked against a file that does not parse.
            panic!("kill {kill_number}: the schedule file does not parse: {e}");
        }
    };
    let mut model = model.lock().unwrap();
    for archive in &model.backed_up {
        if !archive.exists() {
            failures.add(
                "acknowledged backup lost",
                format!("kill {kill_number}: {}", archive.display()),
            );
        }
    }
    for (name, (kind, known)) in model.names.iter_mut() {
        let is_saved = saved.contains_key(name);
        // A one-shot is removed once its run ended: its archive is there.
        let ran = *kind == Kind::Once && has_archive_of(&backups, name);
        match *known {
            Known::Present if !is_saved && !ran => failures.add(
                "acknowledged create lost",
                format!("kill {kill_number}: {name} ({kind:?})"),
            ),
            Known::Absent if is_saved => failures.add(
                "acknowledged delete undone",
                format!("kill {kill_number}: {name}"),
            ),
            _ => {}
        }
        // What was unsure is whatever the daemon saved; a one-shot that ran is done.
        *known = if is_saved {
            Known::Present
        } else {
            Known::Absent
        };
    }
    // A run was going on if the daemon saved it as started, or, seen from outside whatever the
    // daemon saved, if a partial archive of the schedule's name is there.
    let writing: BTreeSet<String> = names_in(&backups)
        .iter()
        .filter(|n| n.ends_with(".partial"))
        .filter_map(|n| n.split_once('_').map(|(name, _)| name.to_owned()))
        .collect();
    let killed = Local::now().fixed_offset();
    for (name, schedule) in &saved {
        if schedule["started_run"].is_null() && !writing.contains(name) {
            continue;
        }
        let kind = match schedule["kind"].as_str() {
            Some("once") => Kind::Once,
            Some("daily") => Kind::Daily,
            _ => Kind::Cron,
        };
        // Owed: a run that starts after this kill. One owed since an earlier kill stays so.
        owed.entry(name.clone()).or_insert(Owed {
            kind,
            started: killed,
        });
    }
    // A recurring schedule deleted since owes nothing; a one-shot gone must have run.
    owed.retain(|name, run| saved.contains_key(name) || run.kind == Kind::Once);
}

/// After a restart: the killed daemon's leftovers are gone, the archives it left final-named
/// verify, and every run it owed is caught up. Returns how many were.
fn check_after_restart(
    t: &TestHome,
    killed_at: SystemTime,
    owed: &mut BTreeMap<String, Owed>,
    verified: &mut BTreeSet<String>,
    failures: &mut Failures,
) -> usize {
    let home = t.home();
    let backups = home.join("backups");
    // The start-up sweep runs before the socket answers; files changed before the kill are
    // what the killed daemon left (the new one may have begun runs of its own since).
    for dir in [&home, &backups] {
        for leftover in leftovers(dir, killed_at) {
            let check = if leftover.extension().is_some_and(|e| e == "partial") {
                "partial archive survived the restart"
            } else {
                "temporary file survived the restart"
            };
            failures.add(check, leftover.display().to_string());
        }
    }
    let mut client = Client::connect(&t.socket()).expect("connect after restart");
    // Only archives final-named while the daemon was dead: one named since may still be
    // getting its manifest from a live run.
    let archives: Vec<String> = names_in(&backups)
        .into_iter()
        .filter(|n| is_final_archive(n) && !verified.contains(n))
        .filter(|n| {
            std::fs::metadata(backups.join(n))
                .and_then(|m| m.modified())
                .is_ok_and(|changed| changed <= killed_at)
        })
        .collect();
    for archive in archives {
        let reply = client
            .request(&json!({"cmd": "verify", "archive": archive}))
            .expect("verify answered");
        let status = reply["data"]["archives"][0]["status"].clone();
        if reply["ok"] == true && status == "ok" {
            verified.insert(archive);
        } else {
            let check = if status == "manifest_missing" {
                // A kill between an archive's rename and its manifest write: the start-up
                // repair rebuilds it, and verify waits for that.
                "final archive without manifest after the restart"
            } else {
                "final archive fails verify"
            };
            failures.add(check, format!("{archive}: {status} {}", reply["error"]));
            verified.insert(archive); // reported once
        }
    }
    // Every owed run is caught up, and said so in the log.
    let deadline = Instant::now() + common::PATIENCE;
    let mut done = Vec::new();
    loop {
        let saved = saved_schedules(&home).unwrap();
        owed.retain(|name, run| {
            let caught_up = caught_up(&saved, &backups, name, run);
            if caught_up {
                done.push(name.clone());
            }
            !caught_up
        });
        if owed.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = t.log();
    let caught_up = done.len();
    for name in done {
        // Killed after reopening it but before running it, the next start sees a plain miss.
        let said = log.contains(&format!("Interrupted run of {name} ("))
            || log.contains(&format!("Catching up missed run of {name} "));
        if !said {
            failures.add("catch-up not logged", name);
        }
    }
    for (name, run) in std::mem::take(owed) {
        failures.add(
            "interrupted run not caught up",
            format!("{name} ({:?}) started {}", run.kind, run.started),
        );
    }
    caught_up
}
