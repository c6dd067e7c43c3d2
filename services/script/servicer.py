"""ScriptService: translates requests to DraftJobs and Drafts to scenes."""

from __future__ import annotations

import grpc
from scenecast.v1 import script_service_pb2, script_service_pb2_grpc, types_pb2

from services.common.convert import provider_set
from services.common.errors import BILLED_CALLS_KEY, FailedPrecondition, InvalidArgument, rpc_method
from services.common.limits import (
    DEFAULT_MAX_SCENES,
    MAX_DOCUMENT_CHARS,
    MAX_DRAFT_OPTION_CHARS,
    MAX_TARGET_SECONDS,
    MAX_TOPIC_CHARS,
)
from services.common.observability import record_spend
from services.common.providers import ProviderRegistry, check_cost_cap
from services.common.retry import call_deadline
from services.common.text import checked_text
from services.script.providers.base import DocumentFormat, DraftCall, DraftJob, ScriptProvider, UnusableDraft

_FORMATS: dict[int, DocumentFormat] = {
    script_service_pb2.DOCUMENT_FORMAT_MARKDOWN: "markdown",
    script_service_pb2.DOCUMENT_FORMAT_PLAIN: "plain",
}


class ScriptServicer(script_service_pb2_grpc.ScriptServiceServicer):
    def __init__(self, registry: ProviderRegistry[ScriptProvider], attempts: int) -> None:
        self._registry = registry
        self._attempts = attempts

    @rpc_method
    async def DraftScript(
        self, request: script_service_pb2.DraftScriptRequest, context: grpc.aio.ServicerContext
    ) -> script_service_pb2.DraftScriptResponse:
        job = _draft_job(request, "", call_deadline(context), self._attempts)
        name, provider = self._registry.get(request.provider, "provider")
        estimate = self._registry.estimate_usd(name, job)
        # `not <=` so that an estimate that is not a number is refused too.
        if request.max_cost_usd and not estimate <= request.max_cost_usd:
            raise FailedPrecondition(
                f"the draft is estimated at up to ${estimate:.4f}, over max_cost_usd ${request.max_cost_usd:.4f}; "
                "raise the cap, ask for fewer seconds, or choose the offline outline provider"
            )
        try:
            draft = await provider.draft(job)
        except UnusableDraft as failure:
            for call in failure.calls:
                record_spend(name, call.model, call.cost_usd)
            calls = script_service_pb2.DraftCalls(calls=[_call_message(call) for call in failure.calls])
            failure.error.trailers = ((BILLED_CALLS_KEY, calls.SerializeToString()),)
            raise failure.error from failure
        for call in draft.calls:
            record_spend(name, call.model, call.cost_usd)
        return script_service_pb2.DraftScriptResponse(
            title=draft.title,
            scenes=[
                types_pb2.Scene(id=scene.id, narration=scene.narration, visual_prompt=scene.visual, title=scene.title)
                for scene in draft.scenes
            ],
            provider=name,
            model=draft.model,
            cost_usd=draft.cost_usd,
            calls=[_call_message(call) for call in draft.calls],
        )

    @rpc_method
    async def EstimateDraftCost(
        self, request: script_service_pb2.EstimateDraftCostRequest, context: grpc.aio.ServicerContext
    ) -> script_service_pb2.EstimateDraftCostResponse:
        job = _draft_job(request.request, "request.")
        name = self._registry.resolve(request.request.provider, "request.provider")
        usd = self._registry.estimate_usd(name, job)
        return script_service_pb2.EstimateDraftCostResponse(estimate=types_pb2.CostEstimate(provider=name, usd=usd))

    @rpc_method
    async def ListScriptProviders(
        self, request: script_service_pb2.ListScriptProvidersRequest, context: grpc.aio.ServicerContext
    ) -> script_service_pb2.ListScriptProvidersResponse:
        return script_service_pb2.ListScriptProvidersResponse(
            providers=provider_set(types_pb2.MEDIA_KIND_SCRIPT, self._registry)
        )


def _draft_job(
    request: script_service_pb2.DraftScriptRequest, prefix: str, deadline: float | None = None, attempts: int = 1
) -> DraftJob:
    """The job a request asks for, checked; `prefix` places the request's fields ("request.")."""
    check_cost_cap(request.max_cost_usd, f"{prefix}max_cost_usd")
    source = request.WhichOneof("source")
    topic = document = ""
    document_format: DocumentFormat | None = None
    if source == "topic":
        topic = checked_text(request.topic, f"{prefix}topic", MAX_TOPIC_CHARS)
    elif source == "document":
        document_format = _FORMATS.get(request.document.format)
        if document_format is None:
            raise InvalidArgument(f"{prefix}document.format must be MARKDOWN or PLAIN (got {request.document.format})")
        # Windows and old Mac line ends are line ends, not control characters to refuse.
        text = request.document.text.replace("\r\n", "\n").replace("\r", "\n")
        document = checked_text(text, f"{prefix}document.text", MAX_DOCUMENT_CHARS)
    else:
        raise InvalidArgument(f"{prefix}topic and {prefix}document are both unset; give a topic or a document")
    if request.target_seconds > MAX_TARGET_SECONDS:
        raise InvalidArgument(
            f"{prefix}target_seconds is {request.target_seconds}; at most {MAX_TARGET_SECONDS} (an hour), so split "
            "the video"
        )
    return DraftJob(
        topic=topic,
        document=document,
        document_format=document_format or "",
        audience=checked_text(request.audience, f"{prefix}audience", MAX_DRAFT_OPTION_CHARS, required=False),
        target_seconds=request.target_seconds,
        tone=checked_text(request.tone, f"{prefix}tone", MAX_DRAFT_OPTION_CHARS, required=False),
        language=checked_text(request.language, f"{prefix}language", MAX_DRAFT_OPTION_CHARS, required=False),
        max_scenes=request.max_scenes or DEFAULT_MAX_SCENES,
        deadline=deadline,
        attempts=attempts,
    )


def _call_message(call: DraftCall) -> script_service_pb2.DraftCall:
    return script_service_pb2.DraftCall(
        id=call.id,
        model=call.model,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cost_usd=call.cost_usd,
    )
