//! The admin API client the management commands use.

use anyhow::{bail, Context};
use serde_json::Value;

use crate::config::Settings;

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// URL from `AEX_URL`, else `[cli] url`, else the `listen` address; token from
    /// `AEX_ADMIN_TOKEN`, else `[cli] admin_token`.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let base = std::env::var("AEX_URL")
            .ok()
            .or_else(|| settings.cli.url.clone())
            .unwrap_or_else(|| {
                let mut addr = settings.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            });
        let token = std::env::var("AEX_ADMIN_TOKEN")
            .ok()
            .or_else(|| settings.cli.admin_token.as_ref().map(|t| t.expose().to_owned()))
            .context("no admin token: set AEX_ADMIN_TOKEN or [cli] admin_token in aex.toml (aex init writes it)")?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()?,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.bearer_auth(&self.token).send().await.with_context(|| {
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
            let field = body.pointer("/error/field").and_then(Value::as_str);
            match field {
                Some(f) => bail!("{status}: {message} (field `{f}`)"),
                None => bail!("{status}: {message}"),
            }
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}
