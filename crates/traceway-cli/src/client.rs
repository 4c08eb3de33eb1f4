//! The HTTP client every command uses: where the server is, which tenant, and how a
//! failed answer becomes one error line.

use clap::Args;
use serde_json::Value;

/// The header that names the tenant (the server's `extract::TENANT_HEADER`).
pub const TENANT_HEADER: &str = "x-traceway-tenant";

/// Where the server is, how to authenticate, and how to print. `global`, so that
/// `traceway keys --api-key K list` and `traceway keys list --api-key K` both work.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the Traceway server.
    #[arg(
        long,
        env = "TRACEWAY_SERVER",
        default_value = "http://127.0.0.1:4318",
        global = true
    )]
    pub server: String,
    /// Tenant to act for (sent as X-Traceway-Tenant; with auth on, the key's tenant is
    /// used instead).
    #[arg(long, env = "TRACEWAY_TENANT", global = true)]
    pub tenant: Option<String>,
    /// API key (`twk_….tws_…`), sent as `Authorization: Bearer`.
    #[arg(long, env = "TRACEWAY_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl std::fmt::Debug for ClientArgs {
    // The key is a secret: never in a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("server", &self.server)
            .field("tenant", &self.tenant)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .finish()
    }
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

    /// `req` with the tenant header and the API key, when given.
    pub(crate) fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.args.tenant {
            Some(t) => req.header(TENANT_HEADER, t),
            None => req,
        };
        match &self.args.api_key {
            Some(k) => req.bearer_auth(k.trim()),
            None => req,
        }
    }

    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let resp = self
            .authed(req)
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
