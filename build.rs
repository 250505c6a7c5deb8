//! Writes the BPE vocabularies that `src/tokenizer` counts with into `OUT_DIR`, one file per
//! encoding: the number of tokens (u32, little-endian), then each token's length (one byte), then
//! all token bytes, both in rank order.
//!
//! The tokens come from tiktoken-rs, a build dependency only: its public decoder gives the bytes
//! of every rank. Deriving the files here keeps a 5 MB copy of the vocabularies out of the
//! repository and tiktoken-rs's tables (~75 MB resident) out of the server.

use std::error::Error;
use std::path::Path;

use tiktoken_rs::CoreBPE;

type Loader = fn() -> anyhow::Result<CoreBPE>;

/// Each encoding's file name, loader and number of ordinary tokens. Ordinary ranks are dense
/// from 0 in both (the special tokens, which counting never uses, come after).
const VOCABULARIES: [(&str, Loader, u32); 2] = [
    ("o200k_base.vocab", tiktoken_rs::o200k_base, 199_998),
    ("cl100k_base.vocab", tiktoken_rs::cl100k_base, 100_256),
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    // `sqlx::migrate!` embeds migrations/: a new file there must rebuild the crate.
    println!("cargo::rerun-if-changed=migrations");
    let out_dir = std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR for build scripts")?;
    for (file, load, count) in VOCABULARIES {
        let tokens: Vec<Vec<u8>> = load()?
            ._decode_native_and_split((0..count).collect())
            .collect();
        let mut packed = count.to_le_bytes().to_vec();
        for token in &tokens {
            let len = u8::try_from(token.len())
                .ok()
                .filter(|&len| len > 0)
                .ok_or_else(|| format!("{file}: a token of {} bytes", token.len()))?;
            packed.push(len);
        }
        tokens
            .iter()
            .for_each(|token| packed.extend_from_slice(token));
        std::fs::write(Path::new(&out_dir).join(file), packed)?;
    }
    Ok(())
}
