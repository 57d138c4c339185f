//! Logging and tracing setup for every edge binary: `tracing` to **stderr**, filtered by
//! `RUST_LOG` (default `info`), as text or as one flattened JSON object per line; and, only when
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, spans exported
//! with OTLP over gRPC (issue #14).
//!
//! Why stderr: login-service's CLI writes its data (`user list`) to stdout, so logs must not go
//! there, and one stream for both binaries means one log-shipper rule. Why flattened: log
//! pipelines query `message` and the event's fields at the top level (`request_id`, `sub`…),
//! not under a nested `fields` object.
//!
//! Why tracing is off unless configured: the check path pays for nothing it does not use. The
//! services ask [`tracing_enabled`] (one atomic load) before they build a span or read a
//! `traceparent`.

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Output format of the logs (`--log-format` / `LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// True once [`init`] installed the OTLP exporter.
static TRACING: AtomicBool = AtomicBool::new(false);
/// The exporter's provider and the runtime its batch task runs on, for [`shutdown`].
static EXPORT: OnceLock<(SdkTracerProvider, tokio::runtime::Runtime)> = OnceLock::new();

/// Whether spans are exported: callers skip building spans and parsing `traceparent` when not.
#[inline]
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Installs the global subscriber writing to stderr; a second call is a no-op (tests may call
/// it repeatedly). `service` names the process in traces unless `OTEL_SERVICE_NAME` does.
pub fn init(format: LogFormat, service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(provider) = otlp_endpoint_configured()
        .then(|| exporter(service))
        .flatten()
    else {
        // Tracing off (the default): exactly the subscriber of before traces existed. Why not
        // the layered one below with no OpenTelemetry layer: a global filter lets `tracing`
        // cache "never" for disabled callsites (the check's `debug!` allow line), where
        // per-layer filters re-evaluate them on every call: measured at about 3 µs more CPU
        // per check (BENCHMARKS.md, "Traces").
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Colour codes only for a terminal; files and log collectors get plain text.
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        let _ = match format {
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
            LogFormat::Text => builder.try_init(),
        };
        return;
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // Why a filter of its own: RUST_LOG=warn must quiet the logs, not the traces; and only our
    // crates' spans (the check, the request, the login steps, the feed) make the trace, not
    // every library's internals.
    let ours = Targets::new()
        .with_target("ext_authz", LevelFilter::INFO)
        .with_target("login_service", LevelFilter::INFO)
        .with_target("demo_upstream", LevelFilter::INFO)
        .with_target("edge_process", LevelFilter::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_filter(ours);
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    if installed {
        TRACING.store(true, Ordering::Relaxed);
        tracing::info!(
            endpoint = otlp_endpoint().as_deref().unwrap_or_default(),
            "exporting traces with OTLP/gRPC"
        );
    }
}

/// Exports the spans still buffered (at most a few seconds' worth); call before exit.
pub fn shutdown() {
    if let Some((provider, _runtime)) = EXPORT.get()
        && let Err(e) = provider.shutdown()
    {
        tracing::warn!(error = %e, "flushing traces at shutdown failed");
    }
}

fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// The standard switches: an endpoint set, and neither `OTEL_SDK_DISABLED=true` nor
/// `OTEL_TRACES_EXPORTER=none`.
fn otlp_endpoint_configured() -> bool {
    let off = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    otlp_endpoint().is_some()
        && !off("OTEL_SDK_DISABLED", "true")
        && !off("OTEL_TRACES_EXPORTER", "none")
}

/// The OTLP/gRPC exporter behind a batch processor, on a runtime of its own. Why its own: the
/// tonic exporter needs a Tokio reactor, the services' runtimes start after logging does (and
/// ext-authz may run a single-threaded one that must only serve checks), and an export that
/// stalls on a slow collector then never delays a request. The exporter reads the standard
/// `OTEL_EXPORTER_OTLP_*` variables, the batch processor `OTEL_BSP_*`, the resource
/// `OTEL_SERVICE_NAME`/`OTEL_RESOURCE_ATTRIBUTES`. `None` (with a line on stderr: the
/// subscriber is not up yet) when the exporter cannot be built.
fn exporter(service: &'static str) -> Option<SdkTracerProvider> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| eprintln!("traces disabled: cannot start the export runtime: {e}"))
        .ok()?;
    let provider = {
        let _in_runtime = runtime.enter();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| eprintln!("traces disabled: OTLP exporter: {e}"))
            .ok()?;
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service);
        }
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build()
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORT.set((provider.clone(), runtime)).ok()?;
    Some(provider)
}

/// Longest `traceparent`/`tracestate` read (W3C: 55 and at most 512 characters).
const MAX_TRACE_HEADER_LEN: usize = 512;

/// `value` when it is no longer than [`MAX_TRACE_HEADER_LEN`].
fn bounded(value: Option<&str>) -> Option<&str> {
    value.filter(|v| v.len() <= MAX_TRACE_HEADER_LEN)
}

/// The two W3C trace-context headers of one request, as the propagator reads them.
struct W3cHeaders<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for W3cHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Makes `span` a child of the caller's span named by a W3C `traceparent` (and `tracestate`),
/// when tracing is on and the header is well formed; otherwise the span starts a new trace.
/// Why bounded: a client that reaches a service directly chooses these headers.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = bounded(traceparent) else {
        return;
    };
    if !tracing_enabled() {
        return;
    }
    let carrier = W3cHeaders {
        traceparent: Some(traceparent),
        tracestate: bounded(tracestate),
    };
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Why ignored: the only error is "no OpenTelemetry layer", i.e. tracing is off.
    let _ = span.set_parent(parent);
}

/// The W3C headers (`traceparent`, `tracestate`) naming `span`, to send on an outgoing request
/// so the server's span continues this trace; empty when tracing is off.
pub fn trace_headers(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if !tracing_enabled() {
        return Vec::new();
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| carrier.remove(name).map(|value| (name, value)))
        .collect()
}

/// Longest `x-request-id` put into a log line (Envoy's are 36-byte UUIDs).
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The `x-request-id` header value to log as `request_id`, or `""`: every service logs the id
/// Envoy assigned, so one request greps out of Envoy's access log and every service's lines.
/// Why bounded and visible ASCII only: a client that reaches a service directly chooses the
/// header, and must not forge log lines or fill the log with it.
pub fn request_id(value: Option<&[u8]>) -> &str {
    value
        .filter(|v| v.len() <= MAX_REQUEST_ID_LEN && v.iter().all(u8::is_ascii_graphic))
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_kept_only_when_short_and_printable() {
        let uuid = "3f0c2a1e-9b7d-4c55-8e21-0a6b1c2d3e4f";
        assert_eq!(request_id(Some(uuid.as_bytes())), uuid);
        assert_eq!(request_id(None), "");
        assert_eq!(request_id(Some(b"a\nlevel=ERROR forged")), "");
        assert_eq!(request_id(Some(b"with space")), "");
        assert_eq!(request_id(Some("é".as_bytes())), "");
        let max = "x".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(request_id(Some(max.as_bytes())), max);
        assert_eq!(request_id(Some(format!("{max}x").as_bytes())), "");
    }
}
