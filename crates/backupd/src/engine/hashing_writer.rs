//! A writer that hashes and counts the archive bytes on their way to the file.
//!
//! Sitting between the compressor and the file, it yields the SHA-256 and size of exactly
//! the bytes stored, in the same pass, so the archive is never read back to be hashed.
//!
//! The bytes are gathered in [`CHUNK`]-sized buffers, a file's read straight into them
//! ([`WriteFrom`]). Once an archive fills one, SHA-256 runs
//! on a thread of its own, a few chunks behind the writes, so hashing overlaps copying instead
//! of adding to it (it is most of the work of an uncompressed backup besides the copy). At
//! most [`CHUNKS`] buffers exist; a small archive is hashed inline and starts no thread.
//! An archive whose bytes are rewritten after being written only counts them
//! ([`HashingWriter::count_only`]): its digest is taken from the file.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::format::WriteFrom;

/// Bytes per buffer handed to the hashing thread.
pub const CHUNK: usize = 1 << 20;
/// Buffers in existence at most: one being filled, the others being hashed or queued.
/// The hashing thread waits its turn on a busy core a few milliseconds at a time; seven
/// queued chunks cover that at the copy's speed, so the writer does not wait for it (with
/// four it did, 6-29 ms per 330 MB archive on 2 cores: bench/README, "Where the SHA-256's
/// time goes").
const CHUNKS: usize = 8;

#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    /// [`CHUNK`] bytes long once anything was written (zeroed once, then reused, so that a
    /// file can be read into it): the first `filled` are not yet written to `inner` nor hashed.
    buffer: Vec<u8>,
    filled: usize,
    hasher: Hasher,
    // Shared so progress reports can read it while the tar builder owns this writer.
    written: Arc<AtomicU64>,
}

/// Where the bytes written are hashed.
#[derive(Debug)]
enum Hasher {
    Inline(Sha256),
    Thread(HashThread),
    /// Not hashed: the digest is taken elsewhere.
    Off,
}

#[derive(Debug)]
struct HashThread {
    chunks: SyncSender<Vec<u8>>,
    /// Buffers the thread has hashed, for reuse.
    hashed: Receiver<Vec<u8>>,
    /// Buffers allocated so far (at most [`CHUNKS`]).
    allocated: usize,
    /// Joined by `finish`, or on drop, so no thread outlives its archive.
    thread: Option<JoinHandle<Sha256>>,
}

impl HashThread {
    /// Starts the thread, which takes over `hasher`; `None` if no thread can be started.
    fn start(hasher: Sha256) -> Option<HashThread> {
        let (chunks, queue) = sync_channel::<Vec<u8>>(CHUNKS);
        let (give_back, hashed) = sync_channel::<Vec<u8>>(CHUNKS);
        let thread = std::thread::Builder::new()
            .name("sha256".to_owned())
            .spawn(move || {
                let mut hasher = hasher;
                for chunk in queue {
                    hasher.update(&chunk);
                    // The writer may be gone (a failed or cancelled run): nothing to give back.
                    let _ = give_back.try_send(chunk);
                }
                hasher
            })
            .ok()?;
        Some(HashThread {
            chunks,
            hashed,
            allocated: 1,
            thread: Some(thread),
        })
    }

    /// Queues `chunk` (all of it is hashed) and returns a [`CHUNK`]-long buffer to fill next.
    fn hash(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        self.chunks.send(chunk).map_err(|_| hash_thread_stopped())?;
        let mut next = match self.hashed.try_recv() {
            Ok(buffer) => buffer,
            Err(_) if self.allocated < CHUNKS => {
                self.allocated += 1;
                vec![0; CHUNK]
            }
            // Bounded: wait for the thread to hand a buffer back.
            Err(_) => self.hashed.recv().map_err(|_| hash_thread_stopped())?,
        };
        // Only a partial chunk (written out early by `get_mut`) comes back shorter.
        next.resize(CHUNK, 0);
        Ok(next)
    }

    fn finish(mut self) -> io::Result<Sha256> {
        match self.join() {
            Some(Ok(hasher)) => Ok(hasher),
            _ => Err(hash_thread_stopped()),
        }
    }

    /// Closes the queue and waits for the thread to end; `None` if it was joined before.
    fn join(&mut self) -> Option<std::thread::Result<Sha256>> {
        let thread = self.thread.take()?;
        // Dropping the only sender ends the thread's loop once the queue is empty.
        drop(std::mem::replace(&mut self.chunks, sync_channel(0).0));
        Some(thread.join())
    }
}

impl Drop for HashThread {
    fn drop(&mut self) {
        // A failed or cancelled run waits for at most CHUNKS - 1 queued chunks (a few ms).
        let _ = self.join();
    }
}

fn hash_thread_stopped() -> io::Error {
    io::Error::other("the SHA-256 thread stopped unexpectedly")
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            buffer: Vec::new(),
            filled: 0,
            hasher: Hasher::Inline(Sha256::new()),
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A live view of the number of bytes written so far: the stream's position, buffered
    /// bytes included.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }

    /// The inner writer, once every byte written so far has reached it, so that a position
    /// from [`Self::counter`] is a position in it.
    pub fn get_mut(&mut self) -> io::Result<&mut W> {
        self.write_buffer()?;
        Ok(&mut self.inner)
    }

    /// From now on only counts the bytes, for a caller that takes the digest elsewhere
    /// (from the file, once bytes written are rewritten); `finish` then gives none.
    pub fn count_only(&mut self) {
        self.hasher = Hasher::Off;
    }

    /// Writes what is buffered, then returns the inner writer (not flushed), the lower-case
    /// hex SHA-256 (`None` after [`Self::count_only`]) and the byte count.
    pub fn finish(mut self) -> io::Result<(W, Option<String>, u64)> {
        self.write_buffer()?;
        let hasher = match self.hasher {
            Hasher::Inline(hasher) => Some(hasher),
            Hasher::Thread(thread) => Some(thread.finish()?),
            Hasher::Off => None,
        };
        let hex = hasher.map(|hasher| crate::format::hex(&hasher.finalize()));
        Ok((self.inner, hex, self.written.load(Ordering::Relaxed)))
    }

    /// The part of the buffer still free, allocating the buffer on first use.
    fn room(&mut self) -> &mut [u8] {
        if self.buffer.is_empty() {
            self.buffer = vec![0; CHUNK];
        }
        &mut self.buffer[self.filled..]
    }

    /// Counts `n` more bytes put in the buffer, writing it out once full.
    fn filled_by(&mut self, n: usize) -> io::Result<()> {
        self.filled += n;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        if self.filled == CHUNK {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Writes the filled part of the buffer to `inner` and hashes it.
    fn write_buffer(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let filled = std::mem::take(&mut self.filled);
        self.inner.write_all(&self.buffer[..filled])?;
        if let Hasher::Inline(hasher) = &self.hasher {
            // A full chunk: the archive is large enough to be worth a thread.
            let thread = (filled == CHUNK)
                .then(|| HashThread::start(hasher.clone()))
                .flatten();
            if let Some(thread) = thread {
                self.hasher = Hasher::Thread(thread);
            }
        }
        match &mut self.hasher {
            Hasher::Inline(hasher) => hasher.update(&self.buffer[..filled]),
            Hasher::Thread(thread) => {
                let mut chunk = std::mem::take(&mut self.buffer);
                chunk.truncate(filled);
                self.buffer = thread.hash(chunk)?;
            }
            Hasher::Off => {}
        }
        Ok(())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.room();
        let n = buf.len().min(room.len());
        room[..n].copy_from_slice(&buf[..n]);
        self.filled_by(n)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_buffer()?;
        self.inner.flush()
    }
}

impl<W: Write> WriteFrom for HashingWriter<W> {
    /// Reads `source` into the buffer itself, up to a whole chunk per `read`.
    fn write_from(&mut self, source: &mut dyn Read, len: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < len {
            let room = self.room();
            let want = usize::try_from(len - done).map_or(room.len(), |left| left.min(room.len()));
            let n = match source.read(&mut room[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.filled_by(n)?;
            done += n as u64;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::TryRecvError;

    use super::*;

    /// Accepts at most 3 bytes per call, to exercise short writes.
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hashes_and_counts_exactly_what_was_written() {
        let mut w = HashingWriter::new(Trickle(Vec::new()));
        let counter = w.counter();
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        w.flush().unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 11);
        let (inner, hex, n) = w.finish().unwrap();
        assert_eq!(inner.0, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(
            hex.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
    }

    #[test]
    fn empty_input_has_the_empty_digest() {
        let (_, hex, n) = HashingWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            hex.as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    #[test]
    fn a_large_stream_hashed_on_the_thread_matches_one_pass() {
        // Chunks cut in the middle of writes, more than CHUNKS of them so buffers are reused.
        let data: Vec<u8> = (0..(CHUNKS * 3 * CHUNK + 12_345) as u64)
            .map(|i| (i * 7 + i / 1000) as u8)
            .collect();
        let mut w = HashingWriter::new(Vec::new());
        for piece in data.chunks(100_003) {
            w.write_all(piece).unwrap();
        }
        assert!(
            matches!(w.hasher, Hasher::Thread(_)),
            "a large archive is hashed on its own thread"
        );
        let (inner, hex, n) = w.finish().unwrap();
        assert_eq!(inner, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(hex, Some(crate::format::hex(&Sha256::digest(&data))));
    }

    #[test]
    fn counting_only_writes_and_counts_every_byte_and_hashes_none() {
        let data: Vec<u8> = (0..(3 * CHUNK + 77) as u32).map(|i| i as u8).collect();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data[..10]).unwrap();
        w.count_only();
        w.write_all(&data[10..]).unwrap();
        assert!(
            matches!(w.hasher, Hasher::Off),
            "no SHA-256 thread for a digest nobody takes"
        );
        let (inner, hex, n) = w.finish().unwrap();
        assert_eq!(inner, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(hex, None);
    }

    #[test]
    fn the_counter_is_the_stream_position_and_get_mut_holds_every_byte() {
        let mut w = HashingWriter::new(Vec::new());
        let counter = w.counter();
        w.write_all(&[7; 1000]).unwrap();
        // Buffered, not yet in the inner writer, but counted: a command source takes this
        // position to rewrite its header there in the file.
        assert_eq!(counter.load(Ordering::Relaxed), 1000);
        assert_eq!(w.get_mut().unwrap().len(), 1000);
        w.write_all(&[8; 10]).unwrap();
        let (inner, hex, n) = w.finish().unwrap();
        assert_eq!((inner.len(), n), (1010, 1010));
        assert_eq!(hex, Some(crate::format::hex(&Sha256::digest(&inner))));
    }

    #[test]
    fn a_chunk_written_out_early_comes_back_whole_for_reuse() {
        let data: Vec<u8> = (0..((CHUNKS + 2) * CHUNK) as u32)
            .map(|i| (i / 3) as u8)
            .collect();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data[..CHUNK + 10]).unwrap();
        // A partial chunk of 10 bytes goes to the thread; its buffer returns full length.
        w.get_mut().unwrap();
        w.write_all(&data[CHUNK + 10..]).unwrap();
        let (inner, hex, _) = w.finish().unwrap();
        assert_eq!(inner, data);
        assert_eq!(hex, Some(crate::format::hex(&Sha256::digest(&data))));
    }

    #[test]
    fn an_archive_dropped_unfinished_ends_its_hashing_thread() {
        // A sink, so that only the hashing takes time.
        let mut w = HashingWriter::new(io::sink());
        // All buffers in use: chunks are still queued when it is dropped.
        w.write_all(&vec![5; CHUNKS * CHUNK]).unwrap();
        let Hasher::Thread(thread) = &mut w.hasher else {
            panic!("a large archive is hashed on its own thread");
        };
        // The thread hands its hashed buffers back here until it ends.
        let handed_back = std::mem::replace(&mut thread.hashed, sync_channel(0).1);
        drop(w);
        loop {
            match handed_back.try_recv() {
                Ok(_) => {}
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => panic!("the SHA-256 thread outlived its archive"),
            }
        }
    }

    /// Gives out `data` at most `most` bytes per read and records each read's size.
    struct Pieces<'d> {
        data: &'d [u8],
        most: usize,
        reads: Vec<usize>,
    }
    impl<'d> Pieces<'d> {
        fn new(data: &'d [u8], most: usize) -> Self {
            Pieces {
                data,
                most,
                reads: Vec::new(),
            }
        }
    }
    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.most).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.reads.push(buf.len());
            Ok(n)
        }
    }

    #[test]
    fn a_file_is_read_straight_into_the_chunks_a_chunk_at_a_time() {
        let data: Vec<u8> = (0..(2 * CHUNK + 1000) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = HashingWriter::new(Vec::new());
        let counter = w.counter();
        w.write_all(b"header").unwrap();
        let mut source = Pieces::new(&data, usize::MAX);
        let len = data.len() as u64;
        assert_eq!(w.write_from(&mut source, len).unwrap(), len);
        // Each read fills what is left of a chunk: no 8 KiB copies in between.
        assert_eq!(source.reads, [CHUNK - 6, CHUNK, 1006]);
        assert_eq!(counter.load(Ordering::Relaxed), 6 + len);
        w.write_all(b"tail").unwrap();
        let (inner, hex, n) = w.finish().unwrap();
        let expected = [&b"header"[..], &data, b"tail"].concat();
        assert_eq!(inner, expected);
        assert_eq!(n, expected.len() as u64);
        assert_eq!(hex, Some(crate::format::hex(&Sha256::digest(&expected))));
    }

    #[test]
    fn reading_a_file_stops_at_its_length_or_its_end_whatever_its_reads_give() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut w = HashingWriter::new(Vec::new());
        // Short reads: 7 bytes at a time, and only the 100 asked for.
        let mut source = Pieces::new(&data, 7);
        assert_eq!(w.write_from(&mut source, 100).unwrap(), 100);
        assert_eq!(source.reads.iter().max(), Some(&100));
        // The source ends before the length asked for: what it had is written.
        assert_eq!(w.write_from(&mut source, 10_000).unwrap(), 4900);
        let (inner, hex, n) = w.finish().unwrap();
        assert_eq!((inner.as_slice(), n), (&data[..], 5000));
        assert_eq!(hex, Some(crate::format::hex(&Sha256::digest(&data))));
    }

    #[test]
    fn a_failing_read_fails_the_write_from() {
        struct Unreadable;
        impl Read for Unreadable {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("bad sector"))
            }
        }
        let mut w = HashingWriter::new(Vec::new());
        let err = w.write_from(&mut Unreadable, 10).unwrap_err();
        assert_eq!(err.to_string(), "bad sector");
    }

    /// Fails every write.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_file_fails_the_write_or_the_finish() {
        let mut w = HashingWriter::new(Broken);
        let err = w.write_all(&vec![1; 3 * CHUNK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let mut w = HashingWriter::new(Broken);
        w.write_all(b"small").unwrap();
        assert!(w.finish().is_err());
    }
}
