//! Connection buffers from fixed-size pooled blocks: an idle connection holds none.
//!
//! - [`Pool`]: free blocks of [`BLOCK`] bytes behind a spin lock, one pool for input blocks
//!   (kept at full length, zeroed once at birth, so a read never re-initialises memory) and one
//!   for output blocks (kept empty, filled by appends). Taking and returning a block happens per
//!   connection per batch, never per message. The pool retains at most `max_free` blocks.
//! - [`InBuf`]: the receive buffer. Bytes `[start, cut)` are whole frames already validated by the
//!   receive role, `[cut, end)` an incomplete frame. A frame larger than a block moves to a large
//!   buffer of `max_body + 12 + BLOCK` bytes, recycled by the pool (a few are kept) when empty.
//! - [`MemoryBudget`]: every block and large buffer a pool allocates is charged to the process-wide
//!   budget (`--memory-limit`) until it is freed (blocks kept in a free list stay charged: they are
//!   resident too), in one padded cell per pool; recycling costs nothing. The sum is read only when
//!   a connection's pending output grows past a block (see `ConnState::push_frame`). Buffers are
//!   held to three quarters of the limit: the rest is headroom for what the allocator keeps around
//!   them (fragmentation, the pools' bookkeeping),
//!   so the process's resident memory stays under the limit plus its idle baseline.
//! - [`OutBuf`]: pending output as a queue of blocks. A frame never straddles two blocks, so every
//!   block starts on a frame boundary; that is what lets a slow consumer's output be discarded while
//!   completing the one frame already partly written.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sync::Lock;
use doorway_core::wire::{Cut, Refusal, Wire};

/// Size of a pooled block.
pub const BLOCK: usize = 16 * 1024;

/// The process-wide budget of connection buffer memory: bytes held by connections' input and output
/// buffers, summed over one cell per pool.
pub struct MemoryBudget {
    limit: usize,
    cells: Box<[Cell]>,
}

/// One pool's bytes out, on its own cache line.
#[repr(align(128))]
#[derive(Default)]
struct Cell(AtomicUsize);

impl MemoryBudget {
    /// A budget of `limit` bytes shared by `pools` pools.
    pub fn new(limit: usize, pools: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { limit, cells: (0..pools).map(|_| Cell::default()).collect() })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now by every connection's buffers (a sum of relaxed reads: a moment's view).
    pub fn used(&self) -> usize {
        // Relaxed: an estimate for a policy decision; no memory is published through it.
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).fold(0, usize::wrapping_add)
    }

    /// The bytes buffers may hold: three quarters of the limit.
    fn soft(&self) -> usize {
        self.limit - self.limit / 4
    }

    /// Whether `more` bytes would take the buffers past their part of the limit (three quarters).
    pub fn exceeded_by(&self, more: usize) -> bool {
        self.used().saturating_add(more) > self.soft()
    }

    /// The unsent bytes a connection may hold while the budget is exceeded, with `admitted`
    /// connections: half the buffers' part split evenly (at least a block), so all connections
    /// within their share hold at most half of it together, and the other half covers input.
    pub fn share(&self, admitted: usize) -> usize {
        (self.soft() / admitted.max(1) / 2).max(BLOCK)
    }

    #[inline]
    fn charge(&self, cell: usize, bytes: usize) {
        // Relaxed: a byte count, read only as an estimate.
        self.cells[cell].0.fetch_add(bytes, Ordering::Relaxed);
    }

    #[inline]
    fn refund(&self, cell: usize, bytes: usize) {
        // Relaxed: as in `charge`.
        self.cells[cell].0.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A pool of free blocks (and, for input, of large buffers that hold one `max_body` frame).
pub struct Pool {
    budget: Option<(Arc<MemoryBudget>, usize)>,
    free: Lock<Vec<Vec<u8>>>,
    max_free: usize,
    zeroed: bool,
    large: Lock<Vec<Vec<u8>>>,
    large_size: usize,
    dropped: std::sync::atomic::AtomicU64,
}

/// Large buffers a pool keeps.
const MAX_LARGE_FREE: usize = 16;

impl Pool {
    /// A pool of input blocks (full length) or output blocks (empty), keeping up to `max_free`;
    /// `large_size` (0: none) is the size of the large input buffers it also recycles.
    pub fn new(zeroed: bool, max_free: usize, large_size: usize) -> Pool {
        Pool {
            budget: None,
            free: Lock::new(Vec::new()),
            max_free,
            zeroed,
            large: Lock::new(Vec::new()),
            large_size,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Charges what this pool hands out to `budget`'s cell `cell`.
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>, cell: usize) -> Pool {
        self.budget = Some((budget, cell));
        self
    }

    /// Charges a newly allocated buffer to the budget.
    #[inline]
    fn charged(&self, b: Vec<u8>) -> Vec<u8> {
        if let Some((budget, cell)) = &self.budget {
            budget.charge(*cell, b.capacity());
        }
        b
    }

    /// A block: `BLOCK` zero-or-stale bytes long if zeroed, else empty with `BLOCK` capacity.
    #[inline]
    pub fn get(&self) -> Vec<u8> {
        if let Some(b) = self.free.lock().pop() {
            return b;
        }
        self.charged(if self.zeroed { vec![0; BLOCK] } else { Vec::with_capacity(BLOCK) })
    }

    /// An empty buffer for `bytes` of output larger than a block.
    pub fn get_exact(&self, bytes: usize) -> Vec<u8> {
        self.charged(Vec::with_capacity(bytes))
    }

    /// A full-length buffer of at least `need` bytes: a recycled large buffer when it fits.
    pub fn get_large(&self, need: usize) -> Vec<u8> {
        if need <= self.large_size {
            if let Some(b) = self.large.lock().pop() {
                return b;
            }
            return self.charged(vec![0; self.large_size]);
        }
        self.charged(vec![0; need + BLOCK])
    }

    /// Returns a block or large buffer; anything else (or beyond what is kept) is freed.
    #[inline]
    pub fn put(&self, mut b: Vec<u8>) {
        if b.capacity() == BLOCK {
            if !self.zeroed {
                b.clear();
            }
            let mut free = self.free.lock();
            if free.len() < self.max_free {
                free.push(b);
                return;
            }
        } else if self.large_size > 0 && b.len() == self.large_size {
            let mut large = self.large.lock();
            if large.len() < MAX_LARGE_FREE {
                large.push(b);
                return;
            }
        }
        if let Some((budget, cell)) = &self.budget {
            budget.refund(*cell, b.capacity());
        }
        // Relaxed: a statistic for the monitor's trim decision.
        self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Blocks (and large buffers) freed to the allocator so far.
    pub fn dropped(&self) -> u64 {
        // Relaxed: a statistic.
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks currently free.
    #[cfg(test)]
    pub fn free_blocks(&self) -> usize {
        self.free.lock().len()
    }
}

/// The receive buffer of one connection.
#[derive(Default)]
pub struct InBuf {
    buf: Option<Vec<u8>>,
    start: usize,
    cut: usize,
    end: usize,
    /// Bytes the incomplete frame at `cut` needs in total (0: unknown yet).
    need: usize,
}

impl InBuf {
    /// Room to read into, taking a block or growing for a large frame; `None` when the buffer is
    /// full of whole frames (deal must consume first).
    pub fn space(&mut self, pool: &Pool) -> Option<&mut [u8]> {
        let buf = self.buf.get_or_insert_with(|| pool.get());
        if self.start == self.end {
            self.start = 0;
            self.cut = 0;
            self.end = 0;
        }
        if self.end == buf.len() {
            if self.start > 0 {
                buf.copy_within(self.start..self.end, 0);
                self.cut -= self.start;
                self.end -= self.start;
                self.start = 0;
            } else if self.cut == 0 && self.need > buf.len() {
                // One frame larger than the buffer: move it to a large buffer (recycled, sized for
                // the largest frame plus a block, so a stream of large frames is not re-grown).
                let mut big = pool.get_large(self.need);
                big[..self.end].copy_from_slice(&buf[..self.end]);
                pool.put(std::mem::replace(buf, big));
            }
        }
        if self.end == buf.len() {
            return None;
        }
        Some(&mut buf[self.end..])
    }

    /// Records `n` bytes read into the space, then cuts whole frames; returns how many were cut,
    /// and the refusal if a header was refused (cutting stops there).
    pub fn filled<W: Wire>(&mut self, n: usize, wire: &W) -> (u64, Option<Refusal>) {
        self.end += n;
        let Some(buf) = &self.buf else { return (0, None) };
        let mut frames = 0;
        while self.cut < self.end {
            match wire.cut(&buf[self.cut..self.end]) {
                Cut::Frame(len) => {
                    self.cut += len;
                    frames += 1;
                    self.need = 0;
                }
                Cut::Need(len) => {
                    self.need = len;
                    break;
                }
                Cut::Refused(r) => return (frames, Some(r)),
            }
        }
        (frames, None)
    }

    /// The whole frames not yet dealt.
    #[inline]
    pub fn frames(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.cut],
            None => &[],
        }
    }

    /// Marks `n` bytes of whole frames as dealt.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.cut);
    }

    /// Whether whole frames wait for deal.
    #[inline]
    pub fn has_frames(&self) -> bool {
        self.start < self.cut
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.start = 0;
        self.cut = 0;
        self.end = 0;
        self.need = 0;
    }

    /// Returns the buffer to the pool if it holds no bytes.
    #[inline]
    pub fn release_if_empty(&mut self, pool: &Pool) {
        if self.start == self.end {
            if let Some(b) = self.buf.take() {
                pool.put(b);
            }
            self.clear();
        }
    }

    /// Returns the buffer whatever it holds.
    pub fn release(&mut self, pool: &Pool) {
        if let Some(b) = self.buf.take() {
            pool.put(b);
        }
        self.clear();
    }

    /// Whether a buffer is held.
    pub fn holds_buffer(&self) -> bool {
        self.buf.is_some()
    }
}

/// Pending output of one connection.
#[derive(Default)]
pub struct OutBuf {
    blocks: VecDeque<Vec<u8>>,
    /// Bytes of the front block already written.
    head: usize,
    /// Bytes not yet written.
    len: usize,
}

impl OutBuf {
    /// Bytes not yet written.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is pending.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one frame (its encoded head, then the body), taking blocks from `pool` as needed.
    #[inline]
    pub fn push_frame(&mut self, pool: &Pool, head: &[u8], body: &[u8]) -> usize {
        let total = head.len() + body.len();
        let fits = matches!(self.blocks.back(), Some(b) if b.capacity() == BLOCK && BLOCK - b.len() >= total);
        if !fits {
            let b = if total <= BLOCK { pool.get() } else { pool.get_exact(total) };
            self.blocks.push_back(b);
        }
        if let Some(b) = self.blocks.back_mut() {
            b.extend_from_slice(head);
            b.extend_from_slice(body);
        }
        self.len += total;
        total
    }

    /// Appends pre-encoded frames (whole frames only).
    pub fn push_encoded(&mut self, pool: &Pool, frames: &[u8]) {
        let fits =
            matches!(self.blocks.back(), Some(b) if b.capacity() == BLOCK && BLOCK - b.len() >= frames.len());
        if !fits {
            let b = if frames.len() <= BLOCK { pool.get() } else { pool.get_exact(frames.len()) };
            self.blocks.push_back(b);
        }
        if let Some(b) = self.blocks.back_mut() {
            b.extend_from_slice(frames);
        }
        self.len += frames.len();
    }

    /// Fills `iov` with the pending bytes in order; returns how many slices were set.
    #[inline]
    pub fn slices<'a>(&'a self, iov: &mut [&'a [u8]]) -> usize {
        let mut n = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            if n == iov.len() {
                break;
            }
            let from = if i == 0 { self.head } else { 0 };
            if from < b.len() {
                iov[n] = &b[from..];
                n += 1;
            }
        }
        n
    }

    /// Marks `n` bytes written, returning emptied blocks to `pool`.
    #[inline]
    pub fn consume(&mut self, mut n: usize, pool: &Pool) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.blocks.front() else { break };
            let left = front.len() - self.head;
            if n >= left {
                n -= left;
                self.head = 0;
                if let Some(b) = self.blocks.pop_front() {
                    pool.put(b);
                }
            } else {
                self.head += n;
                n = 0;
            }
        }
        if self.len == 0 {
            while let Some(b) = self.blocks.pop_front() {
                pool.put(b);
            }
            self.head = 0;
        }
    }

    /// Discards everything not yet started; a frame partly written is kept so it can be completed.
    /// Returns the bytes discarded.
    pub fn discard_unsent<W: Wire>(&mut self, pool: &Pool, wire: &W) -> usize {
        let before = self.len;
        let keep_to = match self.blocks.front() {
            Some(front) if self.head > 0 => {
                // Walk the front block's frames to the one containing `head`.
                let mut pos = 0;
                while pos < self.head {
                    match wire.frame_len(&front[pos..]) {
                        Some(len) => pos += len,
                        None => break,
                    }
                }
                Some(pos.min(front.len()))
            }
            _ => None,
        };
        while self.blocks.len() > 1 {
            if let Some(b) = self.blocks.pop_back() {
                pool.put(b);
            }
        }
        match keep_to {
            Some(end) if end > self.head => {
                if let Some(front) = self.blocks.front_mut() {
                    front.truncate(end);
                }
                self.len = end - self.head;
            }
            _ => {
                if let Some(b) = self.blocks.pop_front() {
                    pool.put(b);
                }
                self.head = 0;
                self.len = 0;
            }
        }
        before - self.len
    }

    /// Returns every block to `pool`.
    pub fn release(&mut self, pool: &Pool) {
        while let Some(b) = self.blocks.pop_front() {
            pool.put(b);
        }
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_budget_counts_what_the_pools_allocated_until_it_is_freed() {
        let budget = MemoryBudget::new(1 << 20, 2);
        let pool = Pool::new(false, 4, 0).with_budget(budget.clone(), 1);
        let mut out = OutBuf::default();
        out.push_frame(&pool, &head(64, 1, 100), &[7; 100]);
        out.push_frame(&pool, &head(64, 2, 40_000), &[7; 40_000]);
        assert_eq!(budget.used(), BLOCK + HEADER_LEN + 40_000);
        assert!(budget.exceeded_by((3 << 18) - 56_000) && !budget.exceeded_by(1000));
        out.consume(HEADER_LEN + 100, &pool);
        assert_eq!(budget.used(), BLOCK + HEADER_LEN + 40_000, "a block in the free list is still resident");
        out.release(&pool);
        assert_eq!(budget.used(), BLOCK, "the freed large buffer is refunded, the kept block is not");
        let again = pool.get();
        assert_eq!(budget.used(), BLOCK, "recycling charges nothing");
        pool.put(again);
    }

    use super::*;
    use doorway_core::frame::{encode, HEADER_LEN};
    use doorway_core::wire::V1;

    /// A v1 frame's head bytes.
    fn head(kind: u16, seq: u32, len: usize) -> [u8; HEADER_LEN] {
        doorway_core::frame::Header::new(kind, seq, len as u32).to_bytes()
    }

    #[test]
    fn inbuf_cuts_split_frames_and_releases() {
        let pool = Pool::new(true, 4, 0);
        let mut frame = [0u8; 20];
        let n = encode(&mut frame, 64, 7, b"12345678").unwrap();
        let d = V1::default();
        let mut ib = InBuf::default();
        for byte in &frame[..n] {
            let space = ib.space(&pool).unwrap();
            space[0] = *byte;
            ib.filled(1, &d);
        }
        assert_eq!(ib.frames().len(), n);
        ib.consume(n);
        ib.release_if_empty(&pool);
        assert!(!ib.holds_buffer());
        assert_eq!(pool.free_blocks(), 1);
    }

    #[test]
    fn inbuf_grows_for_a_large_frame() {
        let pool = Pool::new(true, 4, 0);
        let body = vec![7u8; BLOCK * 2];
        let mut frame = vec![0u8; HEADER_LEN + body.len()];
        encode(&mut frame, 64, 1, &body).unwrap();
        let d = V1::new(1 << 20);
        let mut ib = InBuf::default();
        let mut off = 0;
        while off < frame.len() {
            let space = ib.space(&pool).expect("room");
            let k = space.len().min(frame.len() - off);
            space[..k].copy_from_slice(&frame[off..off + k]);
            off += k;
            ib.filled(k, &d);
        }
        assert_eq!(ib.frames(), &frame[..]);
    }

    #[test]
    fn outbuf_discard_completes_the_partial_frame() {
        let pool = Pool::new(false, 4, 0);
        let mut ob = OutBuf::default();
        for seq in 0..3 {
            ob.push_frame(&pool, &head(64, seq, 10), &[1; 10]);
        }
        assert_eq!(ob.len(), 66);
        ob.consume(5, &pool);
        assert_eq!(ob.discard_unsent(&pool, &V1::default()), 44);
        assert_eq!(ob.len(), 17);
        let mut iov: [&[u8]; 4] = [&[]; 4];
        assert_eq!(ob.slices(&mut iov), 1);
        assert_eq!(iov[0].len(), 17);
        ob.consume(17, &pool);
        assert!(ob.is_empty());
        ob.push_frame(&pool, &head(64, 0, 0), &[]);
        assert_eq!(ob.discard_unsent(&pool, &V1::default()), 12);
    }
}
