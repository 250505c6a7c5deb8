//! The HTTP provider, on one shared pooled `reqwest` client: a JSON body POSTed to the provider's
//! URL for the route (with its fixed query parameters), its key in its header, and the answer read
//! as JSON or server-sent events. Both kinds of the routing table go through it: the bodies differ
//! (OpenAI-compatible or Anthropic Messages), the transport does not.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};

use super::{Provider, ProviderError, UpstreamReply, UpstreamRequest, UpstreamResponse};

/// The shared upstream client.
pub struct OpenAiCompatible {
    client: reqwest::Client,
}

impl OpenAiCompatible {
    pub fn new(connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(OpenAiCompatible { client })
    }

    /// The key for a provider: the caller's passthrough key, else the environment variable the
    /// routing table names. Read at call time so a rotated key needs no restart.
    fn api_key(req: &UpstreamRequest<'_>) -> Option<String> {
        if let Some(key) = req.passthrough_key {
            return Some(key.to_owned());
        }
        req.provider
            .api_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
    }

    async fn send(&self, req: UpstreamRequest<'_>) -> Result<UpstreamReply, ProviderError> {
        let provider = req.provider.name.clone();
        let url = req.provider.url(req.route.upstream_path());
        let mut builder = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(req.body.clone());
        if req.stream {
            builder = builder.header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        // The key in the provider's header (Bearer, api-key, x-api-key) and its fixed headers.
        let builder = req
            .provider
            .authorize(builder, Self::api_key(&req).as_deref());
        // The provider's timeout bounds the wait for the answer to start and, for a stream, every
        // gap between chunks; a long stream that keeps flowing is not cut.
        let limit = req.provider.timeout;
        let response = tokio::time::timeout(limit, builder.send())
            .await
            .map_err(|_| ProviderError::Timeout {
                provider: provider.clone(),
            })?
            .map_err(|e| classify(&provider, e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The answer is read by what it is, not by what was asked: a provider may answer a
        // stream request with JSON, or the reverse. Only without a content type does the
        // request decide.
        let is_sse = content_type
            .as_deref()
            .map(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            })
            .unwrap_or(req.stream);
        if is_sse && (200..300).contains(&status) {
            // The closure runs for every chunk: it clones an Arc, not a String.
            let name: Arc<str> = Arc::from(provider.as_str());
            let chunks = futures::stream::unfold(Some(response), move |state| {
                let name = Arc::clone(&name);
                async move {
                    let mut response = state?;
                    match tokio::time::timeout(limit, response.chunk()).await {
                        Err(_) => {
                            let provider = name.to_string();
                            Some((Err(ProviderError::Timeout { provider }), None))
                        }
                        Ok(Err(e)) => Some((Err(classify(&name, e)), None)),
                        Ok(Ok(None)) => None,
                        Ok(Ok(Some(bytes))) => Some((Ok(bytes), Some(response))),
                    }
                }
            });
            return Ok(UpstreamReply::Streaming {
                status,
                chunks: chunks.boxed(),
            });
        }
        let body = tokio::time::timeout(limit, response.bytes())
            .await
            .map_err(|_| ProviderError::Timeout {
                provider: provider.clone(),
            })?
            .map_err(|e| classify(&provider, e))?;
        Ok(UpstreamReply::Complete(UpstreamResponse {
            status,
            content_type,
            body,
        }))
    }
}

impl Provider for OpenAiCompatible {
    fn call<'a>(
        &'a self,
        req: UpstreamRequest<'a>,
    ) -> BoxFuture<'a, Result<UpstreamReply, ProviderError>> {
        self.send(req).boxed()
    }
}

fn classify(provider: &str, e: reqwest::Error) -> ProviderError {
    let provider = provider.to_owned();
    // A connect timeout is both `is_connect` and `is_timeout`: the request was never sent, so it
    // is a connection failure (released, fallbacks tried), not an ambiguous timeout (charged).
    if e.is_connect() {
        ProviderError::Connect {
            provider,
            detail: crate::telemetry::error_chain(&e),
        }
    } else if e.is_timeout() {
        ProviderError::Timeout { provider }
    } else {
        ProviderError::Transport {
            provider,
            detail: crate::telemetry::error_chain(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connect_timeout_is_a_connection_failure_not_an_ambiguous_timeout() {
        // A listener whose accept queue is full drops new SYNs, so a connection to it times out
        // before any byte of a request could be sent.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let _listener = socket.listen(1).unwrap();
        let mut queued = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(stream)) => queued.push(stream),
                _ => break,
            }
        }
        let client = OpenAiCompatible::new(Duration::from_millis(300)).unwrap();
        let e = client
            .client
            .post(format!("http://{addr}/v1/chat/completions"))
            .body("{}")
            .send()
            .await
            .unwrap_err();
        assert!(e.is_timeout() && e.is_connect(), "{e:?}");
        assert!(
            matches!(classify("p", e), ProviderError::Connect { .. }),
            "a request never sent must be released, not charged"
        );
    }
}
