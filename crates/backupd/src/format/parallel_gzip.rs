//! Gzip on every core, as a sequence of gzip members (BGZF/mgzip-style).
//!
//! The input is cut into [`BLOCK_SIZE`] blocks; each block becomes one complete gzip member
//! (header, deflate data, CRC-32 and size), compressed by libdeflate on a pool of worker
//! threads. Members are independent, so no worker waits for another's dictionary or CRC. A
//! file of concatenated members is standard gzip (RFC 1952 §2.2): `gzip -d`, `tar -xzf` and
//! Python's `tarfile` read it whole, and every reader of ours uses a multi-member decoder
//! ([`super::decoder`]).
//!
//! Output is written on the caller's thread, so the inner writer need not be `Send` and sees
//! the members in order. At most `2 × workers` blocks are in flight, which bounds memory to a
//! few MiB. Workers start with the first full block: a small archive never starts a thread.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};

/// Bytes of input per member: large enough that each member's fresh start (no matches into
/// the block before) and its 18 bytes of header and trailer cost little in ratio, small
/// enough that every core gets work early and memory stays small.
pub const BLOCK_SIZE: usize = 1024 * 1024;

/// What a worker does with one block: [`gzip_member`], or a failing stand-in in tests.
type CompressBlock = fn(&mut Compressor, &[u8]) -> io::Result<Vec<u8>>;

/// One block for a worker.
#[derive(Debug)]
struct Job {
    data: Vec<u8>,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// A gzip encoder that compresses on `workers` threads and writes gzip members to `W`.
pub struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    level: CompressionLvl,
    workers: usize,
    block: Vec<u8>,
    pool: Option<Pool>,
    /// Replies of the blocks sent to the pool, in stream order.
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// Whether a member has been written; an empty input still needs one.
    wrote_member: bool,
    /// Set once a block or a write failed: the stream has a hole and must not go on.
    failed: bool,
    compress: CompressBlock,
}

impl<W: Write> std::fmt::Debug for ParallelGzEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzEncoder")
            .field("level", &i32::from(self.level))
            .field("workers", &self.workers)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// The number of compression threads: every core the process may use.
pub fn available_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// libdeflate's level for gzip `level` (0–9): the same numbers, 0 storing.
fn libdeflate_level(level: u32) -> CompressionLvl {
    let level = i32::try_from(level.min(9)).unwrap_or(9);
    CompressionLvl::new(level).unwrap_or_default()
}

impl<W: Write> ParallelGzEncoder<W> {
    /// An encoder at gzip `level` (0–9) using `workers` threads (at least one).
    pub fn new(inner: W, level: u32, workers: usize) -> Self {
        ParallelGzEncoder {
            inner: Some(inner),
            level: libdeflate_level(level),
            workers: workers.max(1),
            block: Vec::with_capacity(BLOCK_SIZE),
            pool: None,
            in_flight: VecDeque::new(),
            wrote_member: false,
            failed: false,
            compress: WORKER_COMPRESS,
        }
    }

    /// Compresses what is left and returns the inner writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.end_member()?;
        // An empty input still needs one (empty) member to be a gzip file.
        if !self.wrote_member {
            let member = gzip_member(&mut Compressor::new(self.level), &[]);
            self.write_member(member)?;
        }
        self.pool = None;
        self.inner
            .take()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    /// Ends the member being filled, if anything was written since the last one, and waits for
    /// the blocks in flight: everything written so far has then reached the inner writer, and
    /// the next bytes start a new member (readers join members, RFC 1952 2.2). Every block is
    /// a member of its own anyway; this only cuts one short.
    pub fn end_member(&mut self) -> io::Result<()> {
        self.check_usable()?;
        let last = std::mem::take(&mut self.block);
        if !last.is_empty() {
            if self.pool.is_none() {
                // Everything so far fitted in one block: no thread is worth starting.
                let member = gzip_member(&mut Compressor::new(self.level), &last);
                self.write_member(member)?;
            } else {
                self.send_block(last)?;
            }
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "the gzip stream already failed; nothing more can be written",
            ));
        }
        Ok(())
    }

    /// The inner writer; holds every byte written only right after [`Self::end_member`].
    pub fn get_mut(&mut self) -> io::Result<&mut W> {
        self.inner_mut()
    }

    fn inner_mut(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    fn send_block(&mut self, data: Vec<u8>) -> io::Result<()> {
        // Bounded: wait for the oldest block before queueing more than two per worker.
        while self.in_flight.len() >= 2 * self.workers {
            self.write_oldest()?;
        }
        let (reply, receive) = sync_channel(1);
        let level = self.level;
        let workers = self.workers;
        let compress = self.compress;
        let pool = self
            .pool
            .get_or_insert_with(|| Pool::start(level, workers, compress));
        if let Err(err) = pool.send(Job { data, reply }) {
            return self.fail(err);
        }
        self.in_flight.push_back(receive);
        // Write whatever is already done, so the output keeps flowing.
        while let Some(front) = self.in_flight.front() {
            match front.try_recv() {
                Ok(result) => {
                    self.in_flight.pop_front();
                    self.write_member(result)?;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return self.fail(worker_stopped()),
            }
        }
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(front) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match front.recv() {
            Ok(result) => self.write_member(result),
            Err(_) => self.fail(worker_stopped()),
        }
    }

    fn write_member(&mut self, result: io::Result<Vec<u8>>) -> io::Result<()> {
        let member = match result {
            Ok(member) => member,
            Err(err) => return self.fail(err),
        };
        if let Err(err) = self.inner_mut().and_then(|inner| inner.write_all(&member)) {
            return self.fail(err);
        }
        self.wrote_member = true;
        Ok(())
    }

    fn fail(&mut self, err: io::Error) -> io::Result<()> {
        self.failed = true;
        // Stop the workers now rather than let them finish blocks nobody will write.
        self.in_flight.clear();
        self.pool = None;
        Err(err)
    }
}

fn worker_stopped() -> io::Error {
    io::Error::other("a gzip compression thread stopped unexpectedly")
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_usable()?;
        let n = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
            self.send_block(data)?;
        }
        Ok(n)
    }

    /// Ends the partial block as a member of its own (so everything so far can be decoded),
    /// waits for every block and flushes the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        self.check_usable()?;
        if !self.block.is_empty() {
            let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
            self.send_block(data)?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.inner_mut()?.flush()
    }
}

/// One complete gzip member holding `data`.
fn gzip_member(compressor: &mut Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut member = vec![0; compressor.gzip_compress_bound(data.len())];
    let len = compressor
        .gzip_compress(data, &mut member)
        .map_err(io::Error::other)?;
    member.truncate(len);
    Ok(member)
}

/// In this crate's tests, a block that holds it fails in its worker thread, so that a test can
/// follow a worker's error through a whole backup run.
#[cfg(test)]
pub const WORKER_FAULT_MARKER: &[u8] = b"<backupd test: fail this block in its worker>";

/// What workers do: [`gzip_member`]; in tests, a block holding [`WORKER_FAULT_MARKER`] fails.
#[cfg(not(test))]
const WORKER_COMPRESS: CompressBlock = gzip_member;
#[cfg(test)]
const WORKER_COMPRESS: CompressBlock = failing_on_the_marker;

#[cfg(test)]
fn failing_on_the_marker(compressor: &mut Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    if data
        .windows(WORKER_FAULT_MARKER.len())
        .any(|window| window == WORKER_FAULT_MARKER)
    {
        return Err(io::Error::other("deflate failed in a worker (test fault)"));
    }
    gzip_member(compressor, data)
}

/// The worker threads and the queue that feeds them.
#[derive(Debug)]
struct Pool {
    jobs: Option<SyncSender<Job>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(level: CompressionLvl, workers: usize, compress: CompressBlock) -> Pool {
        let (jobs, queue) = sync_channel::<Job>(2 * workers);
        let queue = Arc::new(Mutex::new(queue));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..workers)
            .filter_map(|i| {
                let queue = Arc::clone(&queue);
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || work(&queue, &stop, level, compress))
                    .ok()
            })
            .collect();
        Pool {
            jobs: Some(jobs),
            stop,
            threads,
        }
    }

    fn send(&self, job: Job) -> io::Result<()> {
        if self.threads.is_empty() {
            return Err(io::Error::other("can't start a gzip compression thread"));
        }
        self.jobs
            .as_ref()
            .ok_or_else(worker_stopped)?
            .send(job)
            .map_err(|_| worker_stopped())
    }
}

impl Drop for Pool {
    /// Stops the workers (they skip queued blocks) and waits for them, so no thread outlives
    /// the encoder: at most the block each one is compressing is finished.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn work(
    queue: &Mutex<Receiver<Job>>,
    stop: &AtomicBool,
    level: CompressionLvl,
    compress: CompressBlock,
) {
    let mut compressor = Compressor::new(level);
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = compress(&mut compressor, &job.data);
        // The encoder may have gone (cancelled or failed): nobody to tell.
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::{Command, Stdio};

    /// Deterministic bytes: an incompressible run, then a very compressible one.
    fn mixed(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|i| {
                if (i / (300 * 1024)) % 2 == 0 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                } else {
                    b"the quick brown fox "[i % 20]
                }
            })
            .collect()
    }

    fn encode(data: &[u8], level: u32, workers: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::new(Vec::new(), level, workers);
        // Odd-sized writes, so blocks are cut in the middle of writes.
        for chunk in data.chunks(100_003) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    fn gunzip_members(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn gzip_cli(args: &[&str], input: &[u8]) -> std::process::Output {
        let mut child = Command::new("gzip")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gzip is installed");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        out
    }

    #[test]
    fn sizes_around_blocks_round_trip_through_gzip_and_a_member_decoder() {
        let sizes = [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            2 * BLOCK_SIZE,
            5 * BLOCK_SIZE + 12_345,
        ];
        for size in sizes {
            let data = mixed(size);
            let gz = encode(&data, 6, 3);
            assert_eq!(gunzip_members(&gz), data, "flate2, {size} bytes");
            let tested = gzip_cli(&["-t"], &gz);
            assert!(tested.status.success(), "gzip -t, {size} bytes: {tested:?}");
            let decoded = gzip_cli(&["-dc"], &gz);
            assert!(decoded.status.success(), "gzip -dc, {size} bytes");
            assert!(decoded.stdout == data, "gzip -dc output, {size} bytes");
        }
    }

    #[test]
    fn each_block_is_a_gzip_member_of_its_own() {
        let data = mixed(3 * BLOCK_SIZE + 1);
        let gz = encode(&data, 6, 2);
        // A single-member decoder stops after the first member: exactly the first block.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut first)
            .unwrap();
        assert_eq!(first, data[..BLOCK_SIZE]);
        let members = gz.windows(4).filter(|w| w == &[0x1f, 0x8b, 8, 0]).count();
        assert!(members >= 4, "{members} member headers");
    }

    /// Text of pseudo-random words: matches of every length and distance, so a higher level
    /// finds better ones (on `mixed`, every level ends the same: noise and one short period).
    fn words(len: usize) -> Vec<u8> {
        let vocabulary: Vec<&str> = "backup archive daemon schedule gzip member block worker \
             thread verify restore manifest rotate source destination checksum"
            .split_whitespace()
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(vocabulary[(state % 16) as usize].as_bytes());
            out.push(b' ');
            if state.is_multiple_of(7) {
                out.extend_from_slice(format!("{}\n", state % 1000).as_bytes());
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn ended_members_join_into_the_stream_and_an_idle_end_adds_none() {
        let first = mixed(BLOCK_SIZE * 3 + 7);
        let second = mixed(1000);
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 2);
        enc.end_member().unwrap();
        assert!(
            enc.get_mut().unwrap().is_empty(),
            "nothing written, nothing ended"
        );
        enc.write_all(&first).unwrap();
        enc.end_member().unwrap();
        let ended = enc.get_mut().unwrap().clone();
        enc.end_member().unwrap();
        assert_eq!(enc.get_mut().unwrap(), &ended, "an idle end adds nothing");
        assert_eq!(
            gunzip_members(&ended),
            first,
            "all of it reached the writer"
        );
        assert!(gzip_cli(&["-t"], &ended).status.success());
        enc.write_all(&second).unwrap();
        let gz = enc.finish().unwrap();
        assert!(
            gz.starts_with(&ended) && gz.len() > ended.len(),
            "members follow"
        );
        let decoded = gzip_cli(&["-dc"], &gz);
        assert!(decoded.status.success(), "gzip -dc: {decoded:?}");
        assert!(decoded.stdout == [first, second].concat(), "both parts");
    }

    #[test]
    fn every_level_round_trips_and_levels_still_matter() {
        let data = words(3 * 1024 * 1024);
        let mut sizes = Vec::new();
        for level in [0, 1, 6, 9] {
            let gz = encode(&data, level, 2);
            assert_eq!(gunzip_members(&gz), data, "level {level}");
            sizes.push(gz.len());
        }
        // Stored (0) is larger than the input; 1 larger than 9.
        assert!(sizes[0] > data.len(), "{sizes:?}");
        assert!(sizes[1] > sizes[3], "{sizes:?}");
    }

    #[test]
    fn the_ratio_stays_close_to_one_stream() {
        let data = mixed(6 * BLOCK_SIZE);
        let parallel = encode(&data, 6, 4).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!(
            parallel <= single + single / 20 + 1024,
            "members {parallel} vs one stream {single}"
        );
    }

    #[test]
    fn a_flush_mid_stream_keeps_the_stream_whole() {
        let data = mixed(BLOCK_SIZE + 70_000);
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 2);
        enc.write_all(&data[..50_000]).unwrap();
        enc.flush().unwrap();
        enc.write_all(&data[50_000..]).unwrap();
        enc.flush().unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip_members(&gz), data);
        assert!(gzip_cli(&["-t"], &gz).status.success());
    }

    /// Accepts `left` bytes, then fails every write.
    struct FailingWriter {
        left: usize,
    }

    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_writer_fails_the_stream_and_every_later_write() {
        let data = mixed(16 * 1024 * 1024);
        let mut enc = ParallelGzEncoder::new(FailingWriter { left: 300_000 }, 6, 2);
        let err = data
            .chunks(64 * 1024)
            .map(|chunk| enc.write_all(chunk))
            .find_map(Result::err)
            .expect("the write fails before 16 MiB are taken");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(enc.write_all(b"more").is_err());
        assert!(enc.finish().is_err());
    }

    #[test]
    fn a_block_that_fails_in_a_worker_reaches_the_writer() {
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 2);
        enc.write_all(&mixed(BLOCK_SIZE)).unwrap();
        // What a worker sends back when compression fails (or a thread is lost).
        let (reply, receive) = sync_channel(1);
        reply
            .send(Err(io::Error::other("deflate failed in a worker")))
            .unwrap();
        enc.in_flight.push_back(receive);
        let (lost_reply, lost_receive) = sync_channel::<io::Result<Vec<u8>>>(1);
        drop(lost_reply);
        let err = enc.flush().unwrap_err();
        assert!(
            err.to_string().contains("deflate failed in a worker"),
            "{err}"
        );
        assert!(enc.finish().is_err());

        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 2);
        enc.in_flight.push_back(lost_receive);
        let err = enc.flush().unwrap_err();
        assert!(err.to_string().contains("stopped unexpectedly"), "{err}");
    }

    /// Compresses like a worker, but panics on a block that starts with `b'!'`.
    fn panics_on_a_marked_block(compressor: &mut Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
        assert!(data.first() != Some(&b'!'), "a worker thread panics");
        gzip_member(compressor, data)
    }

    #[test]
    fn a_worker_thread_that_panics_is_an_error_of_the_stream_not_a_hang() {
        for workers in [1, 2] {
            let mut enc = ParallelGzEncoder::new(Vec::new(), 6, workers);
            enc.compress = panics_on_a_marked_block;
            let mut data = words(6 * BLOCK_SIZE);
            data[2 * BLOCK_SIZE] = b'!';
            let failed = data
                .chunks(64 * 1024)
                .map(|chunk| enc.write_all(chunk))
                .find_map(Result::err)
                .map_or_else(|| enc.finish().err(), Some)
                .expect("the lost block fails the stream");
            assert!(
                failed.to_string().contains("stopped unexpectedly"),
                "{workers} workers: {failed}"
            );
        }
    }

    #[test]
    fn dropping_mid_stream_stops_and_joins_the_workers() {
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 3);
        enc.write_all(&mixed(4 * BLOCK_SIZE)).unwrap();
        let stop = Arc::clone(&enc.pool.as_ref().expect("workers started").stop);
        // Dropping joins every worker; the stop flag they share is then ours alone.
        drop(enc);
        assert!(stop.load(Ordering::Relaxed));
        assert_eq!(Arc::strong_count(&stop), 1, "a worker outlived the encoder");
    }
}
