//! A BPE vocabulary as a compact rank table: the token bytes stay in the binary's read-only data
//! as build.rs packed them, and an open-addressing hash table of one `u64` per slot finds a byte
//! string's rank (about 4 MB for `o200k_base`, 2 MB for `cl100k_base`).

use thiserror::Error;

/// A token's position in the merge order; lower merges first.
pub type Rank = u32;

#[derive(Debug, Error)]
#[error("malformed vocabulary: {0}")]
pub struct VocabError(&'static str);

/// A slot packs, from the high bits: 8 bits of the key's hash (so most mismatches are rejected
/// without reading the token), the rank (24 bits), the token's offset in the byte arena (24) and
/// its length (8). Zero is an empty slot: no token is empty.
const FIELD_BITS: u32 = 24;
const FIELD_MAX: usize = (1 << FIELD_BITS) - 1;
const TAG_AND_LEN: u64 = 0xff00_0000_0000_00ff;

pub struct Vocab {
    /// Every token's bytes, in rank order.
    arena: &'static [u8],
    slots: Box<[u64]>,
    /// 64 minus log2 of the slot count: the hash's top bits pick the home slot.
    shift: u32,
}

impl Vocab {
    /// Indexes a vocabulary packed by build.rs: a `u32` count, one length byte per token, then
    /// the tokens' bytes, all in rank order.
    pub fn from_packed(packed: &'static [u8]) -> Result<Vocab, VocabError> {
        let (count, rest) = packed
            .split_first_chunk::<4>()
            .ok_or(VocabError("no token count"))?;
        let count = u32::from_le_bytes(*count) as usize;
        if rest.len() < count {
            return Err(VocabError("fewer lengths than tokens"));
        }
        let (lengths, arena) = rest.split_at(count);
        if count > FIELD_MAX || arena.len() > FIELD_MAX {
            return Err(VocabError("too large for a slot's fields"));
        }
        // At most half full, so a probe for a missing key usually stops at the first empty slot.
        let slot_count = (2 * count).next_power_of_two().max(2);
        let mut vocab = Vocab {
            arena,
            slots: vec![0; slot_count].into_boxed_slice(),
            shift: 64 - slot_count.trailing_zeros(),
        };
        let mut start = 0;
        for (rank, &len) in lengths.iter().enumerate() {
            let end = start + usize::from(len);
            let token = arena
                .get(start..end)
                .ok_or(VocabError("lengths past the end"))?;
            if len == 0 {
                return Err(VocabError("an empty token"));
            }
            if vocab.rank(token).is_some() {
                return Err(VocabError("a token listed twice"));
            }
            let hash = hash(token);
            let slot = (u64::from(vocab.tag(hash)) << 56)
                | ((rank as u64) << 32)
                | ((start as u64) << 8)
                | u64::from(len);
            let mut at = vocab.home(hash);
            while vocab.slots[at] != 0 {
                at = (at + 1) & (slot_count - 1);
            }
            vocab.slots[at] = slot;
            start = end;
        }
        if start != arena.len() {
            return Err(VocabError("bytes after the last token"));
        }
        Ok(vocab)
    }

    /// The rank of the token spelled `bytes`, if there is one.
    #[inline]
    pub fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        let hash = hash(bytes);
        // A slot whose tag and length both match is checked byte for byte.
        let wanted = (u64::from(self.tag(hash)) << 56) | bytes.len() as u64;
        let mask = self.slots.len() - 1;
        let mut at = self.home(hash);
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot & TAG_AND_LEN == wanted {
                let start = (slot >> 8) as usize & FIELD_MAX;
                if self.arena.get(start..start + bytes.len()) == Some(bytes) {
                    return Some((slot >> 32) as Rank & FIELD_MAX as Rank);
                }
            }
            at = (at + 1) & mask;
        }
    }

    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The 8 hash bits just below those that chose the home slot.
    fn tag(&self, hash: u64) -> u8 {
        (hash >> (self.shift - 8)) as u8
    }

    /// The number of tokens (for the tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.iter().filter(|&&slot| slot != 0).count()
    }

    /// Slots visited by successful look-ups, summed over every token (for the tests).
    #[cfg(test)]
    pub(super) fn total_probes(&self) -> usize {
        let mask = self.slots.len() - 1;
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, &slot)| slot != 0)
            .map(|(at, &slot)| {
                let start = (slot >> 8) as usize & FIELD_MAX;
                let token = &self.arena[start..start + (slot & 0xff) as usize];
                1 + (at.wrapping_sub(self.home(hash(token))) & mask)
            })
            .sum()
    }
}

/// A multiply-rotate hash over 8-byte words (most tokens are one word); the multiplication
/// leaves the best-mixed bits at the top, which is where `home` and `tag` read.
#[inline]
fn hash(bytes: &[u8]) -> u64 {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    bytes.chunks(8).fold(bytes.len() as u64, |hash, chunk| {
        let mut word = [0; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        (hash.rotate_left(26) ^ u64::from_le_bytes(word)).wrapping_mul(SEED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(tokens: &[&[u8]]) -> &'static [u8] {
        let mut out = (tokens.len() as u32).to_le_bytes().to_vec();
        out.extend(tokens.iter().map(|t| t.len() as u8));
        tokens.iter().for_each(|t| out.extend_from_slice(t));
        out.leak()
    }

    #[test]
    fn finds_every_token_by_its_bytes_and_nothing_else() {
        let vocab =
            Vocab::from_packed(packed(&[b"a", b"b", b"ab", b"abc", b"a longer token!"])).unwrap();
        assert_eq!(vocab.len(), 5);
        assert_eq!(vocab.rank(b"a"), Some(0));
        assert_eq!(vocab.rank(b"ab"), Some(2));
        assert_eq!(vocab.rank(b"a longer token!"), Some(4));
        assert_eq!(vocab.rank(b"ba"), None);
        assert_eq!(vocab.rank(b"abcd"), None);
        assert_eq!(vocab.rank(b""), None);
    }

    #[test]
    fn rejects_malformed_packings() {
        let count_only = 3u32.to_le_bytes().to_vec().leak();
        assert!(Vocab::from_packed(count_only).is_err());
        assert!(Vocab::from_packed(packed(&[b"a", b"a"])).is_err());
        assert!(Vocab::from_packed(packed(&[b"a", b""])).is_err());
        let mut trailing = packed(&[b"a"]).to_vec();
        trailing.push(b'x');
        assert!(Vocab::from_packed(trailing.leak()).is_err());
    }
}
