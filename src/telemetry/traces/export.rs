//! Getting finished spans to the collector without the request path ever waiting for it.
//!
//! A request's span ends on a proxy worker: [`QueueProcessor::on_end`] only tries to put it in a
//! bounded queue (a full queue drops it and counts the drop). One thread of its own, with its own
//! small runtime, drains the queue in batches (`otel_bsp_max_export_batch_size`, at least every
//! `otel_bsp_schedule_delay`) and sends them, each export bounded by `otel_exporter_otlp_timeout`.
//! A collector that is down, slow or refusing costs that thread time and nothing else.
//! Pomerium's batch processor does the same; this one is ours so the drops are counted
//! (`vallum_trace_spans_total{result="dropped"}`) and reported.

use super::SPANS;
use crate::config::otel::{OtelSettings, Protocol};
use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The request path's end of the queue.
#[derive(Debug)]
pub struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() && self.spans.try_send(span).is_err() {
            SPANS.with_label_values(&["dropped"]).inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Asks the export thread to send what it holds now, from any thread (the process is about to
/// exit: shutdown and graceful upgrade).
pub struct Flusher {
    requests: mpsc::UnboundedSender<std::sync::mpsc::SyncSender<()>>,
    within: Duration,
}

impl Flusher {
    /// Sends what is queued, waiting at most the export timeout (and a second).
    pub fn flush(&self) {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        if self.requests.send(done).is_ok() {
            let _ = finished.recv_timeout(self.within);
        }
    }
}

/// Starts the export thread; the exporter is built on it (tonic needs its runtime).
pub fn start(
    settings: &OtelSettings,
    resource: Resource,
) -> std::io::Result<(QueueProcessor, Flusher)> {
    let (spans, queue) = mpsc::channel(settings.max_queue);
    let (flush, flushes) = mpsc::unbounded_channel();
    let within_settings = settings.clone();
    std::thread::Builder::new()
        .name("vallum-traces".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(target: "vallum::traces::export", error = %e, "cannot start the trace exporter");
                    return;
                }
            };
            rt.block_on(async move {
                match exporter(&within_settings, &resource) {
                    Ok(exporter) => {
                        Batcher::new(exporter, within_settings)
                            .run(queue, flushes)
                            .await
                    }
                    Err(e) => {
                        tracing::error!(target: "vallum::traces::export", error = %e, "cannot build the trace exporter; spans are dropped")
                    }
                }
            });
        })?;
    let within = settings.timeout + Duration::from_secs(1);
    Ok((
        QueueProcessor { spans },
        Flusher {
            requests: flush,
            within,
        },
    ))
}

fn exporter(
    s: &OtelSettings,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match s.protocol {
        Protocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &s.headers {
                match (
                    http::HeaderName::try_from(k.as_str()),
                    http::HeaderValue::try_from(v),
                ) {
                    (Ok(k), Ok(v)) => {
                        headers.insert(k, v);
                    }
                    _ => return Err(format!("header {k:?} cannot be gRPC metadata")),
                }
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&s.endpoint)
                .with_timeout(s.timeout)
                .with_metadata(metadata);
            if s.endpoint.starts_with("https://") {
                b = b.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_native_roots(),
                );
            }
            b.build()
        }
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(&s.endpoint)
            .with_timeout(s.timeout)
            .with_headers(s.headers.iter().cloned().collect())
            .with_http_client(Http(
                reqwest::Client::builder()
                    .timeout(s.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| e.to_string())?,
            ))
            .build(),
    };
    let mut exporter = built.map_err(|e| e.to_string())?;
    exporter.set_resource(resource);
    Ok(exporter)
}

/// The HTTP exporter's client: the reqwest Vallum already has (opentelemetry-otlp's own client
/// feature would build a second reqwest version).
#[derive(Debug)]
struct Http(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Http {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        // A collector's answer is small (an empty message, or a partial-success count): at
        // most 64 KiB of it is read.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > 64 * 1024 {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response::builder()
            .status(status)
            .body(bytes::Bytes::from(body))?)
    }
}

struct Batcher {
    exporter: opentelemetry_otlp::SpanExporter,
    settings: OtelSettings,
    batch: Vec<SpanData>,
    /// When a failure, and drops, were last reported (at most one line a minute of each).
    failure_reported: Option<Instant>,
    drops_reported: Option<Instant>,
    dropped_seen: u64,
}

impl Batcher {
    fn new(exporter: opentelemetry_otlp::SpanExporter, settings: OtelSettings) -> Self {
        Self {
            exporter,
            batch: Vec::with_capacity(settings.max_batch),
            settings,
            failure_reported: None,
            drops_reported: None,
            dropped_seen: 0,
        }
    }

    async fn run(
        mut self,
        mut queue: mpsc::Receiver<SpanData>,
        mut flushes: mpsc::UnboundedReceiver<std::sync::mpsc::SyncSender<()>>,
    ) {
        let mut tick = tokio::time::interval(self.settings.schedule_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                span = queue.recv() => match span {
                    Some(span) => {
                        self.batch.push(span);
                        if self.batch.len() >= self.settings.max_batch {
                            self.send().await;
                        }
                    }
                    None => return self.send().await,
                },
                _ = tick.tick() => self.send().await,
                Some(done) = flushes.recv() => {
                    while let Ok(span) = queue.try_recv() {
                        self.batch.push(span);
                        if self.batch.len() >= self.settings.max_batch {
                            self.send().await;
                        }
                    }
                    self.send().await;
                    let _ = done.try_send(());
                }
            }
        }
    }

    async fn send(&mut self) {
        self.report_drops();
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        if let Some(limit) = self.settings.value_length_limit {
            batch.iter_mut().for_each(|s| truncate(s, limit));
        }
        let n = batch.len() as u64;
        let sent = tokio::time::timeout(self.settings.timeout, self.exporter.export(batch)).await;
        let failure = match sent {
            Ok(Ok(())) => {
                SPANS.with_label_values(&["exported"]).inc_by(n);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.timeout),
        };
        SPANS.with_label_values(&["failed"]).inc_by(n);
        if crate::telemetry::once_a_minute(&mut self.failure_reported) {
            tracing::warn!(target: "vallum::traces::export", spans = n, endpoint = %self.settings.endpoint, error = %failure, "cannot export spans; they are dropped");
        }
    }

    fn report_drops(&mut self) {
        let dropped = SPANS.with_label_values(&["dropped"]).get();
        if dropped > self.dropped_seen && crate::telemetry::once_a_minute(&mut self.drops_reported)
        {
            tracing::warn!(target: "vallum::traces::export", dropped = dropped - self.dropped_seen, queue = self.settings.max_queue, "spans dropped: the export queue was full");
            self.dropped_seen = dropped;
        }
    }
}

/// `otel_attribute_value_length_limit`: string values cut to `limit` characters.
fn truncate(span: &mut SpanData, limit: usize) {
    for KeyValue { value, .. } in span.attributes.iter_mut() {
        if let Value::String(s) = value {
            if s.as_str().chars().count() > limit {
                let cut: String = s.as_str().chars().take(limit).collect();
                *value = Value::from(cut);
            }
        }
    }
}
