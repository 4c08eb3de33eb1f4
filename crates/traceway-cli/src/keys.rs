//! `traceway keys create|list|revoke` against `/api/v1/keys` (admin scope when auth is on),
//! and `traceway keys generate`, which makes a key offline for `--admin-key` (ADR 024).

use clap::Subcommand;
use serde_json::{json, Value};
use traceway_core::Credentials;

use crate::client::{Client, ClientArgs};

/// The `keys` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key for the tenant; its secret is printed once.
    Create {
        /// A label for the key (1 to 128 characters).
        #[arg(long)]
        name: String,
        /// A scope: ingest, read or admin (repeat for several) [default: ingest].
        #[arg(long = "scope", value_parser = ["ingest", "read", "admin"])]
        scopes: Vec<String>,
    },
    /// List the tenant's keys (never their secrets).
    List,
    /// Revoke a key by its id (`twk_…`); it stops working within seconds on every server.
    Revoke {
        /// The key id.
        key_id: String,
    },
    /// Print a new random key without contacting a server, for `serve --admin-key`.
    Generate,
}

/// Runs a `keys` subcommand.
pub async fn keys(args: ClientArgs, command: KeysCommand) -> anyhow::Result<String> {
    match command {
        KeysCommand::Generate => Ok(Credentials::generate().token()),
        KeysCommand::Create { name, scopes } => {
            let c = Client::new(args)?;
            let scopes = if scopes.is_empty() {
                vec!["ingest".to_string()]
            } else {
                scopes
            };
            let (_, body) = c
                .send(
                    c.http
                        .post(c.url("/api/v1/keys"))
                        .json(&json!({"name": name, "scopes": scopes})),
                )
                .await?;
            if c.args.json {
                return Ok(body);
            }
            let v: Value = serde_json::from_str(&body)?;
            Ok(format!(
                "created {} ({}) for tenant {} with scopes {}\n{}\n\
                 the key is shown only now: store it as a secret",
                str_of(&v["key_id"]),
                str_of(&v["name"]),
                str_of(&v["tenant"]),
                scopes_of(&v),
                str_of(&v["key"]),
            ))
        }
        KeysCommand::List => {
            let c = Client::new(args)?;
            let (_, body) = c.send(c.http.get(c.url("/api/v1/keys"))).await?;
            if c.args.json {
                return Ok(body);
            }
            let v: Value = serde_json::from_str(&body)?;
            Ok(key_table(v["keys"].as_array().map_or(&[][..], |a| a)))
        }
        KeysCommand::Revoke { key_id } => {
            let c = Client::new(args)?;
            c.send(c.http.delete(c.url(&format!("/api/v1/keys/{key_id}"))))
                .await?;
            Ok(if c.args.json {
                json!({"revoked": key_id}).to_string()
            } else {
                format!("revoked {key_id}")
            })
        }
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn scopes_of(v: &Value) -> String {
    v["scopes"]
        .as_array()
        .map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// One line per key: id, name, scopes, created, last used, revoked.
pub fn key_table(keys: &[Value]) -> String {
    let mut out = format!(
        "{:<21} {:<24} {:<18} {:<25} {:<25} {}\n",
        "KEY ID", "NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED"
    );
    for k in keys {
        out.push_str(&format!(
            "{:<21} {:<24} {:<18} {:<25} {:<25} {}\n",
            str_of(&k["key_id"]),
            str_of(&k["name"]),
            scopes_of(k),
            str_of(&k["created_at"]),
            str_of(&k["last_used_at"]),
            str_of(&k["revoked_at"]),
        ));
    }
    if keys.is_empty() {
        out.push_str("(no keys)\n");
    }
    out
}
