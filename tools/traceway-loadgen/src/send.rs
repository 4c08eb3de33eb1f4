//! Sending encoded requests over OTLP/HTTP or OTLP/gRPC, retrying when throttled.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;

use crate::traces::Encoded;
use crate::{Args, Protocol};

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) spans: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) retries: AtomicU64,
}

pub(crate) enum Sender {
    Http {
        client: reqwest::Client,
        url: String,
        tenant: String,
    },
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        tenant: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        /// `Bearer <key>`, when the run has a key.
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    },
}

/// What one attempt got.
pub(crate) enum Outcome {
    /// Stored; this many spans rejected.
    Done(u64),
    /// Throttled (429/503, RESOURCE_EXHAUSTED, UNAVAILABLE): wait and send again.
    Retry(Duration),
}

impl Sender {
    pub(crate) async fn connect(args: &Args, tenant: &str) -> anyhow::Result<Sender> {
        Ok(match args.protocol {
            Protocol::Http => Sender::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .default_headers(crate::auth_headers(args.api_key.as_deref())?)
                    .build()?,
                url: format!("{}/v1/traces", args.http.trim_end_matches('/')),
                tenant: tenant.to_string(),
            },
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(args.grpc.clone())?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {}", args.grpc))?;
                Sender::Grpc {
                    grpc: tonic::client::Grpc::new(channel)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(usize::MAX),
                    tenant: tenant.parse()?,
                    authorization: args
                        .api_key
                        .as_deref()
                        .map(|k| format!("Bearer {}", k.trim()).parse())
                        .transpose()
                        .context("--api-key is not valid gRPC metadata")?,
                }
            }
        })
    }

    pub(crate) async fn run(
        mut self,
        requests: &[Encoded],
        next: &AtomicUsize,
        stats: &Stats,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(req) = requests.get(i) else {
                return Ok(());
            };
            loop {
                if Instant::now() > deadline {
                    bail!("timed out while sending");
                }
                match self.send(req.body.clone()).await? {
                    Outcome::Done(rejected) => {
                        stats
                            .spans
                            .fetch_add(req.spans - rejected, Ordering::Relaxed);
                        stats.rejected.fetch_add(rejected, Ordering::Relaxed);
                        break;
                    }
                    Outcome::Retry(wait) => {
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    async fn send(&mut self, body: Bytes) -> anyhow::Result<Outcome> {
        match self {
            Sender::Http {
                client,
                url,
                tenant,
            } => {
                let resp = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .header("x-traceway-tenant", tenant.as_str())
                    .body(body)
                    .send()
                    .await
                    .context("OTLP/HTTP request")?;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(1);
                let bytes = resp.bytes().await.context("OTLP/HTTP response")?;
                match status {
                    200 => {
                        let r = ExportTraceServiceResponse::decode(bytes)
                            .context("ExportTraceServiceResponse")?;
                        Ok(Outcome::Done(rejected(&r)))
                    }
                    429 | 503 => Ok(Outcome::Retry(Duration::from_millis(
                        retry_after.min(5) * 100,
                    ))),
                    other => bail!("OTLP/HTTP answered {other}"),
                }
            }
            Sender::Grpc {
                grpc,
                tenant,
                authorization,
            } => {
                grpc.ready().await.context("gRPC channel")?;
                let mut req = tonic::Request::new(body);
                req.metadata_mut()
                    .insert("x-traceway-tenant", tenant.clone());
                if let Some(a) = authorization {
                    req.metadata_mut().insert("authorization", a.clone());
                }
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                );
                match grpc.unary(req, path, RawCodec).await {
                    Ok(r) => Ok(Outcome::Done(rejected(&r.into_inner()))),
                    Err(st)
                        if matches!(
                            st.code(),
                            tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                        ) =>
                    {
                        Ok(Outcome::Retry(Duration::from_millis(100)))
                    }
                    Err(st) => bail!("OTLP/gRPC answered {:?}: {}", st.code(), st.message()),
                }
            }
        }
    }
}

pub(crate) fn rejected(r: &ExportTraceServiceResponse) -> u64 {
    r.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

/// Sends pre-encoded bytes as the request message and decodes the OTLP response.
#[derive(Clone, Copy)]
pub(crate) struct RawCodec;

pub(crate) struct RawEncoder;
pub(crate) struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
