# A client instrumented with the OpenTelemetry Python SDK (requests instrumentation, default W3C
# propagation): `GET URL` inside a span of the application's own. Prints the SDK's client span,
# whose context the instrumentation sent in `traceparent`:
# `SDK trace=T span=S parent=P status=C`.
#
# usage: otel_client.py URL
import sys

import requests
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
RequestsInstrumentor().instrument()

session = requests.Session()
session.trust_env = False  # no proxy from the environment
with trace.get_tracer("app").start_as_current_span("operation"):
    r = session.get(sys.argv[1], timeout=30)

clients = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
if len(clients) != 1:
    sys.exit("expected one SDK client span, got %d" % len(clients))
c = clients[0]
print("SDK trace=%032x span=%016x parent=%016x status=%d"
      % (c.context.trace_id, c.context.span_id, c.parent.span_id, r.status_code), flush=True)
