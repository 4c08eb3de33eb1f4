//! The HTTP client every command uses: where the server is, which tenant, and how a
//! failed answer becomes one error line.

use clap::Args;
use serde_json::Value;

/// The header that names the tenant (the server's `extract::TENANT_HEADER`).
pub const TENANT_HEADER: &str = "x-traceway-tenant";

/// Where the server is, and how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the Traceway server.
    #[arg(long, env = "TRACEWAY_SERVER", default_value = "http://127.0.0.1:4318")]
    pub server: String,
    /// Tenant to act for (sent as X-Traceway-Tenant).
    #[arg(long, env = "TRACEWAY_TENANT")]
    pub tenant: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) args: ClientArgs,
}

impl Client {
    pub(crate) fn new(args: ClientArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Client { http, args })
    }

    /// A client for long-lived streams: no overall timeout, only on connecting.
    pub(crate) fn new_streaming(args: ClientArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Client { http, args })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.server.trim_end_matches('/'))
    }

    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let req = match &self.args.tenant {
            Some(t) => req.header(TENANT_HEADER, t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.args.server))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!("{status}: {}", error_message(body));
        }
        Ok((status, body))
    }
}

/// The message of a `{"error": {"message"}}` body, else the body itself.
pub(crate) fn error_message(body: String) -> String {
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(body)
}
