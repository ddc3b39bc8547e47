//! Gzip on every core, pigz-style: one standard gzip stream whose deflate data is compressed
//! in blocks on a pool of worker threads.
//!
//! The input is cut into [`BLOCK_SIZE`] blocks. Each block is deflated (raw, no zlib header)
//! with the last 32 KiB of the block before it as preset dictionary, so matches reach across
//! the cut and the ratio stays that of one stream; every block but the last ends with a sync
//! flush (byte-aligned, not final), the last one with the final deflate block. The blocks are
//! written in order between one gzip header and one trailer whose CRC-32 is combined from the
//! blocks' own. Any gzip reader (`gzip -d`, `tar -xzf`, Python's `tarfile`) reads the result.
//!
//! Output is written on the caller's thread, so the inner writer need not be `Send` and sees
//! the bytes in order. At most `2 × workers` blocks are in flight, which bounds memory to a
//! few MiB. Workers start with the first full block: a small archive never starts a thread.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Bytes of input per block: large enough that the 32 KiB dictionary and the sync flush cost
/// little, small enough that every core gets work early.
pub const BLOCK_SIZE: usize = 256 * 1024;

/// The deflate window: how far back a match may reach, so the dictionary each block needs.
const WINDOW: usize = 32 * 1024;

/// What a worker returns for one block.
#[derive(Debug)]
struct Deflated {
    bytes: Vec<u8>,
    crc: Crc,
}

/// One block for a worker.
#[derive(Debug)]
struct Job {
    data: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Deflated>>,
}

/// A gzip encoder that compresses on `workers` threads and writes one gzip stream to `W`.
pub struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    level: Compression,
    workers: usize,
    block: Vec<u8>,
    /// The last [`WINDOW`] bytes before `block`; empty for the first block.
    dictionary: Vec<u8>,
    pool: Option<Pool>,
    /// Replies of the blocks sent to the pool, in stream order.
    in_flight: VecDeque<Receiver<io::Result<Deflated>>>,
    header_written: bool,
    crc: Crc,
    total_in: u64,
    /// Set once a block or a write failed: the stream has a hole and must not go on.
    failed: bool,
    /// Members whose trailer is written.
    members_ended: u64,
}

impl<W: Write> std::fmt::Debug for ParallelGzEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzEncoder")
            .field("level", &self.level.level())
            .field("workers", &self.workers)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// The number of compression threads: every core the process may use.
pub fn available_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl<W: Write> ParallelGzEncoder<W> {
    /// An encoder at gzip `level` (0–9) using `workers` threads (at least one).
    pub fn new(inner: W, level: u32, workers: usize) -> Self {
        ParallelGzEncoder {
            inner: Some(inner),
            level: Compression::new(level.min(9)),
            workers: workers.max(1),
            block: Vec::with_capacity(BLOCK_SIZE),
            dictionary: Vec::new(),
            pool: None,
            in_flight: VecDeque::new(),
            header_written: false,
            crc: Crc::new(),
            total_in: 0,
            failed: false,
            members_ended: 0,
        }
    }

    /// Compresses what is left, writes the trailer and returns the inner writer (not
    /// flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.check_usable()?;
        // An empty stream is still one (empty) member; after `end_member` nothing is open.
        if self.member_open() || self.members_ended == 0 {
            self.finish_member()?;
        }
        self.pool = None;
        self.inner
            .take()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    /// Ends the current gzip member, if anything was written since the last one, so that the
    /// next bytes start a new member: gzip readers join members into one stream (RFC 1952
    /// 2.2). Everything written so far then has reached the inner writer.
    pub fn end_member(&mut self) -> io::Result<()> {
        self.check_usable()?;
        if self.member_open() {
            self.finish_member()?;
        }
        Ok(())
    }

    fn member_open(&self) -> bool {
        self.header_written || !self.block.is_empty() || !self.in_flight.is_empty()
    }

    /// Compresses what is left of this member and writes its trailer; the next write starts
    /// a fresh member with no dictionary.
    fn finish_member(&mut self) -> io::Result<()> {
        let last = std::mem::take(&mut self.block);
        if self.pool.is_none() {
            // Everything fitted in one block: no thread is worth starting.
            let deflated = deflate_block(
                &mut Compress::new(self.level, false),
                &last,
                &self.dictionary,
                true,
            );
            self.write_deflated(deflated)?;
        } else {
            self.send_block(last, true)?;
            while !self.in_flight.is_empty() {
                self.write_oldest()?;
            }
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        // ISIZE is the input size modulo 2^32 (RFC 1952).
        trailer[4..].copy_from_slice(&(self.total_in as u32).to_le_bytes());
        self.inner_mut()?.write_all(&trailer)?;
        self.header_written = false;
        self.crc = Crc::new();
        self.total_in = 0;
        self.dictionary.clear();
        self.members_ended += 1;
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

    fn write_header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        // XFL says "slowest" for level 9 and "fastest" for level 1, as gzip does; OS = Unix.
        let xfl = match self.level.level() {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3];
        self.inner_mut()?.write_all(&header)?;
        self.header_written = true;
        Ok(())
    }

    /// Sends the full block to the pool, keeping its tail as the next block's dictionary.
    fn send_full_block(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
        self.send_block(data, false)
    }

    fn send_block(&mut self, data: Vec<u8>, last: bool) -> io::Result<()> {
        // Bounded: wait for the oldest block before queueing more than two per worker.
        while self.in_flight.len() >= 2 * self.workers {
            self.write_oldest()?;
        }
        let tail = &data[data.len().saturating_sub(WINDOW)..];
        let next_dictionary = if data.len() >= WINDOW {
            tail.to_vec()
        } else {
            // A short (flushed) block: the window spans it and the one before.
            let mut joined = std::mem::take(&mut self.dictionary);
            joined.extend_from_slice(tail);
            joined[joined.len().saturating_sub(WINDOW)..].to_vec()
        };
        let dictionary = std::mem::replace(&mut self.dictionary, next_dictionary);
        let (reply, receive) = sync_channel(1);
        let level = self.level;
        let workers = self.workers;
        let pool = self.pool.get_or_insert_with(|| Pool::start(level, workers));
        pool.send(Job {
            data,
            dictionary,
            last,
            reply,
        })?;
        self.in_flight.push_back(receive);
        // Write whatever is already done, so the output keeps flowing.
        while let Some(front) = self.in_flight.front() {
            match front.try_recv() {
                Ok(result) => {
                    self.in_flight.pop_front();
                    self.write_deflated(result)?;
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
            Ok(result) => self.write_deflated(result),
            Err(_) => self.fail(worker_stopped()),
        }
    }

    fn write_deflated(&mut self, result: io::Result<Deflated>) -> io::Result<()> {
        let deflated = match result {
            Ok(deflated) => deflated,
            Err(err) => return self.fail(err),
        };
        let written = self.write_header().and_then(|()| {
            let inner = self.inner_mut()?;
            inner.write_all(&deflated.bytes)
        });
        if let Err(err) = written {
            return self.fail(err);
        }
        self.crc.combine(&deflated.crc);
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
        self.total_in += n as u64;
        if self.block.len() == BLOCK_SIZE {
            self.send_full_block()?;
        }
        Ok(n)
    }

    /// Sends the partial block (sync-flushed, so everything so far can be decoded), waits for
    /// every block and flushes the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        self.check_usable()?;
        if !self.block.is_empty() {
            let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
            self.send_block(data, false)?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.inner_mut()?.flush()
    }
}

/// Deflates one block: raw deflate primed with `dictionary`, ended by a sync flush or, for the
/// `last` block, by the final deflate block.
fn deflate_block(
    deflate: &mut Compress,
    data: &[u8],
    dictionary: &[u8],
    last: bool,
) -> io::Result<Deflated> {
    deflate.reset();
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut bytes = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if bytes.capacity() - bytes.len() < 1024 {
            bytes.reserve(data.len() / 4 + 1024);
        }
        let consumed = usize::try_from(deflate.total_in()).map_err(io::Error::other)?;
        let status = deflate
            .compress_vec(&data[consumed..], &mut bytes, flush)
            .map_err(io::Error::other)?;
        let all_in = deflate.total_in() == data.len() as u64;
        match status {
            Status::StreamEnd => break,
            // Room left after a sync flush means the flush is complete.
            _ if !last && all_in && bytes.len() < bytes.capacity() => break,
            _ => {}
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Deflated { bytes, crc })
}

/// The worker threads and the queue that feeds them.
#[derive(Debug)]
struct Pool {
    jobs: Option<SyncSender<Job>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(level: Compression, workers: usize) -> Pool {
        let (jobs, queue) = sync_channel::<Job>(2 * workers);
        let queue = Arc::new(Mutex::new(queue));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..workers)
            .filter_map(|i| {
                let queue = Arc::clone(&queue);
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || work(&queue, &stop, level))
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

fn work(queue: &Mutex<Receiver<Job>>, stop: &AtomicBool, level: Compression) {
    let mut deflate = Compress::new(level, false);
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
        let result = deflate_block(&mut deflate, &job.data, &job.dictionary, job.last);
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

    fn gunzip_with_flate2(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // Single-member decoder: the stream must be one gzip member.
        flate2::read::GzDecoder::new(gz)
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
    fn sizes_around_blocks_round_trip_through_gzip_and_one_member() {
        let sizes = [
            0,
            1,
            WINDOW - 1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            2 * BLOCK_SIZE,
            5 * 1024 * 1024 + 12_345,
        ];
        for size in sizes {
            let data = mixed(size);
            let gz = encode(&data, 6, 3);
            assert_eq!(gunzip_with_flate2(&gz), data, "flate2, {size} bytes");
            let tested = gzip_cli(&["-t"], &gz);
            assert!(tested.status.success(), "gzip -t, {size} bytes: {tested:?}");
            let decoded = gzip_cli(&["-dc"], &gz);
            assert!(decoded.status.success(), "gzip -dc, {size} bytes");
            assert!(decoded.stdout == data, "gzip -dc output, {size} bytes");
        }
    }

    #[test]
    fn ended_members_join_into_the_stream_and_an_idle_end_adds_none() {
        let first = mixed(BLOCK_SIZE * 3 + 7);
        let second = mixed(1000);
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 2);
        enc.end_member().unwrap();
        enc.write_all(&first).unwrap();
        enc.end_member().unwrap();
        enc.end_member().unwrap();
        let first_member = enc.get_mut().unwrap().len();
        assert_eq!(gunzip_with_flate2(&enc.get_mut().unwrap()[..]), first);
        enc.write_all(&second).unwrap();
        let gz = enc.finish().unwrap();
        // Only the single-member decoder stops after the first member.
        assert_eq!(gunzip_with_flate2(&gz), first, "first member alone");
        let decoded = gzip_cli(&["-dc"], &gz);
        assert!(decoded.status.success(), "gzip -dc: {decoded:?}");
        assert!(decoded.stdout == [first, second].concat(), "both members");
        assert!(gz.len() > first_member, "a second member follows");
    }

    #[test]
    fn every_level_round_trips_and_levels_still_matter() {
        let data = mixed(3 * 1024 * 1024);
        let mut sizes = Vec::new();
        for level in [0, 1, 6, 9] {
            let gz = encode(&data, level, 2);
            assert_eq!(gunzip_with_flate2(&gz), data, "level {level}");
            sizes.push(gz.len());
        }
        // Stored (0) is larger than the input; 1 larger than 9.
        assert!(sizes[0] > data.len(), "{sizes:?}");
        assert!(sizes[1] > sizes[3], "{sizes:?}");
    }

    #[test]
    fn the_ratio_stays_that_of_one_stream_thanks_to_the_dictionary() {
        // 20,000 random bytes over and over: compressible only by matches reaching back
        // across block boundaries, so without the dictionary each block would start with
        // 20,000 literal bytes.
        let pattern: Vec<u8> = mixed(20_000);
        let data: Vec<u8> = pattern
            .iter()
            .copied()
            .cycle()
            .take(6 * BLOCK_SIZE)
            .collect();
        let parallel = encode(&data, 6, 4).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!(
            parallel <= single + single / 10 + 1024,
            "parallel {parallel} vs one stream {single}"
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
        assert_eq!(gunzip_with_flate2(&gz), data);
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
        let data = mixed(8 * 1024 * 1024);
        let mut enc = ParallelGzEncoder::new(FailingWriter { left: 300_000 }, 6, 2);
        let err = data
            .chunks(64 * 1024)
            .map(|chunk| enc.write_all(chunk))
            .find_map(Result::err)
            .expect("the write fails before 8 MiB are taken");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(enc.write_all(b"more").is_err());
        assert!(enc.finish().is_err());
    }

    #[test]
    fn a_block_that_fails_in_a_worker_reaches_the_writer() {
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 2);
        enc.write_all(&mixed(BLOCK_SIZE)).unwrap();
        // What a worker sends back when deflate fails (or a thread is lost).
        let (reply, receive) = sync_channel(1);
        reply
            .send(Err(io::Error::other("deflate failed in a worker")))
            .unwrap();
        enc.in_flight.push_back(receive);
        let (lost_reply, lost_receive) = sync_channel::<io::Result<Deflated>>(1);
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

    #[test]
    fn dropping_mid_stream_stops_and_joins_the_workers() {
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 3);
        enc.write_all(&mixed(4 * 1024 * 1024)).unwrap();
        let stop = Arc::clone(&enc.pool.as_ref().expect("workers started").stop);
        // Dropping joins every worker; the stop flag they share is then ours alone.
        drop(enc);
        assert!(stop.load(Ordering::Relaxed));
        assert_eq!(Arc::strong_count(&stop), 1, "a worker outlived the encoder");
    }
}
