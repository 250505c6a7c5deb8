//! Prices as the provider invoices them, beyond a plain input and output token price: cached
//! input (cache reads) and cache writes at their own prices, hosted-tool fees per call. Each is
//! charged on what the provider reports; the hold prices every input token at the dearest input
//! price the model has, so a discount only lowers the actual and a cache-write premium never
//! exceeds the hold.

use crate::money::{MicroUsd, PricePerMillion};

use super::routing::ModelRoute;

/// Input tokens of one call by how they are billed. `cached` and `cache_write` are part of the
/// prompt: each token is billed once, at its own price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputTokens {
    pub prompt: u64,
    pub cached: u64,
    pub cache_write: u64,
}

impl InputTokens {
    /// The split with the cached and cache-write counts kept within the prompt (a provider that
    /// reports more cached tokens than prompt tokens is not paid for tokens it did not read):
    /// `(uncached, cached, cache_write)`.
    pub fn split(self) -> (u64, u64, u64) {
        let cached = self.cached.min(self.prompt);
        let cache_write = self.cache_write.min(self.prompt - cached);
        (self.prompt - cached - cache_write, cached, cache_write)
    }
}

impl ModelRoute {
    /// The price of a cache read: `cached_input_usd_per_million`, else the input price.
    pub fn cached_input_price(&self) -> PricePerMillion {
        self.cached_input_price.unwrap_or(self.input_price)
    }

    /// The price of a cache write: `cache_write_usd_per_million`, else the input price.
    pub fn cache_write_price(&self) -> PricePerMillion {
        self.cache_write_price.unwrap_or(self.input_price)
    }

    /// The price the hold puts on every input token: the dearest of the input, cache-read and
    /// cache-write prices, so whatever the provider reads from or writes to its cache, the
    /// actual stays within the hold.
    pub fn input_price_bound(&self) -> PricePerMillion {
        PricePerMillion(
            self.input_price
                .0
                .max(self.cached_input_price().0)
                .max(self.cache_write_price().0),
        )
    }

    /// The cost of `input`, each token at its price, rounded up once over the whole (three
    /// roundings could add 2 micro-USD and pass the hold's single rounding).
    pub fn input_cost(&self, input: InputTokens) -> MicroUsd {
        let (uncached, cached, write) = input.split();
        let micro_millions = i128::from(uncached) * i128::from(self.input_price.0)
            + i128::from(cached) * i128::from(self.cached_input_price().0)
            + i128::from(write) * i128::from(self.cache_write_price().0);
        let cost = (micro_millions + 999_999) / 1_000_000;
        MicroUsd(i64::try_from(cost).unwrap_or(i64::MAX))
    }

    /// The fee of one call of hosted tool `tool` (`web_search`, `file_search`, …, as providers
    /// name their call items without `_call`): the table's entry of that name; else the dearest
    /// entry whose name starts with it (`web_search_preview`); else the dearest entry at all (a
    /// call the provider made under a name the table does not use is not free).
    pub fn hosted_tool_fee(&self, tool: &str) -> MicroUsd {
        if let Some(fee) = self.hosted_tool_fees.get(tool) {
            return *fee;
        }
        let dearest = |prefixed: bool| {
            self.hosted_tool_fees
                .iter()
                .filter(|(name, _)| !prefixed || name.starts_with(tool))
                .map(|(_, fee)| *fee)
                .max()
        };
        dearest(true)
            .or_else(|| dearest(false))
            .unwrap_or(MicroUsd::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoutingTable;

    fn model(extra: &str) -> ModelRoute {
        let doc = format!(
            "[providers.p]\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n\
             [models.m]\nprovider = \"p\"\nupstream_model = \"gpt-4o\"\n\
             input_usd_per_million = \"2.50\"\noutput_usd_per_million = \"10\"\n\
             capabilities = [\"chat\"]\n{extra}"
        );
        let table = RoutingTable::parse(&doc, 1).unwrap();
        table.model("m").unwrap().as_ref().clone()
    }

    #[test]
    fn cached_tokens_are_billed_once_at_their_price() {
        let m = model("cached_input_usd_per_million = \"1.25\"\n");
        // 1,000 prompt tokens of which 400 cached: 600 × 2.50 + 400 × 1.25 = 2,000 micro-USD.
        let input = InputTokens {
            prompt: 1_000,
            cached: 400,
            cache_write: 0,
        };
        assert_eq!(m.input_cost(input), MicroUsd(2_000));
        assert_eq!(m.input_price_bound(), m.input_price);
        // A report of more cached tokens than prompt tokens bills the prompt, all cached.
        let absurd = InputTokens {
            prompt: 10,
            cached: 50,
            cache_write: 7,
        };
        assert_eq!(absurd.split(), (0, 10, 0));
    }

    #[test]
    fn a_cache_write_premium_raises_the_held_price_and_one_rounding_keeps_it_a_bound() {
        let m = model(
            "cached_input_usd_per_million = \"0.30\"\ncache_write_usd_per_million = \"3.75\"\n",
        );
        assert_eq!(m.input_price_bound(), PricePerMillion(3_750_000));
        for prompt in 0..200u64 {
            for cached in [0, prompt / 3, prompt] {
                let input = InputTokens {
                    prompt,
                    cached,
                    cache_write: (prompt - cached) / 2,
                };
                assert!(m.input_cost(input) <= m.input_price_bound().cost(prompt));
            }
        }
        let plain = model("");
        for prompt in 0..50u64 {
            let input = InputTokens {
                prompt,
                cached: prompt / 2,
                cache_write: 0,
            };
            // Without cache prices a cached token costs what any input token costs.
            assert_eq!(plain.input_cost(input), plain.input_price.cost(prompt));
        }
    }

    #[test]
    fn hosted_tool_fees_by_name_then_prefix_then_dearest() {
        let m = model("hosted_tool_usd_per_call = { web_search_preview = \"0.025\", file_search = \"0.0025\" }\n");
        assert_eq!(m.hosted_tool_fee("file_search"), MicroUsd(2_500));
        assert_eq!(m.hosted_tool_fee("web_search"), MicroUsd(25_000));
        assert_eq!(m.hosted_tool_fee("code_interpreter"), MicroUsd(25_000));
        assert_eq!(model("").hosted_tool_fee("web_search"), MicroUsd::ZERO);
    }
}
