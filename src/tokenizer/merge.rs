//! Byte-pair merging of one pre-tokenised piece, counting the tokens it ends as.
//!
//! tiktoken's rule: start from single bytes; while some adjacent pair of parts spells a token,
//! merge the pair whose token has the lowest rank (the leftmost on a tie). Short pieces scan for
//! that pair, as tiktoken does; long ones (CJK runs, long words, base64) keep candidate pairs in
//! a heap, so a piece costs O(n log n) rather than tiktoken's O(n²). Both make the same merges.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::vocab::{Rank, Vocab};

/// Pieces up to this many bytes merge by scanning; longer ones by heap.
const SCAN_MAX: usize = 64;

/// No token: a pair that cannot merge.
const NONE: Rank = Rank::MAX;

/// Buffers reused across the pieces of one text.
#[derive(Default)]
pub struct Scratch {
    /// Scan: each part's start and the rank of it merged with the next part.
    parts: Vec<(usize, Rank)>,
    /// Heap: for each byte offset that still starts a part, the next part's start and the rank
    /// of the pair starting there (`NONE` once the offset is merged away).
    next: Vec<usize>,
    prev: Vec<usize>,
    pair_rank: Vec<Rank>,
    heap: BinaryHeap<Reverse<(Rank, usize)>>,
}

/// The number of tokens `piece` encodes to.
pub fn count(vocab: &Vocab, piece: &[u8], scratch: &mut Scratch) -> usize {
    if piece.len() <= 1 || vocab.rank(piece).is_some() {
        piece.len().min(1)
    } else if piece.len() <= SCAN_MAX {
        by_scan(vocab, piece, &mut scratch.parts)
    } else {
        by_heap(vocab, piece, scratch)
    }
}

/// Finds each merge by scanning all pairs: the fastest way for the short pieces most text is.
pub fn by_scan(vocab: &Vocab, piece: &[u8], parts: &mut Vec<(usize, Rank)>) -> usize {
    let rank = |from: usize, to: usize| vocab.rank(&piece[from..to]).unwrap_or(NONE);
    parts.clear();
    parts.extend((0..piece.len() - 1).map(|at| (at, rank(at, at + 2))));
    // The last byte and the end both start no pair.
    parts.push((piece.len() - 1, NONE));
    parts.push((piece.len(), NONE));
    loop {
        let mut best = (NONE, 0);
        for (at, &(_, pair)) in parts.iter().enumerate() {
            if pair < best.0 {
                best = (pair, at);
            }
        }
        let (best_rank, at) = best;
        if best_rank == NONE {
            return parts.len() - 1;
        }
        parts.remove(at + 1);
        // The merged part now pairs with a new right neighbour, and its left neighbour with it.
        let pair_from = |parts: &[(usize, Rank)], i: usize| match parts.get(i + 2) {
            Some(&(end, _)) => rank(parts[i].0, end),
            None => NONE,
        };
        parts[at].1 = pair_from(parts, at);
        if at > 0 {
            parts[at - 1].1 = pair_from(parts, at - 1);
        }
    }
}

/// Finds each merge by popping the lowest (rank, offset) from a heap of candidate pairs, over
/// the parts kept as a linked list of byte offsets.
pub fn by_heap(vocab: &Vocab, piece: &[u8], scratch: &mut Scratch) -> usize {
    let n = piece.len();
    let Scratch {
        next,
        prev,
        pair_rank,
        heap,
        ..
    } = scratch;
    next.clear();
    next.extend(1..=n);
    prev.clear();
    prev.push(0);
    prev.extend(0..n);
    pair_rank.clear();
    pair_rank.resize(n + 1, NONE);
    heap.clear();
    // The rank of the pair of parts starting at `at`, if a second part follows it.
    let pair_at = |next: &[usize], at: usize| -> Rank {
        let second = next[at];
        if second >= n {
            return NONE;
        }
        vocab.rank(&piece[at..next[second]]).unwrap_or(NONE)
    };
    for (at, pair) in pair_rank[..n - 1].iter_mut().enumerate() {
        *pair = vocab.rank(&piece[at..at + 2]).unwrap_or(NONE);
        if *pair != NONE {
            heap.push(Reverse((*pair, at)));
        }
    }
    let mut parts = n;
    while let Some(Reverse((rank, at))) = heap.pop() {
        // A pair whose parts have changed since it was pushed is stale: a part only grows, and
        // a longer byte string is a different token, so its rank no longer matches.
        if pair_rank[at] != rank {
            continue;
        }
        let gone = next[at];
        next[at] = next[gone];
        if next[at] < n {
            prev[next[at]] = at;
        }
        pair_rank[gone] = NONE;
        parts -= 1;
        // As in the scan: the merged part's pair and its left neighbour's pair change.
        let left = (at > 0).then(|| prev[at]);
        for start in std::iter::once(at).chain(left) {
            pair_rank[start] = pair_at(next, start);
            if pair_rank[start] != NONE {
                heap.push(Reverse((pair_rank[start], start)));
            }
        }
    }
    parts
}
