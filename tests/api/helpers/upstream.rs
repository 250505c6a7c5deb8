//! The provider side: the routing table every test server uses, pointing at the loopback mock
//! (`aex::dev::mock_upstream`, which the server module starts).

use std::net::SocketAddr;

/// The routing table the tests use, pointing at the mock.
pub fn models_toml(mock: SocketAddr) -> String {
    format!(
        r#"
[providers.mock]
kind = "openai"
base_url = "http://{mock}/v1"
timeout_seconds = 30

[providers.slow]
kind = "openai"
base_url = "http://{mock}/v1"
timeout_seconds = 1

[models."gpt-4o-mini"]
provider = "mock"
upstream_model = "mock-gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 1000
capabilities = ["chat", "streaming", "tools", "vision", "responses"]

[models."pricey"]
provider = "mock"
upstream_model = "mock-pricey"
input_usd_per_million = "30"
output_usd_per_million = "60"
max_output_tokens = 100
capabilities = ["chat", "streaming", "responses"]

[models."slow-model"]
provider = "slow"
upstream_model = "mock-slow"
input_usd_per_million = "1"
output_usd_per_million = "2"
max_output_tokens = 100
capabilities = ["chat"]

[models."text-embedding-3-small"]
provider = "mock"
upstream_model = "mock-embedding"
input_usd_per_million = "0.02"
capabilities = ["embeddings"]
"#
    )
}
