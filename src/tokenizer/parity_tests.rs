//! The counts checked against tiktoken-rs's `encode_ordinary(text).len()`, the reference.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tiktoken_rs::CoreBPE;

use super::merge::{self, Scratch};
use super::{Encoding, CL100K_PATTERN, O200K_PATTERN};

struct Pair {
    ours: Encoding,
    reference: CoreBPE,
    /// tiktoken's pattern as tiktoken writes it, look-ahead included.
    pattern: fancy_regex::Regex,
}

impl Pair {
    fn new(ours: Encoding, reference: CoreBPE, pattern: &[&str]) -> Pair {
        let (last, rest) = pattern.split_last().unwrap();
        assert_eq!(*last, r"\s+");
        let original = [rest, &[r"\s+(?!\S)", r"\s+"]].concat().join("|");
        let pattern = fancy_regex::Regex::new(&original).unwrap();
        Pair {
            ours,
            reference,
            pattern,
        }
    }
}

static O200K: LazyLock<Pair> = LazyLock::new(|| {
    let reference = tiktoken_rs::o200k_base().unwrap();
    Pair::new(Encoding::o200k_base().unwrap(), reference, O200K_PATTERN)
});
static CL100K: LazyLock<Pair> = LazyLock::new(|| {
    let reference = tiktoken_rs::cl100k_base().unwrap();
    Pair::new(Encoding::cl100k_base().unwrap(), reference, CL100K_PATTERN)
});

fn both() -> [(&'static str, &'static Pair); 2] {
    [("o200k_base", &O200K), ("cl100k_base", &CL100K)]
}

/// Same pieces as tiktoken's pattern, same count as tiktoken-rs.
fn assert_matches_tiktoken(name: &str, pair: &Pair, text: &str) {
    let pieces: Vec<&str> = pair
        .pattern
        .find_iter(text)
        .map(|m| m.unwrap().as_str())
        .collect();
    assert_eq!(pair.ours.pieces(text).collect::<Vec<_>>(), pieces, "{name}");
    let expected = pair.reference.encode_ordinary(text).len();
    assert_eq!(pair.ours.count(text), expected, "{name} on {text:?}");
}

#[test]
fn every_token_has_tiktokens_rank() {
    for (name, pair) in both() {
        let ranks = 0..pair.ours.vocab.len() as u32;
        let tokens = pair
            .reference
            ._decode_native_and_split(ranks.clone().collect());
        for (rank, token) in ranks.zip(tokens) {
            assert_eq!(pair.ours.vocab.rank(&token), Some(rank), "{name} {token:?}");
        }
    }
}

#[test]
fn the_rank_table_rarely_probes_past_the_home_slot() {
    for (name, pair) in both() {
        let vocab = &pair.ours.vocab;
        // Linear probing at most half full averages 1.5 probes per hit with a uniform hash.
        let mean_x100 = 100 * vocab.total_probes() / vocab.len();
        assert!(
            mean_x100 <= 160,
            "{name}: {mean_x100}/100 probes per look-up"
        );
    }
}

const SAMPLES: &[&str] = &[
    "",
    "a",
    " ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. It's what they'd've done, isn't it? I'LL SEE.",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}\n",
    "def f(a, b):\r\n\treturn {'a': a, \"b\": [b, None]}  # comment\r\n",
    "<|endoftext|> special tokens are ordinary text here <|fim_prefix|><|endofprompt|>",
    "                                                                      trailing",
    "\n\n\n\n   \n\t\t\t\n \r\n\r\n  x  \n  ",
    "1234567890 3.14159 -42 1e10 0x7fff_ffff 12,345,678.90 ١٢٣٤٥ ½ ²",
    "Emoji: 🦀🎉👍🏽 👨‍👩‍👧‍👦 ❤️‍🔥 🏳️‍🌈 flags 🇫🇷🇯🇵",
    "中文文本没有空格所以一个片段可以很长这句话就是一个例子我们需要正确地计算它的令牌数量",
    "日本語のテキストとカタカナ、ひらがな。한국어 텍스트도 있습니다.",
    "مرحبا بالعالم، هذا نص عربي مع أرقام ١٢٣ وعلامات الترقيم؟",
    "Ünïcödé àccénts: naïve café résumé Ångström façade Œuvre ǅemal ǈ",
    "e\u{301}\u{301}\u{301} a\u{308} combining marks and a zero\u{200b}width space",
    "Supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "https://example.com/path/to/resource?query=value&other=42#fragment",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":16}",
    "!!!???...---***///\\\\\\|||~~~```'''\"\"\"",
    "\u{a0}\u{2003}\u{3000}\u{85}\u{2028}\u{b}\u{c}mixed unicode whitespace\u{a0} \u{3000}",
];

#[test]
fn counts_match_tiktoken_on_varied_texts() {
    for (name, pair) in both() {
        for text in SAMPLES {
            assert_matches_tiktoken(name, pair, text);
        }
    }
}

#[test]
fn counts_match_tiktoken_on_long_runs() {
    let long_word = "abcdefghij".repeat(500);
    let base64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==".repeat(40);
    let texts = [
        "a".repeat(3000),
        "ab".repeat(2000),
        " ".repeat(5000),
        format!("{}x", " ".repeat(5000)),
        "\n".repeat(2000),
        "1".repeat(3000),
        "!?".repeat(1000),
        "中".repeat(2000),
        "我们需要正确地计算".repeat(200),
        "🦀".repeat(500),
        long_word,
        base64,
    ];
    for (name, pair) in both() {
        for text in &texts {
            assert_matches_tiktoken(name, pair, text);
        }
    }
}

/// Characters drawn from groups that the patterns treat differently: cases (upper, lower,
/// title, modifier, other letters), marks, numbers, punctuation, whitespace of every kind.
const GROUPS: &[&str] = &[
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " ",
    "  \t\n\r\u{b}\u{c}\u{85}\u{a0}\u{2003}\u{2028}\u{3000}",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "éèêëàâäôöûüçñßÉÀÖÜÑŒœ",
    "ǅǈǋǲʰʲˠᵃ",
    "\u{301}\u{308}\u{327}\u{200b}\u{200d}\u{fe0f}",
    "你好世界中文日本語のテキスト한국어",
    "مرحبابالعالمالعربية١٢٣٤٥",
    "ПриветмирΑλφαβητο",
    "🦀🎉👍🏽👨😀❤🇫🇷",
    "½²³¼٣۴߀",
];
const CONTRACTIONS: &[&str] = &["'s", "'T", "'re", "'VE", "'m", "'ll", "'D", "’s", "'x"];

fn random_text(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for _ in 0..rng.gen_range(0..60) {
        match rng.gen_range(0..10) {
            0 => text.push_str(CONTRACTIONS[rng.gen_range(0..CONTRACTIONS.len())]),
            // Any scalar value: controls, private use, unassigned, astral planes.
            1 => text.extend(char::from_u32(rng.gen_range(0..0x11_0000))),
            _ => {
                let group: Vec<char> = GROUPS[rng.gen_range(0..GROUPS.len())].chars().collect();
                let one = group[rng.gen_range(0..group.len())];
                // Mostly short runs of one group, sometimes a long run of one character.
                if rng.gen_ratio(1, 20) {
                    text.extend(std::iter::repeat_n(one, rng.gen_range(2..200)));
                } else {
                    for _ in 0..rng.gen_range(1..8) {
                        text.push(group[rng.gen_range(0..group.len())]);
                    }
                }
            }
        }
    }
    text
}

#[test]
fn counts_match_tiktoken_on_thousands_of_random_texts() {
    for (seed, (name, pair)) in both().into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(0xae5 + seed as u64);
        for _ in 0..3000 {
            assert_matches_tiktoken(name, pair, &random_text(&mut rng));
        }
    }
}

#[test]
fn rust_and_the_pattern_agree_on_what_is_whitespace() {
    // The look-ahead applied in code asks Rust; the pattern's `\s` asks regex-syntax's tables.
    let space = regex_automata::meta::Regex::new(r"^\s$").unwrap();
    let mut buf = [0; 4];
    let spaces = (0..=u32::from(char::MAX))
        .filter_map(char::from_u32)
        .filter(|c| {
            let pattern_says = space.is_match(c.encode_utf8(&mut buf) as &str);
            assert_eq!(c.is_whitespace(), pattern_says, "{c:?}");
            pattern_says
        });
    assert_eq!(spaces.count(), 25);
}

#[test]
fn scan_and_heap_merges_agree() {
    let vocab = &O200K.ours.vocab;
    let mut rng = StdRng::seed_from_u64(7);
    let mut scratch = Scratch::default();
    let mut parts = Vec::new();
    let mut merged_somewhere = false;
    for _ in 0..2000 {
        let text = random_text(&mut rng);
        // Any byte string longer than one byte: the merges need no pre-tokenisation.
        if text.len() >= 2 {
            let scan = merge::by_scan(vocab, text.as_bytes(), &mut parts);
            let heap = merge::by_heap(vocab, text.as_bytes(), &mut scratch);
            assert_eq!(scan, heap, "{text:?}");
            merged_somewhere |= scan < text.len();
        }
    }
    assert!(merged_somewhere);
}

/// Counts per second of ours and tiktoken-rs's on a ~1 KB and a ~16 KB prompt, and the time
/// each takes to load both encodings. Run in release:
/// `cargo test --release --lib tokenizer::parity_tests::speed -- --ignored --nocapture`
#[test]
#[ignore]
fn speed() {
    let started = Instant::now();
    let ours = (
        Encoding::o200k_base().unwrap(),
        Encoding::cl100k_base().unwrap(),
    );
    let ours_load = started.elapsed();
    let started = Instant::now();
    let reference = (
        tiktoken_rs::o200k_base().unwrap(),
        tiktoken_rs::cl100k_base().unwrap(),
    );
    let reference_load = started.elapsed();
    println!("load both encodings: ours {ours_load:?}, tiktoken-rs {reference_load:?}");

    let paragraph = SAMPLES[4..].concat();
    for size in [1 << 10, 16 << 10] {
        let mut prompt = String::new();
        while prompt.len() < size {
            prompt.push_str(&paragraph);
        }
        let mut end = size;
        while !prompt.is_char_boundary(end) {
            end -= 1;
        }
        let prompt = &prompt[..end];
        for (name, ours, reference) in [
            ("o200k_base", &ours.0, &reference.0),
            ("cl100k_base", &ours.1, &reference.1),
        ] {
            assert_eq!(ours.count(prompt), reference.encode_ordinary(prompt).len());
            // Alternating short rounds, best of each: the machine is shared, and the best round
            // is the one least disturbed.
            let (mut ours_rate, mut reference_rate) = (0, 0);
            for _ in 0..5 {
                ours_rate = ours_rate.max(rate(|| ours.count(prompt)));
                reference_rate =
                    reference_rate.max(rate(|| reference.encode_ordinary(prompt).len()));
            }
            println!(
                "{name} {} bytes: ours {ours_rate} counts/s, tiktoken-rs {reference_rate} counts/s, \
                 ours/theirs {}%",
                prompt.len(),
                100 * ours_rate / reference_rate
            );
        }
    }
}

/// The time ours takes for one word of a million letters (tiktoken-rs's merge is quadratic in a
/// piece's length: it would take hours). Run as `speed`.
#[test]
#[ignore]
fn speed_of_a_long_word() {
    let ours = Encoding::o200k_base().unwrap();
    for word in [
        "a".repeat(1 << 20),
        "ab".repeat(1 << 19),
        "中".repeat(1 << 18),
    ] {
        let started = Instant::now();
        let tokens = ours.count(&word);
        println!(
            "{} bytes of {:?}…: {tokens} tokens in {:?}",
            word.len(),
            &word[..6],
            started.elapsed()
        );
    }
}

/// Calls per second of `count`, over a fifth of a second.
fn rate(count: impl Fn() -> usize) -> u64 {
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_millis(200) {
        std::hint::black_box(count());
        calls += 1;
    }
    calls * 1_000_000 / started.elapsed().as_micros() as u64
}
