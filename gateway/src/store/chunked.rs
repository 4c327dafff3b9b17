//! [`ChunkedLog`]: the embedded store's append-only event log, in chunks so that growing it never moves
//! what it holds.
//!
//! A `Vec` doubles: at every doubling it allocates twice the room, copies every event over and leaves the
//! old block behind, so a conversation of thousands of events keeps copying megabytes and faulting in fresh
//! pages. Here only the first chunk grows like a `Vec` (a short conversation takes no more room than
//! before); after it, each chunk is allocated once at its full size and never moved.

/// Events per chunk.
const CHUNK: usize = 256;

/// An append-only sequence addressed by position, stored in chunks of [`CHUNK`].
#[derive(Debug)]
pub(super) struct ChunkedLog<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedLog<T> {
    fn default() -> Self {
        ChunkedLog {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedLog<T> {
    /// How many items it holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds `item` at position `len()`.
    pub(super) fn push(&mut self, item: T) {
        let offset = self.len % CHUNK;
        if self.len == 0 {
            self.chunks.push(Vec::new());
        } else if offset == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(item);
            self.len += 1;
        }
    }

    /// The item at `index`, if it holds one.
    pub(super) fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    /// The items from position `start` on, in order (reversible).
    pub(super) fn iter_from(&self, start: usize) -> impl DoubleEndedIterator<Item = &T> {
        let first = start / CHUNK;
        let offset = start % CHUNK;
        self.chunks
            .get(first..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(i, chunk)| {
                let from = if i == 0 { offset.min(chunk.len()) } else { 0 };
                &chunk[from..]
            })
    }
}

#[cfg(test)]
mod tests {
    use super::{ChunkedLog, CHUNK};

    #[test]
    fn it_reads_back_like_a_vec_at_every_length_and_start() {
        let mut log = ChunkedLog::default();
        let mut vec = Vec::new();
        for len in 0..=(3 * CHUNK + 7) {
            assert_eq!(log.len(), vec.len());
            for start in [
                0,
                1,
                CHUNK - 1,
                CHUNK,
                CHUNK + 1,
                2 * CHUNK,
                len.saturating_sub(1),
                len,
                len + 1,
            ] {
                assert_eq!(log.get(start), vec.get(start), "get({start}) at length {len}");
                let from: Vec<usize> = log.iter_from(start).copied().collect();
                assert_eq!(
                    &from[..],
                    vec.get(start..).unwrap_or_default(),
                    "from {start} at length {len}"
                );
            }
            let back: Vec<usize> = log.iter_from(0).rev().copied().collect();
            assert!(back.iter().eq(vec.iter().rev()), "reversed at length {len}");
            log.push(len);
            vec.push(len);
        }
    }

    #[test]
    fn chunks_after_the_first_are_never_reallocated() {
        let mut log = ChunkedLog::default();
        for i in 0..=CHUNK {
            log.push(i);
        }
        let second = log.chunks[1].as_ptr();
        for i in 0..CHUNK - 1 {
            log.push(i);
        }
        assert_eq!(
            log.chunks[1].as_ptr(),
            second,
            "the full-size chunk kept its place"
        );
        assert_eq!(log.chunks.len(), 2);
    }
}
