//! The admin API client the management commands use: URL and operator token from `AEX_URL` /
//! `AEX_ADMIN_TOKEN` or `[cli]` in aex.toml; errors carry the server's message and field.

use anyhow::{bail, Context};
use reqwest::{Method, Url};
use serde_json::Value;

use crate::config::Settings;

pub struct AdminClient {
    base: Url,
    token: String,
    http: reqwest::Client,
}

/// Query parameters of one call; unset ones are left out.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(&'static str, String)>);

impl Query {
    pub fn new() -> Self {
        Query::default()
    }

    pub fn add(mut self, key: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.0.push((key, v.to_string()));
        }
        self
    }
}

/// The server the CLI talks to: `AEX_URL`, else `[cli] url`, else the `listen` address.
pub fn server_url(settings: &Settings) -> String {
    std::env::var("AEX_URL")
        .ok()
        .or_else(|| settings.cli.url.clone())
        .unwrap_or_else(|| {
            let mut addr = settings.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        })
}

impl AdminClient {
    /// URL from `AEX_URL`, else `[cli] url`, else the `listen` address; token from
    /// `AEX_ADMIN_TOKEN`, else `[cli] admin_token`.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let base = server_url(settings);
        let base = Url::parse(&base).with_context(|| format!("invalid server URL {base:?}"))?;
        let token = std::env::var("AEX_ADMIN_TOKEN")
            .ok()
            .or_else(|| settings.cli.admin_token.as_ref().map(|t| t.expose().to_owned()))
            .context("no admin token: set AEX_ADMIN_TOKEN or [cli] admin_token in aex.toml (aex init writes it)")?;
        Ok(AdminClient {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()?,
        })
    }

    /// The URL of `segments` (each percent-encoded as one path segment) with `query`.
    fn url(&self, segments: &[&str], query: &Query) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the server URL {} cannot have a path", self.base))?
            .pop_if_empty()
            .extend(segments);
        if !query.0.is_empty() {
            url.query_pairs_mut().extend_pairs(&query.0);
        }
        Ok(url)
    }

    /// One admin API call; a non-2xx answer is an error with the server's message and field.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &Query,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, self.url(segments, query)?)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the AEX server at {} (is it running? `aex daemon start`)",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            match body.pointer("/error/field").and_then(Value::as_str) {
                Some(f) => bail!("{status}: {message} (field `{f}`)"),
                None => bail!("{status}: {message}"),
            }
        }
        Ok(body)
    }

    pub async fn get(&self, segments: &[&str], query: &Query) -> anyhow::Result<Value> {
        self.call(Method::GET, segments, query, None).await
    }

    pub async fn post(
        &self,
        segments: &[&str],
        query: &Query,
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.call(Method::POST, segments, query, Some(body)).await
    }

    /// A tenant given by name or id, as the id the API takes.
    pub async fn tenant_id(&self, tenant: Option<&str>) -> anyhow::Result<Option<String>> {
        let Some(t) = tenant else { return Ok(None) };
        if uuid::Uuid::parse_str(t).is_ok() {
            return Ok(Some(t.to_owned()));
        }
        let found = self.get(&["admin", "tenants", t], &Query::new()).await?;
        let id = found.get("id").and_then(Value::as_str);
        Ok(Some(
            id.context("the server answered without a tenant id")?
                .to_owned(),
        ))
    }

    /// `?tenant_id=` for a `--tenant` option (name or id).
    pub async fn tenant_query(&self, tenant: Option<&str>) -> anyhow::Result<Query> {
        Ok(Query::new().add("tenant_id", self.tenant_id(tenant).await?))
    }
}
