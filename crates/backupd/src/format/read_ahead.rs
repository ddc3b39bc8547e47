//! A reader that decodes ahead on a thread of its own.
//!
//! A restore decompresses and writes files in turn; on one thread, the time the kernel spends
//! on the writes adds to the decompression's. `tar -xzf` overlaps the two by running gzip in a
//! process of its own; [`ReadAhead`] does the same with a thread. It reads the inner reader
//! (file, decryption, decompression) into [`CHUNK`]-sized buffers while the caller consumes
//! the one before. At most [`CHUNKS`] buffers exist, reused rather than reallocated.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SendError, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

/// Bytes per buffer read ahead.
pub const CHUNK: usize = 128 * 1024;
/// Buffers in existence at most: one being read by the caller, the others filled or queued.
const CHUNKS: usize = 4;

/// Reads its inner reader on a thread, ahead of the caller. Dropped early, it does not wait
/// for that thread, whose read may be a network's: the thread ends at its next hand-over.
#[derive(Debug)]
pub struct ReadAhead {
    filled: Receiver<io::Result<Vec<u8>>>,
    /// Buffers the caller has consumed, back to the thread for refilling.
    consumed: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    /// `None` once it has ended and been joined.
    thread: Option<JoinHandle<()>>,
    failed: bool,
}

impl ReadAhead {
    /// Starts reading `inner` ahead; `Err(inner)` if no thread can be started, for the caller
    /// to read it itself.
    pub fn start<R: Read + Send + 'static>(inner: R) -> Result<ReadAhead, R> {
        let (fill, filled) = sync_channel(CHUNKS);
        let (consumed, refill) = sync_channel(CHUNKS);
        // The reader follows the thread once it exists, so a failed spawn leaves it here.
        let (hand_over, taken) = sync_channel::<R>(1);
        let spawned = std::thread::Builder::new()
            .name("read-ahead".to_owned())
            .spawn(move || {
                if let Ok(inner) = taken.recv() {
                    read_ahead(inner, &fill, &refill);
                }
            });
        let Ok(thread) = spawned else {
            return Err(inner);
        };
        if let Err(SendError(inner)) = hand_over.send(inner) {
            return Err(inner);
        }
        Ok(ReadAhead {
            filled,
            consumed,
            current: Vec::new(),
            position: 0,
            thread: Some(thread),
            failed: false,
        })
    }

    /// Makes the next filled buffer current; `false` at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let used = std::mem::take(&mut self.current);
        self.position = 0;
        if used.capacity() > 0 {
            // The thread may have ended: then the buffer is simply freed.
            let _ = self.consumed.try_send(used);
        }
        match self.filled.recv() {
            Ok(Ok(chunk)) => {
                self.current = chunk;
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
            // Every buffer was handed over and the thread has ended: by the end of the stream,
            // or by a panic, which must not pass for one.
            Err(_) => match self.thread.take().map(JoinHandle::join) {
                Some(Err(_)) => Err(io::Error::other(
                    "the read-ahead thread stopped unexpectedly",
                )),
                _ => Ok(false),
            },
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            // An error is final: reading on must not look like a clean end.
            return Err(io::Error::other("the archive stream failed earlier"));
        }
        if out.is_empty() {
            return Ok(0);
        }
        if self.position == self.current.len() {
            match self.next_chunk() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        let n = out.len().min(self.current.len() - self.position);
        out[..n].copy_from_slice(&self.current[self.position..][..n]);
        self.position += n;
        Ok(n)
    }
}

/// The thread's loop: fills buffers from `inner` and hands them over until the end of the
/// stream, an error (handed over too), or the caller is gone.
fn read_ahead(
    mut inner: impl Read,
    fill: &SyncSender<io::Result<Vec<u8>>>,
    refill: &Receiver<Vec<u8>>,
) {
    let mut allocated = 0;
    loop {
        let mut buffer = match refill.try_recv() {
            Ok(buffer) => buffer,
            Err(TryRecvError::Empty) if allocated < CHUNKS => {
                allocated += 1;
                Vec::with_capacity(CHUNK)
            }
            // Bounded: wait for the caller to give one back.
            Err(TryRecvError::Empty) => match refill.recv() {
                Ok(buffer) => buffer,
                Err(_) => return,
            },
            Err(TryRecvError::Disconnected) => return,
        };
        // Only what the last use left short is zeroed.
        buffer.resize(CHUNK, 0);
        let mut len = 0;
        let outcome = loop {
            if len == CHUNK {
                break Ok(());
            }
            match inner.read(&mut buffer[len..]) {
                Ok(0) => break Ok(()),
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buffer.truncate(len);
        let ended = len < CHUNK;
        if len > 0 && fill.send(Ok(buffer)).is_err() {
            return;
        }
        if let Err(e) = outcome {
            let _ = fill.send(Err(e));
            return;
        }
        if ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    /// Yields `data` in pieces of at most `step` bytes, then `error` if any; counts its reads
    /// and says when it is dropped.
    struct Source {
        data: Vec<u8>,
        at: usize,
        step: usize,
        error: Option<io::Error>,
        reads: Arc<AtomicUsize>,
        dropped: Option<SyncSender<()>>,
    }

    impl Source {
        fn new(data: Vec<u8>, step: usize) -> Source {
            Source {
                data,
                at: 0,
                step,
                error: None,
                reads: Arc::new(AtomicUsize::new(0)),
                dropped: None,
            }
        }
    }

    impl Read for Source {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.at == self.data.len()
                && let Some(e) = self.error.take()
            {
                return Err(e);
            }
            let n = out.len().min(self.step).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..][..n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Drop for Source {
        fn drop(&mut self) {
            if let Some(dropped) = &self.dropped {
                let _ = dropped.send(());
            }
        }
    }

    fn started(inner: impl Read + Send + 'static) -> ReadAhead {
        ReadAhead::start(inner).unwrap_or_else(|_| panic!("no thread could be started"))
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len as u64).map(|i| (i * 31 + i / 977) as u8).collect()
    }

    fn read_in_pieces(reader: &mut impl Read, piece: usize) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut buffer = vec![0; piece];
        loop {
            match reader.read(&mut buffer)? {
                0 => return Ok(all),
                n => all.extend_from_slice(&buffer[..n]),
            }
        }
    }

    #[test]
    fn yields_exactly_the_inner_bytes_whatever_the_read_sizes() {
        // Empty, less than a buffer, exactly some buffers, and enough to reuse them.
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            3 * CHUNK,
            CHUNKS * 3 * CHUNK + 12_345,
        ] {
            for (step, piece) in [(7, 8192), (100_003, 1), (CHUNK * 2, CHUNK * 3)] {
                if piece == 1 && len > CHUNK {
                    continue; // byte by byte only on the small ones
                }
                let expected = data(len);
                let mut reader = started(Source::new(expected.clone(), step));
                let got = read_in_pieces(&mut reader, piece).unwrap();
                assert!(got == expected, "len {len}, step {step}, piece {piece}");
                assert_eq!(
                    reader.read(&mut [0; 10]).unwrap(),
                    0,
                    "the end stays the end"
                );
            }
        }
    }

    #[test]
    fn an_error_of_the_inner_reader_comes_after_its_bytes_and_stays() {
        let expected = data(2 * CHUNK + 500);
        let mut source = Source::new(expected.clone(), 4096);
        source.error = Some(io::Error::new(
            io::ErrorKind::InvalidData,
            "corrupt deflate stream",
        ));
        let mut reader = started(source);
        let mut got = vec![0; expected.len()];
        reader.read_exact(&mut got).unwrap();
        assert!(got == expected, "every byte before the error arrives");
        let err = reader.read(&mut [0; 10]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "corrupt deflate stream");
        assert!(
            reader.read(&mut [0; 10]).is_err(),
            "a failed stream never reads as a clean end"
        );
    }

    #[test]
    fn it_reads_only_a_few_buffers_ahead_and_stops_when_dropped() {
        let (dropped, was_dropped) = sync_channel(1);
        let mut source = Source::new(data(1000 * CHUNK), CHUNK);
        source.dropped = Some(dropped);
        let reads = Arc::clone(&source.reads);
        let mut reader = started(source);
        let mut first = vec![0; 10];
        reader.read_exact(&mut first).unwrap();
        drop(reader);
        // Generous: the thread ends at its next hand-over, which takes microseconds.
        was_dropped
            .recv_timeout(Duration::from_secs(30))
            .expect("the thread ends and drops its reader once the caller is gone");
        let reads = reads.load(Ordering::SeqCst);
        assert!(
            reads <= CHUNKS + 2,
            "{reads} reads of {CHUNK} bytes: it must not read the whole stream ahead"
        );
    }

    #[test]
    fn a_panic_on_the_thread_is_an_error_not_an_end() {
        struct Panics(AtomicBool);
        impl Read for Panics {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0.swap(true, Ordering::SeqCst) {
                    panic!("decoder bug");
                }
                out[0] = 1;
                Ok(1)
            }
        }
        let mut reader = started(Panics(AtomicBool::new(false)));
        let err = read_in_pieces(&mut reader, 64).unwrap_err();
        assert!(err.to_string().contains("stopped unexpectedly"), "{err}");
    }
}
