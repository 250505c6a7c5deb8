//! Exact token counts for OpenAI's tiktoken encodings `o200k_base` and `cl100k_base`: the count
//! tiktoken's `encode_ordinary(text).len()` gives, without building its tables.
//!
//! A text is split into pieces by the encoding's regular expression (tiktoken's own pattern), and
//! each piece is byte-pair merged against the vocabulary ([`merge`]). The vocabulary is a compact
//! rank table over token bytes that build.rs derives from tiktoken-rs at build time ([`vocab`]):
//! a few MB per encoding where tiktoken-rs keeps tens.

mod merge;
mod vocab;

use fancy_regex::Regex;
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
    r"\s+(?!\S)",
    r"\s+",
];

/// tiktoken's pre-tokeniser for `cl100k_base`.
const CL100K_PATTERN: &[&str] = &[
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    r"[^\r\n\p{L}\p{N}]?\p{L}+",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
];

static O200K_VOCAB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.vocab"));
static CL100K_VOCAB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.vocab"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Vocab(#[from] VocabError),
    #[error("bad pre-tokeniser pattern: {0}")]
    Pattern(#[from] Box<fancy_regex::Error>),
}

/// One BPE encoding: its pre-tokeniser and its vocabulary.
pub struct Encoding {
    pattern: Regex,
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
        Ok(Encoding {
            pattern: Regex::new(&pattern.join("|")).map_err(Box::new)?,
            vocab: Vocab::from_packed(packed)?,
        })
    }

    /// The number of tokens `text` encodes to, special-token strings encoded as ordinary text.
    pub fn count(&self, text: &str) -> usize {
        let mut scratch = merge::Scratch::default();
        let mut tokens = 0;
        let mut counted_to = 0;
        for piece in self.pattern.find_iter(text) {
            match piece {
                Ok(piece) => {
                    tokens += merge::count(&self.vocab, piece.as_str().as_bytes(), &mut scratch);
                    counted_to = piece.end();
                }
                // The matcher gave up (its backtracking limit): count the rest at one token per
                // byte, a bound no merge can exceed, since every byte is a token.
                Err(_) => return tokens + (text.len() - counted_to),
            }
        }
        tokens
    }
}

#[cfg(test)]
mod parity_tests;
