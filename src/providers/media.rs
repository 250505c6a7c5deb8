//! One call of a media route, read whole: a body of its own content type (JSON, or a multipart
//! upload) POSTed to the provider's URL for the route with the provider's auth, and the answer
//! (JSON, text or audio bytes) read to its end within the provider's timeout.

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;

use super::openai::{classify, key_for, OpenAiCompatible};
use super::{ProviderError, UpstreamResponse};
use crate::config::ProviderRoute;

/// One media call to send.
pub struct WholeRequest<'a> {
    pub provider: &'a ProviderRoute,
    /// The path below the provider's base URL.
    pub path: &'a str,
    pub content_type: &'a str,
    pub body: Bytes,
    /// A caller-supplied key (`X-AEX-Provider-Key`), used instead of the configured one.
    pub passthrough_key: Option<&'a str>,
}

impl OpenAiCompatible {
    /// Sends `req` and reads the whole answer.
    pub async fn send_whole(
        &self,
        req: WholeRequest<'_>,
    ) -> Result<UpstreamResponse, ProviderError> {
        let provider = req.provider.name.clone();
        let builder = self
            .client
            .post(req.provider.url(req.path))
            .header(CONTENT_TYPE, req.content_type)
            .body(req.body);
        let key = key_for(req.provider, req.passthrough_key);
        let builder = req.provider.authorize(builder, key.as_deref());
        let timeout = || ProviderError::Timeout {
            provider: provider.clone(),
        };
        let limit = req.provider.timeout;
        let response = tokio::time::timeout(limit, builder.send())
            .await
            .map_err(|_| timeout())?
            .map_err(|e| classify(&provider, e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = tokio::time::timeout(limit, response.bytes())
            .await
            .map_err(|_| timeout())?
            .map_err(|e| classify(&provider, e))?;
        Ok(UpstreamResponse {
            status,
            content_type,
            body,
        })
    }
}
