//! The unit prices of the media routes (issue 18): images per image by size and quality, audio
//! transcription and translation per minute (the hold's duration bounded from the upload's size at
//! a stated minimum bitrate), speech per character.

use std::collections::BTreeMap;

use super::routing_error::{invalid, RoutingError};
use crate::money::{parse_usd, MicroUsd, PricePerMillion};

/// The lowest bitrate assumed of an upload when its duration is bounded from its size: 6 kbps,
/// Opus's lowest, below MP3's (8 kbps) and AAC's; a slower codec is billed as reported and
/// flagged as the provider's overrun, or the operator lowers `audio_min_bitrate_bps`.
pub const DEFAULT_AUDIO_MIN_BITRATE_BPS: u32 = 6_000;

/// A model's media price keys, as written.
pub struct MediaPriceDoc<'a> {
    pub image_usd_per_image: &'a BTreeMap<String, String>,
    pub audio_usd_per_minute: Option<&'a str>,
    pub audio_min_bitrate_bps: Option<u32>,
    pub max_audio_seconds: Option<u32>,
    pub speech_usd_per_million_characters: Option<&'a str>,
}

/// Which media capabilities a model serves: each needs its price.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaNeeds {
    pub images: bool,
    pub audio: bool,
    pub speech: bool,
}

/// A model's validated media prices.
#[derive(Debug, Clone, Default)]
pub struct MediaPrices {
    /// Per image, by `SIZE` or `SIZE/QUALITY` (e.g. `1024x1024/hd`).
    pub per_image: BTreeMap<String, MicroUsd>,
    pub per_audio_minute: Option<MicroUsd>,
    pub audio_min_bitrate_bps: u64,
    pub max_audio_seconds: Option<u64>,
    pub per_million_characters: Option<PricePerMillion>,
}

impl MediaPrices {
    pub fn parse(
        key: &str,
        doc: MediaPriceDoc<'_>,
        needs: MediaNeeds,
    ) -> Result<Self, RoutingError> {
        let price = |field: &str, text: &str| {
            parse_usd(text).map_err(|e| invalid(format!("{key}.{field}"), e.to_string()))
        };
        let mut per_image = BTreeMap::new();
        for (k, text) in doc.image_usd_per_image {
            let field = format!("image_usd_per_image.\"{k}\"");
            let mut parts = k.split('/');
            let well_formed = parts.next().is_some_and(|s| !s.is_empty())
                && parts.next().is_none_or(|q| !q.is_empty())
                && parts.next().is_none();
            if !well_formed {
                return Err(invalid(
                    format!("{key}.{field}"),
                    "must be SIZE or SIZE/QUALITY, e.g. \"1024x1024/hd\"",
                ));
            }
            per_image.insert(k.clone(), price(&field, text)?);
        }
        let required = [
            (
                needs.images && per_image.is_empty(),
                "image_usd_per_image",
                "images",
            ),
            (
                needs.audio && doc.audio_usd_per_minute.is_none(),
                "audio_usd_per_minute",
                "transcriptions",
            ),
            (
                needs.speech && doc.speech_usd_per_million_characters.is_none(),
                "speech_usd_per_million_characters",
                "speech",
            ),
        ];
        if let Some((_, field, capability)) = required.iter().find(|r| r.0) {
            return Err(invalid(
                format!("{key}.{field}"),
                format!("is required for a model with the `{capability}` capability"),
            ));
        }
        let positive = |field: &str, v: Option<u32>| match v {
            Some(0) => Err(invalid(format!("{key}.{field}"), "must be positive")),
            other => Ok(other.map(u64::from)),
        };
        Ok(MediaPrices {
            per_image,
            per_audio_minute: doc
                .audio_usd_per_minute
                .map(|t| price("audio_usd_per_minute", t))
                .transpose()?,
            audio_min_bitrate_bps: positive("audio_min_bitrate_bps", doc.audio_min_bitrate_bps)?
                .unwrap_or(u64::from(DEFAULT_AUDIO_MIN_BITRATE_BPS)),
            max_audio_seconds: positive("max_audio_seconds", doc.max_audio_seconds)?,
            per_million_characters: doc
                .speech_usd_per_million_characters
                .map(|t| {
                    price("speech_usd_per_million_characters", t).map(|p| PricePerMillion(p.0))
                })
                .transpose()?,
        })
    }

    /// The image prices that can apply to `size` and `quality` (absent or `auto`: any; a key
    /// without a quality applies to every quality), as `(key, price)`.
    pub fn image_prices(&self, size: Option<&str>, quality: Option<&str>) -> Vec<(&str, MicroUsd)> {
        let any = |v: Option<&str>| v.is_none_or(|v| v == "auto");
        self.per_image
            .iter()
            .filter(|(k, _)| {
                let (ks, kq) = k
                    .split_once('/')
                    .map_or((k.as_str(), None), |(s, q)| (s, Some(q)));
                (any(size) || size == Some(ks)) && (any(quality) || kq.is_none() || kq == quality)
            })
            .map(|(k, p)| (k.as_str(), *p))
            .collect()
    }

    /// The cost of `seconds` of audio at the per-minute price, rounded up.
    pub fn audio_cost(&self, seconds: u64) -> MicroUsd {
        let per_minute = i128::from(self.per_audio_minute.unwrap_or(MicroUsd::ZERO).0);
        let cost = (i128::from(seconds) * per_minute + 59) / 60;
        MicroUsd(i64::try_from(cost).unwrap_or(i64::MAX))
    }

    /// The most seconds an upload of `bytes` can last: at least the minimum bitrate, so at most
    /// `ceil(bytes × 8 / bitrate)`, and never more than `max_audio_seconds` when set.
    pub fn audio_seconds_bound(&self, bytes: u64) -> u64 {
        let by_size = bytes
            .saturating_mul(8)
            .div_ceil(self.audio_min_bitrate_bps.max(1));
        self.max_audio_seconds.map_or(by_size, |m| by_size.min(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices(images: &[(&str, &str)]) -> MediaPrices {
        let table: BTreeMap<String, String> = images
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let doc = MediaPriceDoc {
            image_usd_per_image: &table,
            audio_usd_per_minute: Some("0.006"),
            audio_min_bitrate_bps: None,
            max_audio_seconds: None,
            speech_usd_per_million_characters: Some("15"),
        };
        MediaPrices::parse("models.m", doc, MediaNeeds::default()).unwrap()
    }

    #[test]
    fn image_prices_match_size_and_quality() {
        let p = prices(&[
            ("1024x1024/standard", "0.04"),
            ("1024x1024/hd", "0.08"),
            ("1792x1024/hd", "0.12"),
            ("256x256", "0.016"),
        ]);
        let keys = |s, q| {
            p.image_prices(s, q)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(Some("1024x1024"), Some("hd")), vec!["1024x1024/hd"]);
        assert_eq!(keys(Some("1024x1024"), None).len(), 2);
        assert_eq!(
            keys(None, Some("hd")),
            vec!["1024x1024/hd", "1792x1024/hd", "256x256"]
        );
        assert_eq!(keys(Some("256x256"), Some("standard")), vec!["256x256"]);
        assert!(keys(Some("512x512"), None).is_empty());
    }

    #[test]
    fn audio_is_bounded_from_size_and_billed_per_second() {
        let p = prices(&[]);
        // 6 kbps: 750 bytes a second.
        assert_eq!(p.audio_seconds_bound(750), 1);
        assert_eq!(p.audio_seconds_bound(751), 2);
        assert_eq!(p.audio_seconds_bound(25 * 1024 * 1024), 34_953);
        // 0.006 USD a minute is 100 micro-USD a second.
        assert_eq!(p.audio_cost(60), MicroUsd(6_000));
        assert_eq!(p.audio_cost(1), MicroUsd(100));
    }

    #[test]
    fn a_capability_without_its_price_and_a_malformed_key_are_named() {
        let empty = BTreeMap::new();
        let doc = |table| MediaPriceDoc {
            image_usd_per_image: table,
            audio_usd_per_minute: None,
            audio_min_bitrate_bps: None,
            max_audio_seconds: None,
            speech_usd_per_million_characters: None,
        };
        let needs = MediaNeeds {
            images: true,
            ..MediaNeeds::default()
        };
        let e = MediaPrices::parse("models.m", doc(&empty), needs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("models.m.image_usd_per_image"), "{e}");
        let bad: BTreeMap<String, String> = [("a/b/c".to_owned(), "1".to_owned())].into();
        let e = MediaPrices::parse("models.m", doc(&bad), needs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image_usd_per_image.\"a/b/c\""), "{e}");
    }
}
