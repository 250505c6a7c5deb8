//! Exact token counts for OpenAI's tiktoken encodings `o200k_base` and `cl100k_base`: the count
//! tiktoken's `encode_ordinary(text).len()` gives, without building its tables.
//!
//! A text is split into pieces by the encoding's regular expression (tiktoken's own pattern), and
//! each piece is byte-pair merged against the vocabulary ([`merge`]). The vocabulary is a compact
//! rank table over token bytes that build.rs derives from tiktoken-rs at build time ([`vocab`]):
//! a few MB per encoding where tiktoken-rs keeps tens.
//!
//! tiktoken's patterns end in `\s+(?!\S)|\s+`. The look-ahead needs a backtracking matcher
//! (fancy-regex), which splits text about ten times slower than the regex crate's automata, so
//! the patterns here end in `\s+` and [`Encoding::count`] applies the look-ahead itself
//! ([`space_run_before_text`]).

mod merge;
mod vocab;

use regex_automata::meta::{BuildError, Cache, Regex};
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input};
use thiserror::Error;

use self::vocab::{Vocab, VocabError};

/// tiktoken's pre-tokeniser for `o200k_base`: letter runs split by case, with English
/// contractions attached; numbers in groups of up to three; punctuation runs; whitespace.
const O200K_PATTERN: &[&str] = &[
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+",
];

/// tiktoken's pre-tokeniser for `cl100k_base`.
const CL100K_PATTERN: &[&str] = &[
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    r"[^\r\n\p{L}\p{N}]?\p{L}+",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"\s*[\r\n]+",
    r"\s+",
];

static O200K_VOCAB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.vocab"));
static CL100K_VOCAB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.vocab"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Vocab(#[from] VocabError),
    #[error("bad pre-tokeniser pattern: {0}")]
    Pattern(#[from] Box<BuildError>),
}

/// The matcher's scratch space, one per thread at a time, kept warm between texts.
type CachePool = Pool<Cache, Box<dyn Fn() -> Cache + Send + Sync>>;

/// One BPE encoding: its pre-tokeniser and its vocabulary.
pub struct Encoding {
    pattern: Regex,
    caches: CachePool,
    vocab: Vocab,
}

impl Encoding {
    /// The encoding of gpt-4o, gpt-4.1, the o-series and gpt-5.
    pub fn o200k_base() -> Result<Encoding, LoadError> {
        Encoding::load(O200K_PATTERN, O200K_VOCAB)
    }

    /// The encoding of gpt-4, gpt-3.5 and text-embedding-3.
    pub fn cl100k_base() -> Result<Encoding, LoadError> {
        Encoding::load(CL100K_PATTERN, CL100K_VOCAB)
    }

    fn load(pattern: &[&str], packed: &'static [u8]) -> Result<Encoding, LoadError> {
        let pattern = Regex::new(&pattern.join("|")).map_err(Box::new)?;
        let for_caches = pattern.clone();
        Ok(Encoding {
            pattern,
            caches: Pool::new(Box::new(move || for_caches.create_cache())),
            vocab: Vocab::from_packed(packed)?,
        })
    }

    /// The number of tokens `text` encodes to, special-token strings encoded as ordinary text.
    pub fn count(&self, text: &str) -> usize {
        let mut scratch = merge::Scratch::default();
        self.pieces(text)
            .map(|piece| merge::count(&self.vocab, piece.as_bytes(), &mut scratch))
            .sum()
    }

    /// The pieces tiktoken's pattern splits `text` into, in order.
    fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        // One cache for the whole text: taking it from the pool per piece costs a mutex on a
        // thread that does not own the pool.
        let mut cache = self.caches.get();
        // Every character starts a match of some alternative (a letter, number, whitespace or
        // anything else), so the pieces tile the text: each starts where the last ended, and an
        // anchored search for its end alone finds it, without scanning back for its start.
        let mut input = Input::new(text).anchored(Anchored::Yes);
        std::iter::from_fn(move || {
            let start = input.start();
            let end = self.pattern.search_half_with(&mut cache, &input)?.offset();
            let piece = space_run_before_text(&text[start..end], &text[end..]);
            input.set_start(start + piece.len());
            Some(piece)
        })
    }
}

/// tiktoken's `\s+(?!\S)`: a run of whitespace that text follows ends one character early, so
/// that the character leads the next piece (" word"), unless that would leave the run empty.
///
/// Only runs matched by the patterns' last alternative `\s+` qualify, and those are exactly the
/// all-whitespace pieces without a line break: a run holding `\r` or `\n` matches the earlier
/// `\s*[\r\n]+`, and every other alternative needs a non-space.
fn space_run_before_text<'t>(piece: &'t str, rest: &str) -> &'t str {
    let text_follows = rest.starts_with(|c: char| !c.is_whitespace());
    let is_space_run = || {
        piece
            .chars()
            .all(|c| c.is_whitespace() && c != '\r' && c != '\n')
    };
    match piece.char_indices().next_back() {
        Some((last, _)) if last > 0 && text_follows && is_space_run() => &piece[..last],
        _ => piece,
    }
}

#[cfg(test)]
mod parity_tests;
