"""A loopback OTLP/HTTP trace receiver: the wire protocol of an OpenTelemetry collector's ``POST /v1/traces``
(``application/x-protobuf`` body, an ``ExportTraceServiceRequest``, optionally gzip-encoded), answering an
empty ``ExportTraceServiceResponse``. It keeps every received span for assertions.

Usage::

    async with OtlpReceiver() as otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.endpoint   # exporters post to <endpoint>/v1/traces
        ...
        otlp.spans            # [ReceivedSpan(service, trace_id, span_id, parent_span_id, name, kind)]
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from fakes.loopback import LoopbackServer


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as exported: ``service`` is the resource's ``service.name``; ids are lowercase hex."""

    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int


class OtlpReceiver(LoopbackServer):
    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.spans: list[ReceivedSpan] = []
        self.requests = 0

    @property
    def endpoint(self) -> str:
        return self.url

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._traces)

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="expected application/x-protobuf")
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        try:
            export.ParseFromString(body)
        except Exception:  # the protobuf runtime's DecodeError
            return web.Response(status=400, text="undecodable ExportTraceServiceRequest")
        self.requests += 1
        for resource_spans in export.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attrs.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )
