//! The one typed configuration of `traceway serve`. Every field can come from a TOML file
//! (`--config`), a `TRACEWAY_*` environment variable, or a flag; precedence is
//! file < env < flag. Nothing else in the program reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Deserializer};
use traceway_core::Level;
use traceway_store::{CaptureConfig, Retention};

/// Flags of `traceway serve`. All optional here; defaults are applied in [`Config::resolve`].
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings (lowest precedence).
    #[arg(long, env = "TRACEWAY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Directory of the embedded store [default: ./traceway-data].
    #[arg(long, env = "TRACEWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// The store: `sqlite` (embedded, in --data-dir), `redis://host:port/db` or
    /// `redis+unix:///path?db=N` (standalone Redis) or
    /// `redis+cluster://host1:port1,host2:port2` (Redis Cluster seed nodes)
    /// [default: sqlite].
    #[arg(long, env = "TRACEWAY_STORE")]
    pub store: Option<String>,

    /// Prefix of every Redis key and channel, so several deployments can share one Redis
    /// [default: tw].
    #[arg(long, env = "TRACEWAY_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,

    /// Address of the HTTP API and OTLP/HTTP [default: 127.0.0.1:4318].
    #[arg(long, env = "TRACEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address of OTLP/gRPC (`TraceService/Export`) [default: 127.0.0.1:4317].
    #[arg(long, env = "TRACEWAY_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,

    /// Largest request body accepted, in bytes, also after gzip is undone and for one
    /// OTLP/gRPC message [default: 10485760 (10 MiB)].
    #[arg(long, env = "TRACEWAY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Level of traces created without one: minimal, standard, detailed, debug [default: detailed].
    #[arg(long, env = "TRACEWAY_DEFAULT_LEVEL")]
    pub default_level: Option<Level>,

    /// Strings longer than this are truncated below level `debug`, and a span's strings
    /// together at 4 × this (ADR 020) [default: 16384].
    #[arg(long, env = "TRACEWAY_MAX_CONTENT_BYTES")]
    pub max_content_bytes: Option<usize>,

    /// A trace that never ends expires this long after creation [default: 24h].
    #[arg(long, env = "TRACEWAY_FAILSAFE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub failsafe_ttl: Option<Duration>,

    /// A workflow instance's stored trace context expires this long after its last PUT
    /// [default: the failsafe TTL].
    #[arg(long, env = "TRACEWAY_WORKFLOW_CONTEXT_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub workflow_context_ttl: Option<Duration>,

    /// A finished trace's row and summary are kept this long [default: 7d].
    #[arg(long, env = "TRACEWAY_TRACE_RETENTION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub trace_retention: Option<Duration>,

    /// A finished trace's spans and events are kept this long [default: 3d].
    #[arg(long, env = "TRACEWAY_DATA_RETENTION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub data_retention: Option<Duration>,

    /// Keep-alive comment interval of live streams [default: 15s].
    #[arg(long, env = "TRACEWAY_SSE_KEEPALIVE", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub sse_keepalive: Option<Duration>,

    /// How long a trace's stream stays open after `trace_ended`, for late spans [default: 5s].
    #[arg(long, env = "TRACEWAY_STREAM_GRACE", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub stream_grace: Option<Duration>,

    /// Longest time one live-stream response stays open: then the server sends a last
    /// comment and ends it, and the client reconnects (a trace's stream with
    /// `Last-Event-ID`, resuming exactly); a bound on each connection's resources, as
    /// proxies and load balancers put on long responses (ADR 007) [default: 30m].
    #[arg(long, env = "TRACEWAY_STREAM_MAX_LIFETIME", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub stream_max_lifetime: Option<Duration>,

    /// Longest `wait=` a read may ask for [default: 60s].
    #[arg(long, env = "TRACEWAY_MAX_WAIT", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_wait: Option<Duration>,
    /// An orphaned trace (idle past --orphan-after) is kept this long [default: 1h].
    #[arg(long, env = "TRACEWAY_ORPHAN_RETENTION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub orphan_retention: Option<Duration>,

    /// A trace that is not finished and has had no activity this long is orphaned: the
    /// watchdog marks it ERRORED [default: 30m].
    #[arg(long, env = "TRACEWAY_ORPHAN_AFTER", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub orphan_after: Option<Duration>,

    /// How often the watchdog sweeps for orphans and purges expired data [default: 5m].
    #[arg(long, env = "TRACEWAY_SWEEP_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub sweep_interval: Option<Duration>,

    /// The watchdog lease lapses this long after its holder last renewed it; another
    /// server then takes over. Renewed every third of it [default: 30s].
    #[arg(long, env = "TRACEWAY_LEASE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub lease_ttl: Option<Duration>,

    /// Rows the purge deletes per write transaction, so ingest keeps flowing [default: 2000].
    #[arg(long, env = "TRACEWAY_PURGE_BATCH")]
    pub purge_batch: Option<u32>,

    /// Do not run the watchdog in this process (no orphan sweep, no purge; the failsafe
    /// expiry still hides what expired). `--no-watchdog=false` (or
    /// `TRACEWAY_NO_WATCHDOG=false`) runs it even when the file says `no_watchdog = true`.
    #[arg(
        long,
        env = "TRACEWAY_NO_WATCHDOG",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_watchdog: Option<bool>,

    /// Log filter, as RUST_LOG [default: info].
    #[arg(long, env = "TRACEWAY_LOG")]
    pub log: Option<String>,

    /// API keys: `on` (required), `off` (never checked; any client picks its tenant with
    /// X-Traceway-Tenant) or `auto`: required on a listener that is not loopback
    /// [default: auto].
    #[arg(long, env = "TRACEWAY_AUTH")]
    pub auth: Option<AuthMode>,

    /// A first admin key (`twk_….tws_…`, as `traceway keys generate` prints), accepted in
    /// memory, never stored; use it to create the stored keys.
    #[arg(long, env = "TRACEWAY_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Spans per second each tenant may ingest on this replica (a token bucket); past it,
    /// 429 with Retry-After (gRPC RESOURCE_EXHAUSTED with RetryInfo). 0: no quota
    /// [default: 0].
    #[arg(long, env = "TRACEWAY_QUOTA_SPANS_PER_SEC")]
    pub quota_spans_per_sec: Option<u32>,

    /// The bucket's size: spans a quiet tenant may send at once [default: 2 × the rate].
    #[arg(long, env = "TRACEWAY_QUOTA_SPANS_BURST")]
    pub quota_spans_burst: Option<u32>,

    /// Live streams (concurrent SSE connections) each tenant may hold open on this
    /// replica; past it, 429 with Retry-After. 0: no quota [default: 10000].
    #[arg(long, env = "TRACEWAY_QUOTA_LIVE_STREAMS")]
    pub quota_live_streams: Option<u32>,

    /// Bytes of event log each tenant may keep stored (the JSON of its events, counted by
    /// the store on every write, delete and purge); past it, writes answer 429 with
    /// Retry-After (gRPC RESOURCE_EXHAUSTED with RetryInfo) until deletes or the retention
    /// purge bring it under. Reads and deletes are never refused. 0: no quota [default: 0].
    #[arg(long, env = "TRACEWAY_QUOTA_STORED_BYTES")]
    pub quota_stored_bytes: Option<u64>,

    /// The tenant the admin key administers [default: default].
    #[arg(long, env = "TRACEWAY_ADMIN_KEY_TENANT")]
    pub admin_key_tenant: Option<String>,

    /// Time a client has to send a request's headers (HTTP/1), and a new connection to
    /// begin its first request (HTTP and gRPC); an idle HTTP/1 keep-alive connection is
    /// closed after it too [default: 10s].
    #[arg(long, env = "TRACEWAY_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub header_read_timeout: Option<Duration>,

    /// A connection with no request in flight and no traffic this long is closed (HTTP/2
    /// and gRPC get a GOAWAY) [default: 60s].
    #[arg(long, env = "TRACEWAY_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,

    /// Time a client has to send a request's whole body, from the end of its headers; past
    /// it the request is answered 408 (gRPC `DEADLINE_EXCEEDED`). A body of
    /// --max-body-bytes must arrive at that size over this time on average [default: 60s].
    #[arg(long, env = "TRACEWAY_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub body_read_timeout: Option<Duration>,

    /// Connections each listener serves at once; past it, new connections wait until one
    /// closes [default: 10000].
    #[arg(long, env = "TRACEWAY_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// How long after a trace ends its analysis digest (top components, error groups, for
    /// `GET /api/v1/analysis`) is made, so late spans are in it [default: 5s].
    #[arg(long, env = "TRACEWAY_ANALYSIS_DELAY", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "opt_duration")]
    pub analysis_delay: Option<Duration>,

    /// Prices of LLM models, over the shipped table (config file only): a `[pricing]`
    /// section with `label` and `[pricing.models."name"]` tables of US dollars per million
    /// tokens (`input`, `output`, `cache_read`, `cache_write`, `reasoning`, `tiers`).
    #[arg(skip)]
    pub pricing: Option<traceway_core::pricing::PriceOverrides>,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Keys are required on every listener.
    On,
    /// Keys are never checked.
    Off,
    /// Keys are required on a listener whose address is not loopback.
    Auto,
}

/// Where API keys are required (ADR 024), and the bootstrap admin key.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// On the HTTP listener (REST, SSE, OTLP/HTTP, `/metrics`, `/readyz`).
    pub http: bool,
    /// On the OTLP/gRPC listener.
    pub grpc: bool,
    /// The admin key from the configuration.
    pub bootstrap: Option<crate::auth::BootstrapKey>,
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// Which store `serve` opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// Redis at this URL (`redis://…` or `redis+cluster://…`), keys under `prefix`.
    Redis {
        /// The URL.
        url: String,
        /// The key prefix.
        prefix: String,
    },
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which store.
    pub store: StoreKind,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// HTTP address.
    pub listen: SocketAddr,
    /// OTLP/gRPC address.
    pub grpc_listen: SocketAddr,
    /// Body cap in bytes.
    pub max_body_bytes: usize,
    /// What capture keeps.
    pub capture: CaptureConfig,
    /// How long data is kept.
    pub retention: Retention,
    /// How long a workflow context is kept after its last PUT.
    pub workflow_context_ttl: Duration,
    /// Keep-alive interval of live streams.
    pub sse_keepalive: Duration,
    /// Time a trace's stream stays open after it ended.
    pub stream_grace: Duration,
    /// Longest time one live-stream response stays open.
    pub stream_max_lifetime: Duration,
    /// Cap on `wait=`.
    pub max_wait: Duration,
    /// The watchdog.
    pub lifecycle: Lifecycle,
    /// Log filter.
    pub log: String,
    /// API keys.
    pub auth: AuthConfig,
    /// Spans per second per tenant (0: none).
    pub quota_spans_per_sec: u32,
    /// Its burst.
    pub quota_spans_burst: u32,
    /// Concurrent live streams per tenant (0: none).
    pub quota_live_streams: u32,
    /// Stored event-log bytes per tenant (0: none; ADR 040).
    pub quota_stored_bytes: u64,
    /// Connection bounds of each listener (ADR 033).
    pub conn_limits: crate::transport::ConnLimits,
    /// Delay of a trace's analysis digest after it ends.
    pub analysis_delay: Duration,
}

/// The watchdog's settings: it alone (the holder of the store's lease) sweeps orphans and
/// purges expired data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// Whether this process runs a watchdog at all.
    pub watchdog: bool,
    /// Idle this long, a trace that is not finished is orphaned.
    pub orphan_after: Duration,
    /// Time between sweeps.
    pub sweep_interval: Duration,
    /// The lease lapses this long after its last renewal.
    pub lease_ttl: Duration,
    /// Rows deleted per purge batch.
    pub purge_batch: u32,
    /// Traces orphaned per sweep batch.
    pub sweep_batch: u32,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            watchdog: true,
            orphan_after: Duration::from_secs(30 * 60),
            sweep_interval: Duration::from_secs(5 * 60),
            lease_ttl: Duration::from_secs(30),
            purge_batch: 2000,
            sweep_batch: 200,
        }
    }
}

/// Live streams a tenant may hold open on one replica unless configured (ADR 025).
pub const DEFAULT_QUOTA_LIVE_STREAMS: u32 = 10_000;

impl Default for Config {
    fn default() -> Config {
        Config::resolve(ServeArgs::default()).expect("defaults are valid")
    }
}

impl Config {
    /// Applies defaults < file < env < flags. `args` already holds env and flags (clap
    /// reads both, flags winning); the file named by `args.config` fills what they leave.
    /// Every setting, booleans included, is an `Option` until here, so a later layer
    /// can set a value back to its default (ADR 014).
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
                toml::from_str::<ServeArgs>(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let defaults = Retention::default();
        let capture_defaults = CaptureConfig::default();
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(10 * 1024 * 1024);
        if max_body_bytes == 0 {
            anyhow::bail!("max_body_bytes must be positive");
        }
        let lc = Lifecycle::default();
        let lifecycle = Lifecycle {
            watchdog: !args.no_watchdog.or(file.no_watchdog).unwrap_or(false),
            orphan_after: args
                .orphan_after
                .or(file.orphan_after)
                .unwrap_or(lc.orphan_after),
            sweep_interval: args
                .sweep_interval
                .or(file.sweep_interval)
                .unwrap_or(lc.sweep_interval),
            lease_ttl: args.lease_ttl.or(file.lease_ttl).unwrap_or(lc.lease_ttl),
            purge_batch: args
                .purge_batch
                .or(file.purge_batch)
                .unwrap_or(lc.purge_batch),
            sweep_batch: lc.sweep_batch,
        };
        for (name, d) in [
            ("orphan_after", lifecycle.orphan_after),
            ("sweep_interval", lifecycle.sweep_interval),
            ("lease_ttl", lifecycle.lease_ttl),
        ] {
            if d.is_zero() {
                anyhow::bail!("{name} must be positive");
            }
        }
        if lifecycle.purge_batch == 0 {
            anyhow::bail!("purge_batch must be positive");
        }
        let store = match args.store.or(file.store).as_deref() {
            None | Some("sqlite") => StoreKind::Sqlite,
            Some(url)
                if url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+unix://")
                    || url.starts_with("redis+cluster://") =>
            {
                let prefix = args
                    .redis_prefix
                    .or(file.redis_prefix)
                    .unwrap_or_else(|| "tw".to_string());
                if prefix.is_empty() || prefix.contains(['{', '}']) {
                    anyhow::bail!("redis_prefix must be non-empty and without braces");
                }
                StoreKind::Redis {
                    url: url.to_string(),
                    prefix,
                }
            }
            Some(other) => anyhow::bail!(
                "unknown store {other:?}: use sqlite, redis://host:port/db or \
                 redis+cluster://host1:port1,host2:port2"
            ),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4318)));
        let grpc_listen = args
            .grpc_listen
            .or(file.grpc_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4317)));
        let mode = args.auth.or(file.auth).unwrap_or(AuthMode::Auto);
        let required = |addr: SocketAddr| match mode {
            AuthMode::On => true,
            AuthMode::Off => false,
            AuthMode::Auto => !addr.ip().is_loopback(),
        };
        let bootstrap = match args.admin_key.or(file.admin_key) {
            None => None,
            Some(k) => {
                let credentials = traceway_core::Credentials::parse_token(&k)
                    .map_err(|e| anyhow::anyhow!("admin_key: {e}"))?;
                let tenant = args
                    .admin_key_tenant
                    .or(file.admin_key_tenant)
                    .unwrap_or_else(|| "default".to_string());
                crate::extract::Tenant::parse(Some(tenant.as_bytes()))
                    .map_err(|e| anyhow::anyhow!("admin_key_tenant: {e}"))?;
                Some(crate::auth::BootstrapKey {
                    credentials,
                    tenant,
                })
            }
        };
        let auth = AuthConfig {
            http: required(listen),
            grpc: required(grpc_listen),
            bootstrap,
        };
        let quota_spans_per_sec = args
            .quota_spans_per_sec
            .or(file.quota_spans_per_sec)
            .unwrap_or(0);
        let quota_spans_burst = args
            .quota_spans_burst
            .or(file.quota_spans_burst)
            .unwrap_or(quota_spans_per_sec.saturating_mul(2));
        let quota_live_streams = args
            .quota_live_streams
            .or(file.quota_live_streams)
            .unwrap_or(DEFAULT_QUOTA_LIVE_STREAMS);
        let conn_limits = crate::transport::ConnLimits {
            header_read_timeout: args
                .header_read_timeout
                .or(file.header_read_timeout)
                .unwrap_or(Duration::from_secs(10)),
            idle_timeout: args
                .idle_timeout
                .or(file.idle_timeout)
                .unwrap_or(Duration::from_secs(60)),
            body_read_timeout: args
                .body_read_timeout
                .or(file.body_read_timeout)
                .unwrap_or(Duration::from_secs(60)),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000),
        };
        if conn_limits.header_read_timeout.is_zero()
            || conn_limits.idle_timeout.is_zero()
            || conn_limits.body_read_timeout.is_zero()
        {
            anyhow::bail!(
                "header_read_timeout, idle_timeout and body_read_timeout must be positive"
            );
        }
        if conn_limits.max_connections == 0 {
            anyhow::bail!("max_connections must be positive");
        }
        let prices = match args.pricing.as_ref().or(file.pricing.as_ref()) {
            None => traceway_store::Prices::builtin(),
            Some(o) => {
                o.validate().map_err(|e| match &args.config {
                    Some(path) => anyhow::anyhow!("invalid config {}: {e}", path.display()),
                    None => anyhow::anyhow!("invalid pricing: {e}"),
                })?;
                traceway_store::Prices::with_overrides(o)
            }
        };
        let stream_max_lifetime = args
            .stream_max_lifetime
            .or(file.stream_max_lifetime)
            .unwrap_or(Duration::from_secs(30 * 60));
        if stream_max_lifetime.is_zero() {
            anyhow::bail!("stream_max_lifetime must be positive");
        }
        Ok(Config {
            stream_max_lifetime,
            conn_limits,
            analysis_delay: args
                .analysis_delay
                .or(file.analysis_delay)
                .unwrap_or(Duration::from_secs(5)),
            quota_spans_per_sec,
            quota_spans_burst,
            quota_live_streams,
            quota_stored_bytes: args
                .quota_stored_bytes
                .or(file.quota_stored_bytes)
                .unwrap_or(0),
            auth,
            store,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("traceway-data")),
            listen,
            grpc_listen,
            max_body_bytes,
            capture: CaptureConfig {
                default_level: args
                    .default_level
                    .or(file.default_level)
                    .unwrap_or(capture_defaults.default_level),
                max_content_bytes: args
                    .max_content_bytes
                    .or(file.max_content_bytes)
                    .unwrap_or(capture_defaults.max_content_bytes),
                prices,
            },
            retention: Retention {
                failsafe_ttl: args
                    .failsafe_ttl
                    .or(file.failsafe_ttl)
                    .unwrap_or(defaults.failsafe_ttl),
                terminal_trace_ttl: args
                    .trace_retention
                    .or(file.trace_retention)
                    .unwrap_or(defaults.terminal_trace_ttl),
                terminal_data_ttl: args
                    .data_retention
                    .or(file.data_retention)
                    .unwrap_or(defaults.terminal_data_ttl),
                orphan_ttl: args
                    .orphan_retention
                    .or(file.orphan_retention)
                    .unwrap_or(defaults.orphan_ttl),
            },
            workflow_context_ttl: args
                .workflow_context_ttl
                .or(file.workflow_context_ttl)
                .or(args.failsafe_ttl)
                .or(file.failsafe_ttl)
                .unwrap_or(defaults.failsafe_ttl),
            sse_keepalive: args
                .sse_keepalive
                .or(file.sse_keepalive)
                .unwrap_or(Duration::from_secs(15)),
            stream_grace: args
                .stream_grace
                .or(file.stream_grace)
                .unwrap_or(Duration::from_secs(5)),
            max_wait: args
                .max_wait
                .or(file.max_wait)
                .unwrap_or(Duration::from_secs(60)),
            lifecycle,
            log: args.log.or(file.log).unwrap_or_else(|| "info".to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn auth_is_open_on_loopback_and_required_elsewhere_unless_off() {
        let resolve = |flags: &[&str]| {
            let mut argv = vec!["t"];
            argv.extend_from_slice(flags);
            Config::resolve(Cli::try_parse_from(argv).unwrap().serve)
        };
        let local = resolve(&[]).unwrap().auth;
        assert!(!local.http && !local.grpc, "loopback defaults are open");
        let public = resolve(&["--listen", "0.0.0.0:4318"]).unwrap().auth;
        assert!(public.http, "a public HTTP listener requires keys");
        assert!(!public.grpc, "the loopback gRPC listener stays open");
        let on = resolve(&["--auth", "on"]).unwrap().auth;
        assert!(on.http && on.grpc);
        let off = resolve(&[
            "--auth",
            "off",
            "--listen",
            "[::]:4318",
            "--grpc-listen",
            "0.0.0.0:4317",
        ])
        .unwrap()
        .auth;
        assert!(!off.http && !off.grpc);
        let key = traceway_core::Credentials::generate();
        let with_key = resolve(&["--admin-key", &key.token(), "--admin-key-tenant", "acme"])
            .unwrap()
            .auth;
        let b = with_key.bootstrap.expect("bootstrap");
        assert_eq!((b.credentials, b.tenant.as_str()), (key, "acme"));
        let bad = resolve(&["--admin-key", "hunter2"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("admin_key"), "{bad}");
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traceway.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\nfailsafe_ttl = \"2h\"\ndefault_level = \"debug\"\n").unwrap();
        let cli = Cli::try_parse_from([
            "t",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7000",
        ])
        .unwrap();
        let cfg = Config::resolve(cli.serve).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:7000".parse().unwrap(), "flag wins");
        assert_eq!(
            cfg.data_dir,
            PathBuf::from("/from/file"),
            "file fills the rest"
        );
        assert_eq!(cfg.retention.failsafe_ttl, Duration::from_secs(7200));
        assert_eq!(cfg.capture.default_level, Level::Debug);
        assert_eq!(cfg.max_body_bytes, 10 * 1024 * 1024, "default");
    }

    #[test]
    fn store_is_sqlite_by_default_or_a_redis_url() {
        let store = |args: &[&str]| {
            let mut argv = vec!["t"];
            argv.extend_from_slice(args);
            Config::resolve(Cli::try_parse_from(argv).unwrap().serve).map(|c| c.store)
        };
        assert_eq!(store(&[]).unwrap(), StoreKind::Sqlite);
        assert_eq!(store(&["--store", "sqlite"]).unwrap(), StoreKind::Sqlite);
        assert_eq!(
            store(&["--store", "redis://127.0.0.1:6380/2"]).unwrap(),
            StoreKind::Redis {
                url: "redis://127.0.0.1:6380/2".into(),
                prefix: "tw".into()
            }
        );
        assert_eq!(
            store(&[
                "--store",
                "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
                "--redis-prefix",
                "prod"
            ])
            .unwrap(),
            StoreKind::Redis {
                url: "redis+cluster://10.0.0.1:7000,10.0.0.2:7000".into(),
                prefix: "prod".into()
            }
        );
        for bad in [
            &["--store", "postgres://x"][..],
            &["--store", "redis://h", "--redis-prefix", "{x}"],
        ] {
            assert!(store(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grpc_listen_defaults_to_4317_and_comes_from_file_env_or_flag() {
        let cfg = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(cfg.grpc_listen, "127.0.0.1:4317".parse().unwrap());
        assert_eq!(cfg.listen, "127.0.0.1:4318".parse().unwrap());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traceway.toml");
        std::fs::write(&file, "grpc_listen = \"127.0.0.1:9317\"\n").unwrap();
        let cli = Cli::try_parse_from(["t", "--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(
            Config::resolve(cli.serve).unwrap().grpc_listen,
            "127.0.0.1:9317".parse().unwrap(),
            "from the file"
        );
        let cli = Cli::try_parse_from([
            "t",
            "--config",
            file.to_str().unwrap(),
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(
            Config::resolve(cli.serve).unwrap().grpc_listen,
            "127.0.0.1:0".parse().unwrap(),
            "the flag wins"
        );
        assert!(Cli::try_parse_from(["t", "--grpc-listen", "nowhere"]).is_err());
    }

    fn resolve_file(text: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traceway.toml");
        std::fs::write(&file, text).unwrap();
        let cli = Cli::try_parse_from(["t", "--config", file.to_str().unwrap()]).unwrap();
        Config::resolve(cli.serve)
    }

    #[test]
    fn pricing_in_the_file_overrides_and_adds_models() {
        let base = Config::default().capture.prices;
        assert_eq!(
            base.table().version(),
            traceway_core::pricing::PriceTable::builtin().version()
        );
        let cfg = resolve_file(
            "[pricing]\nlabel = \"acme-2026\"\n\
             [pricing.models.\"gpt-4o\"]\ninput = 1.0\noutput = 2.0\n\
             [pricing.models.\"acme/house-model\"]\ninput = 0.5\noutput = 1.5\n\
             [[pricing.models.\"acme/house-model\".tiers]]\nabove = 200000\ninput = 1.0\n",
        )
        .unwrap();
        let t = cfg.capture.prices.table();
        assert!(t.version().ends_with("+acme-2026"), "{}", t.version());
        let (_, p) = t.lookup(None, "gpt-4o").expect("overridden");
        assert_eq!((p.input, p.output), (Some(1.0), Some(2.0)));
        let (_, p) = t.lookup(None, "acme/house-model").expect("added");
        assert_eq!(
            (p.input, p.output, p.tiers.len()),
            (Some(0.5), Some(1.5), 1)
        );
        assert!(base.table().lookup(None, "acme/house-model").is_none());
    }

    #[test]
    fn bad_pricing_is_a_startup_error_that_names_the_field() {
        for (text, needle) in [
            ("[pricing.models.m]\ninput = -1.0\n", "pricing.models.\"m\".input"),
            ("[pricing.models.m]\noutput = inf\n", "pricing.models.\"m\".output"),
            ("[pricing.models.m]\ninput = nan\n", "pricing.models.\"m\".input"),
            (
                "[pricing.models.m]\ninput = 1.0\n[[pricing.models.m.tiers]]\nabove = 10\ncache_read = -2.0\n",
                "tiers.cache_read",
            ),
            ("[pricing.models.m]\ninput = 1.0\nimput = 2.0\n", "imput"),
            ("[pricing]\nlable = \"x\"\n", "lable"),
            ("[pricing.models.m]\ncache_read = 1.0\n", "needs an input or an output"),
            ("[pricing.models.m]\ninput = \"cheap\"\n", "invalid"),
        ] {
            let err = format!("{:#}", resolve_file(text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("traceway.toml"), "names the file: {err}");
        }
    }

    #[test]
    fn a_typo_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traceway.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:9000\"\n").unwrap();
        let cli = Cli::try_parse_from(["t", "--config", file.to_str().unwrap()]).unwrap();
        let err = Config::resolve(cli.serve).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn workflow_context_ttl_defaults_to_the_failsafe_ttl() {
        let cfg = Config::resolve(Cli::try_parse_from(["t"]).unwrap().serve).unwrap();
        assert_eq!(cfg.workflow_context_ttl, Duration::from_secs(24 * 3600));
        let cli = Cli::try_parse_from(["t", "--failsafe-ttl", "2h"]).unwrap();
        assert_eq!(
            Config::resolve(cli.serve).unwrap().workflow_context_ttl,
            Duration::from_secs(7200)
        );
        let cli =
            Cli::try_parse_from(["t", "--failsafe-ttl", "2h", "--workflow-context-ttl", "5m"])
                .unwrap();
        assert_eq!(
            Config::resolve(cli.serve).unwrap().workflow_context_ttl,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn body_read_timeout_defaults_to_60s_comes_from_the_file_or_a_flag_and_is_positive() {
        assert_eq!(
            Config::default().conn_limits.body_read_timeout,
            Duration::from_secs(60)
        );
        let cfg = resolve_file("body_read_timeout = \"15s\"\n").unwrap();
        assert_eq!(cfg.conn_limits.body_read_timeout, Duration::from_secs(15));
        let cli = Cli::try_parse_from(["t", "--body-read-timeout", "2m"]).unwrap();
        assert_eq!(
            Config::resolve(cli.serve)
                .unwrap()
                .conn_limits
                .body_read_timeout,
            Duration::from_secs(120)
        );
        let cli = Cli::try_parse_from(["t", "--body-read-timeout", "0s"]).unwrap();
        let err = Config::resolve(cli.serve).unwrap_err().to_string();
        assert!(err.contains("body_read_timeout"), "{err}");
    }

    #[test]
    fn stream_max_lifetime_defaults_to_30m_comes_from_the_file_or_a_flag_and_is_positive() {
        assert_eq!(
            Config::default().stream_max_lifetime,
            Duration::from_secs(30 * 60)
        );
        let cfg = resolve_file("stream_max_lifetime = \"2h\"\n").unwrap();
        assert_eq!(cfg.stream_max_lifetime, Duration::from_secs(7200));
        let cli = Cli::try_parse_from(["t", "--stream-max-lifetime", "2s"]).unwrap();
        assert_eq!(
            Config::resolve(cli.serve).unwrap().stream_max_lifetime,
            Duration::from_secs(2)
        );
        let cli = Cli::try_parse_from(["t", "--stream-max-lifetime", "0s"]).unwrap();
        let err = Config::resolve(cli.serve).unwrap_err().to_string();
        assert!(err.contains("stream_max_lifetime"), "{err}");
    }

    #[test]
    fn durations_are_written_like_90s_30m_24h() {
        let cli =
            Cli::try_parse_from(["t", "--failsafe-ttl", "90s", "--data-retention", "30m"]).unwrap();
        let cfg = Config::resolve(cli.serve).unwrap();
        assert_eq!(cfg.retention.failsafe_ttl, Duration::from_secs(90));
        assert_eq!(cfg.retention.terminal_data_ttl, Duration::from_secs(1800));
        assert!(Cli::try_parse_from(["t", "--failsafe-ttl", "soon"]).is_err());
    }

    #[test]
    fn lifecycle_defaults_and_flags() {
        let cfg = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(cfg.lifecycle, Lifecycle::default());
        assert_eq!(cfg.lifecycle.orphan_after, Duration::from_secs(1800));
        assert_eq!(cfg.lifecycle.sweep_interval, Duration::from_secs(300));
        assert_eq!(cfg.retention.orphan_ttl, Duration::from_secs(3600));
        assert!(cfg.lifecycle.watchdog);

        let cli = Cli::try_parse_from([
            "t",
            "--orphan-after",
            "90s",
            "--sweep-interval",
            "1s",
            "--lease-ttl",
            "2s",
            "--orphan-retention",
            "10m",
            "--purge-batch",
            "50",
            "--no-watchdog",
        ])
        .unwrap();
        let cfg = Config::resolve(cli.serve).unwrap();
        assert_eq!(
            cfg.lifecycle,
            Lifecycle {
                watchdog: false,
                orphan_after: Duration::from_secs(90),
                sweep_interval: Duration::from_secs(1),
                lease_ttl: Duration::from_secs(2),
                purge_batch: 50,
                ..Lifecycle::default()
            }
        );
        assert_eq!(cfg.retention.orphan_ttl, Duration::from_secs(600));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traceway.toml");
        std::fs::write(&file, "orphan_after = \"45m\"\nno_watchdog = true\n").unwrap();
        let cli = Cli::try_parse_from(["t", "--config", file.to_str().unwrap()]).unwrap();
        let cfg = Config::resolve(cli.serve).unwrap();
        assert_eq!(cfg.lifecycle.orphan_after, Duration::from_secs(2700));
        assert!(!cfg.lifecycle.watchdog);

        let cli = Cli::try_parse_from(["t", "--sweep-interval", "0s"]).unwrap();
        assert!(
            Config::resolve(cli.serve).is_err(),
            "a zero interval is refused"
        );
    }

    #[test]
    fn a_flag_or_the_env_turns_the_watchdog_back_on_when_the_file_turned_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traceway.toml");
        std::fs::write(&file, "no_watchdog = true\n").unwrap();
        let path = file.to_str().unwrap();
        let watchdog = |argv: &[&str]| {
            let mut full = vec!["t", "--config", path];
            full.extend_from_slice(argv);
            Config::resolve(Cli::try_parse_from(full).unwrap().serve)
                .unwrap()
                .lifecycle
                .watchdog
        };
        assert!(!watchdog(&[]), "the file turns it off");
        assert!(
            watchdog(&["--no-watchdog=false"]),
            "a flag turns it back on"
        );
        assert!(!watchdog(&["--no-watchdog"]), "a bare flag means true");
        assert!(!watchdog(&["--no-watchdog=true"]));
        // `require_equals`: a bare flag does not swallow the next argument.
        assert!(Cli::try_parse_from(["t", "--no-watchdog", "false"]).is_err());

        let unset = tempfile::tempdir().unwrap();
        let off = unset.path().join("off.toml");
        std::fs::write(&off, "no_watchdog = false\n").unwrap();
        let cli = Cli::try_parse_from(["t", "--config", off.to_str().unwrap()]).unwrap();
        assert!(Config::resolve(cli.serve).unwrap().lifecycle.watchdog);
    }

    /// The env layer sits between the file and the flags. Nextest runs each test in its
    /// own process, and no other test reads this variable.
    #[test]
    fn env_beats_the_file_and_a_flag_beats_the_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traceway.toml");
        std::fs::write(&file, "no_watchdog = true\nmax_wait = \"5s\"\n").unwrap();
        let path = file.to_str().unwrap();
        std::env::set_var("TRACEWAY_NO_WATCHDOG", "false");
        std::env::set_var("TRACEWAY_MAX_WAIT", "7s");
        let resolve = |argv: &[&str]| {
            let mut full = vec!["t", "--config", path];
            full.extend_from_slice(argv);
            Config::resolve(Cli::try_parse_from(full).unwrap().serve).unwrap()
        };
        let cfg = resolve(&[]);
        assert!(cfg.lifecycle.watchdog, "env false beats file true");
        assert_eq!(cfg.max_wait, Duration::from_secs(7), "env beats file");
        let cfg = resolve(&["--no-watchdog", "--max-wait", "9s"]);
        assert!(!cfg.lifecycle.watchdog, "flag beats env");
        assert_eq!(cfg.max_wait, Duration::from_secs(9), "flag beats env");
        std::env::remove_var("TRACEWAY_NO_WATCHDOG");
        std::env::remove_var("TRACEWAY_MAX_WAIT");
    }
}
