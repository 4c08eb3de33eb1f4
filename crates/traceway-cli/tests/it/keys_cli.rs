//! `traceway keys create|list|revoke|generate` and `--api-key` (`TRACEWAY_API_KEY`) on
//! every client command, against the real binary with `--auth on`.

use std::process::Command;

use prost::Message as _;
use serde_json::Value;
use traceway_core::otlp::{decode_export_request, Encoding};
use traceway_core::Credentials;

const BIN: &str = env!("CARGO_BIN_EXE_traceway");
const TRACE: &str = "5b8efff798038103d269b633813fc60c";

/// Runs the CLI against `server` with `key` in `TRACEWAY_API_KEY` (when given).
fn run(server: &crate::e2e::Server, key: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("TRACEWAY_SERVER", &server.url)
        .env_remove("TRACEWAY_API_KEY")
        .env_remove("TRACEWAY_TENANT");
    if let Some(k) = key {
        cmd.env("TRACEWAY_API_KEY", k);
    }
    let out = cmd.output().expect("run the cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[track_caller]
fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "failed: stdout {} stderr {}", r.1, r.2);
    r.1
}

#[track_caller]
fn refused(r: (bool, String, String), status: &str) {
    assert!(!r.0, "succeeded: {}", r.1);
    assert!(r.2.contains(status), "wanted {status}: {}", r.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_commands_and_api_key_on_every_client_command_with_auth_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = Credentials::generate().token();
    let server = crate::e2e::Server::start_with(
        dir.path(),
        &[
            "--auth",
            "on",
            "--admin-key",
            &admin,
            "--admin-key-tenant",
            "acme",
        ],
    );

    // An offline key parses as one.
    let generated = ok(run(&server, None, &["keys", "generate"]));
    Credentials::parse_token(generated.trim()).expect("a key");

    // Create with the admin key given as a flag, in either position.
    let created = ok(run(
        &server,
        None,
        &[
            "keys",
            "--api-key",
            &admin,
            "create",
            "--name",
            "ci",
            "--scope",
            "ingest",
            "--scope",
            "read",
            "--json",
        ],
    ));
    let created: Value = serde_json::from_str(&created).expect("json");
    let key = created["key"]
        .as_str()
        .expect("the secret, once")
        .to_string();
    let key_id = created["key_id"].as_str().expect("id").to_string();
    assert_eq!(created["tenant"], "acme");
    let listed = ok(run(&server, None, &["keys", "list", "--api-key", &admin]));
    assert!(
        listed.contains(&key_id) && listed.contains("ci"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "a secret in the listing: {listed}");
    let human = ok(run(
        &server,
        Some(&admin),
        &["keys", "create", "--name", "other"],
    ));
    assert!(human.contains("shown only now"), "{human}");
    // A key without admin scope cannot manage keys.
    refused(run(&server, Some(&key), &["keys", "list"]), "403");

    // A trace to read, exported with the new key.
    let path = format!(
        "{}/../traceway-core/tests/fixtures/otlp/genai_agent.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let export = decode_export_request(&std::fs::read(path).expect("fixture"), Encoding::Json)
        .expect("valid");
    let resp = crate::e2e::client()
        .post(format!("{}/v1/traces", server.url))
        .bearer_auth(&key)
        .header("content-type", "application/x-protobuf")
        .body(export.encode_to_vec())
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);

    // Every client command: refused without a key, served with one (from the env).
    let read_commands: [&[&str]; 5] = [
        &["ls"],
        &["show", TRACE],
        &["analyze", TRACE],
        &["stats"],
        &["tail", TRACE],
    ];
    for args in read_commands {
        refused(run(&server, None, args), "401");
        ok(run(&server, Some(&key), args));
    }
    assert!(ok(run(&server, Some(&key), &["ls"])).contains(TRACE));
    // rm and cleanup need admin.
    refused(run(&server, Some(&key), &["rm", TRACE]), "403");
    refused(
        run(&server, None, &["cleanup", "--older-than", "1d"]),
        "401",
    );
    ok(run(
        &server,
        Some(&admin),
        &["cleanup", "--older-than", "1d"],
    ));
    ok(run(&server, Some(&admin), &["rm", TRACE]));

    // Revoked, the key authenticates nothing.
    let revoked = ok(run(&server, Some(&admin), &["keys", "revoke", &key_id]));
    assert!(revoked.contains(&key_id), "{revoked}");
    refused(run(&server, Some(&key), &["ls"]), "401");
    let listed = ok(run(&server, Some(&admin), &["keys", "list", "--json"]));
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let entry = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .expect("still listed");
    assert!(entry["revoked_at"].is_string(), "{entry}");
    server.stop();
}
