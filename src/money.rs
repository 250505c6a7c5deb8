//! Money as integer micro-USD, and the pricing arithmetic built on it.
//!
//! Nothing in AEX holds money as a float: amounts typed by a person ("5.00") are parsed exactly
//! into [`MicroUsd`], prices are integer micro-USD per million tokens, and a cost is always
//! rounded up so that AEX never under-charges.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Micro-USD per USD.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// An amount of money in micro-USD (1 USD = 1,000,000). Signed, because a remaining budget can go
/// below zero after an overrun that the provider really charged.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MicroUsd(pub i64);

impl MicroUsd {
    pub const ZERO: MicroUsd = MicroUsd(0);

    pub fn saturating_sub(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_sub(other.0))
    }

    pub fn saturating_add(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_add(other.0))
    }
}

/// A sum of micro-USD amounts over many rows, as wide as it needs to be: two agents with the
/// largest budget already overflow `i64`, and a total a tenant can inflate must never make a
/// view fail. Postgres sums `bigint` into `numeric`; queries hand it over as text
/// (`sum(x)::text`), decoded here exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MicroUsdSum(pub i128);

impl sqlx::Type<sqlx::Postgres> for MicroUsdSum {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for MicroUsdSum {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(MicroUsdSum(text.parse()?))
    }
}

impl fmt::Display for MicroUsd {
    /// Renders as decimal USD with six places, e.g. `5.000000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = MICROS_PER_USD as u64;
        write!(f, "{sign}{}.{:06}", abs / per, abs % per)
    }
}

/// Why a decimal amount could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseMoneyError {
    #[error("expected a decimal number such as \"5.00\", got {0:?}")]
    Malformed(String),
    #[error("{0:?} has more than 6 decimal places (the smallest unit is one micro-USD)")]
    TooPrecise(String),
    #[error("{0:?} must not be negative")]
    Negative(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a non-negative decimal USD amount ("5", "5.00", "0.000001") exactly into micro-USD.
pub fn parse_usd(text: &str) -> Result<MicroUsd, ParseMoneyError> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err(ParseMoneyError::Negative(text.to_owned()));
    }
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(ParseMoneyError::Malformed(text.to_owned()));
    }
    if frac.len() > 6 {
        return Err(ParseMoneyError::TooPrecise(text.to_owned()));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| ParseMoneyError::TooLarge(text.to_owned()))?
    };
    let frac_micros: i64 = if frac.is_empty() {
        0
    } else {
        // Right-pad to six digits: "15" -> "150000".
        format!("{frac:0<6}")
            .parse()
            .map_err(|_| ParseMoneyError::Malformed(text.to_owned()))?
    };
    whole
        .checked_mul(MICROS_PER_USD)
        .and_then(|w| w.checked_add(frac_micros))
        .map(MicroUsd)
        .ok_or_else(|| ParseMoneyError::TooLarge(text.to_owned()))
}

impl FromStr for MicroUsd {
    type Err = ParseMoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_usd(s)
    }
}

/// A price in micro-USD per million tokens ("0.15" USD per million = 150,000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PricePerMillion(pub i64);

impl PricePerMillion {
    /// Cost of `tokens` tokens: `ceil(tokens * price / 1_000_000)`, in integers. Saturates instead
    /// of overflowing (an absurd token count must not wrap into a small charge).
    pub fn cost(self, tokens: u64) -> MicroUsd {
        let product = i128::from(tokens) * i128::from(self.0);
        let cost = (product + 999_999) / 1_000_000;
        MicroUsd(i64::try_from(cost).unwrap_or(i64::MAX))
    }

    /// How many tokens `budget` affords at this price (rounded down); `None` for a free price.
    pub fn tokens_affordable(self, budget: MicroUsd) -> Option<u64> {
        if self.0 <= 0 {
            return None;
        }
        let budget = i128::from(budget.0.max(0));
        let tokens = budget * 1_000_000 / i128::from(self.0);
        Some(u64::try_from(tokens).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_usd_exactly() {
        assert_eq!(parse_usd("5.00"), Ok(MicroUsd(5_000_000)));
        assert_eq!(parse_usd("0.15"), Ok(MicroUsd(150_000)));
        assert_eq!(parse_usd("0.000001"), Ok(MicroUsd(1)));
        assert_eq!(parse_usd("7"), Ok(MicroUsd(7_000_000)));
        assert_eq!(parse_usd(".5"), Ok(MicroUsd(500_000)));
        assert_eq!(parse_usd("2."), Ok(MicroUsd(2_000_000)));
    }

    #[test]
    fn rejects_what_is_not_an_exact_amount() {
        assert!(matches!(
            parse_usd("0.0000001"),
            Err(ParseMoneyError::TooPrecise(_))
        ));
        assert!(matches!(parse_usd("-1"), Err(ParseMoneyError::Negative(_))));
        assert!(matches!(
            parse_usd("1e3"),
            Err(ParseMoneyError::Malformed(_))
        ));
        assert!(matches!(parse_usd(""), Err(ParseMoneyError::Malformed(_))));
        assert!(matches!(parse_usd("."), Err(ParseMoneyError::Malformed(_))));
        assert!(matches!(
            parse_usd("99999999999999999999"),
            Err(ParseMoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn cost_rounds_up_to_the_next_micro_usd() {
        let price = PricePerMillion(150_000); // 0.15 USD per million
        assert_eq!(price.cost(0), MicroUsd(0));
        assert_eq!(price.cost(1), MicroUsd(1)); // 0.15 micro-USD rounds up to 1
        assert_eq!(price.cost(1_000_000), MicroUsd(150_000));
        assert_eq!(price.cost(7), MicroUsd(2)); // 1.05 -> 2
        assert_eq!(PricePerMillion(i64::MAX).cost(u64::MAX), MicroUsd(i64::MAX));
    }

    #[test]
    fn tokens_affordable_never_exceeds_the_budget() {
        let price = PricePerMillion(600_000);
        let tokens = price.tokens_affordable(MicroUsd(1_000)).unwrap();
        assert!(price.cost(tokens) <= MicroUsd(1_000));
        assert!(
            price.cost(tokens + 1) > MicroUsd(1_000) || price.cost(tokens + 2) > MicroUsd(1_000)
        );
        assert_eq!(PricePerMillion(0).tokens_affordable(MicroUsd(5)), None);
    }

    #[test]
    fn displays_as_decimal_usd() {
        assert_eq!(MicroUsd(5_000_000).to_string(), "5.000000");
        assert_eq!(MicroUsd(-1).to_string(), "-0.000001");
    }
}
