//! `http` plugins: AEX POSTs `{"tool_name", "arguments", "execution_id"}` to `manifest.url`,
//! signed with HMAC-SHA256 over `<timestamp>.<body>` with the secret in the environment variable
//! `manifest.secret_env` (headers `X-AEX-Timestamp` and `X-AEX-Signature: sha256=<hex>`), so the
//! plugin can tell AEX from anyone else. The request goes through [`GuardedClient`]: the
//! address connected to is checked by [`crate::net_guard`] and redirects are never followed (a
//! 3xx is a failed run).

use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{manifest_str, result_of, Limits, ToolError, ToolOutput};
use crate::net_guard::GuardedClient;

pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(super) async fn run(
    client: &GuardedClient,
    manifest: &Value,
    tool_name: &str,
    execution_id: &str,
    arguments: &Value,
    limits: Limits,
) -> Result<ToolOutput, ToolError> {
    let url = manifest_str(manifest, "url")?;
    let secret_env = manifest_str(manifest, "secret_env")?;
    let secret = std::env::var(secret_env).map_err(|_| {
        ToolError::Manifest(format!(
            "the environment variable {secret_env} (manifest.secret_env) is not set"
        ))
    })?;
    let body = serde_json::to_vec(
        &json!({"tool_name": tool_name, "arguments": arguments, "execution_id": execution_id}),
    )
    .unwrap_or_default();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let request = client
        .post(url)
        .map_err(|e| ToolError::Egress(e.to_string()))?;
    let call = async {
        let response = request
            .header("content-type", "application/json")
            .header("x-aex-timestamp", &timestamp)
            .header(
                "x-aex-signature",
                signature(secret.as_bytes(), &timestamp, &body),
            )
            .body(body.clone())
            .send()
            .await
            .map_err(|e| match GuardedClient::refusal(&e) {
                Some(refused) => ToolError::Egress(refused.to_string()),
                None => ToolError::Failed(format!("cannot reach the plugin: {e}")),
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ToolError::Failed(format!(
                "the plugin answered {status}; redirects are not followed"
            )));
        }
        // Read no more than the limit, however much the plugin sends.
        let mut stream = response.bytes_stream();
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ToolError::Failed(format!("reading the plugin's answer: {e}")))?;
            if text.len() + chunk.len() > limits.max_output {
                return Err(ToolError::OutputTooLarge(limits.max_output));
            }
            text.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(ToolError::Failed(format!("the plugin answered {status}")));
        }
        Ok(text)
    };
    let text = tokio::time::timeout(limits.timeout, call)
        .await
        .map_err(|_| limits.timeout_error())??;
    let text = String::from_utf8_lossy(&text).into_owned();
    // A plugin may answer {"result", "stdout", "stderr"}; anything else is the result itself.
    let value = result_of(&text);
    let field = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match value.get("result") {
        Some(result) => Ok(ToolOutput {
            result: result.clone(),
            stdout: field("stdout"),
            stderr: field("stderr"),
        }),
        None => Ok(ToolOutput {
            result: value,
            stdout: String::new(),
            stderr: String::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let a = signature(b"secret", "100", b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature(b"secret", "101", b"{}"));
        assert_ne!(a, signature(b"secret", "100", b"{ }"));
        assert_ne!(a, signature(b"other", "100", b"{}"));
    }
}
