"""Drafts from a chat model (OpenAI, or a compatible server such as Ollama or vLLM) with a strict JSON schema."""

from __future__ import annotations

import functools
import json
import math
import uuid
from typing import Any, Self

import openai
from openai.types.chat import ChatCompletion
from pydantic import model_validator

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    JobFailed,
    ProviderUnavailable,
    RateLimited,
    ScenecastError,
)
from services.common.limits import MAX_NARRATION_CHARS, MAX_PROMPT_CHARS, MAX_TITLE_CHARS
from services.common.openai_errors import OpenAISettings, map_openai_error, openai_client
from services.common.providers import SPOKEN_CHARS_PER_SECOND, Price, Provider, ProviderDescription
from services.common.retry import call_with_retries
from services.common.script_format import SceneModel, ScriptModel
from services.script.providers.base import Draft, DraftCall, DraftJob, InvalidDraft, UnusableDraft, checked_draft

NAME = "openai"
DEFAULT_MODEL = "gpt-4.1-mini"
# Published prices, USD per 1M tokens (input, output), of the models this provider is known to draft well with:
# gpt-4.1-mini, $0.40 / $1.60 (OpenAI's list price as reported in 2026; not a reasoning model, so every output token
# is the answer and the output cap below bounds the cost). Any other model needs its prices in the settings.
USD_PER_MILLION_TOKENS = {DEFAULT_MODEL: (0.40, 1.60)}
# English averages 4 characters a token; counting 3 keeps estimates an upper bound for most other languages too.
CHARS_PER_TOKEN = 3
# The answer holds more than the narration: titles, visual descriptions and JSON; and the model may overshoot.
ANSWER_CHARS_PER_NARRATION_CHAR = 3
# Tokens of the chat format itself around the messages, and room for a short answer's own overhead.
OVERHEAD_TOKENS = 1000
DEFAULT_TARGET_SECONDS = 60


class OpenAIChatSettings(OpenAISettings):
    # Chat model that drafts scripts; it must support structured outputs (response_format json_schema).
    script_openai_model: str = DEFAULT_MODEL
    # Its price, USD per 1M input (prompt) tokens and per 1M output tokens. Empty: the published price of a known
    # model (gpt-4.1-mini); required for any other model (0 for a server of your own).
    script_openai_input_usd_per_million_tokens: float | None = None
    script_openai_output_usd_per_million_tokens: float | None = None

    @model_validator(mode="after")
    def _check_prices(self) -> Self:
        given = (self.script_openai_input_usd_per_million_tokens, self.script_openai_output_usd_per_million_tokens)
        if (given[0] is None) != (given[1] is None):
            raise ValueError(
                "set both SCRIPT_OPENAI_INPUT_USD_PER_MILLION_TOKENS and SCRIPT_OPENAI_OUTPUT_USD_PER_MILLION_TOKENS "
                "(or neither, for a model whose price is known)"
            )
        if any(price is not None and not (math.isfinite(price) and price >= 0) for price in given):
            raise ValueError("SCRIPT_OPENAI_*_USD_PER_MILLION_TOKENS must be finite numbers of US dollars, 0 or more")
        return self


def _usd_per_million_tokens(settings: OpenAIChatSettings) -> tuple[float, float]:
    """(input, output) prices; FAILED_PRECONDITION for a model of unknown price, which must never pass as free."""
    given = (settings.script_openai_input_usd_per_million_tokens, settings.script_openai_output_usd_per_million_tokens)
    if given[0] is not None and given[1] is not None:
        return given[0], given[1]
    known = USD_PER_MILLION_TOKENS.get(settings.script_openai_model)
    if known is None:
        raise FailedPrecondition(
            f"SCRIPT_OPENAI_MODEL={settings.script_openai_model} has no known price; set "
            "SCRIPT_OPENAI_INPUT_USD_PER_MILLION_TOKENS and SCRIPT_OPENAI_OUTPUT_USD_PER_MILLION_TOKENS (0 for a "
            "server of your own)"
        )
    return known


def _property(description: str, name: str) -> dict[str, str]:
    # The answer's fields are the script format's own: a field renamed there fails here, when the module loads.
    if name not in SceneModel.model_fields and name not in ScriptModel.model_fields:
        raise KeyError(f"the script format has no field {name!r}")
    return {"type": "string", "description": description}


# The answer's JSON schema, in the shape of a script's title and scenes (ids are numbered by the service), in the
# form strict mode asks: every property required, no others allowed.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": _property(f"Title of the video, at most {MAX_TITLE_CHARS} characters.", "title"),
        "scenes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "title": _property(
                        f"Heading shown on screen: a few words, at most {MAX_TITLE_CHARS} characters.", "title"
                    ),
                    "narration": _property(
                        "What the narrator says over the scene: one to four plain spoken sentences, no Markdown, "
                        f"lists or URLs; at most {MAX_NARRATION_CHARS} characters.",
                        "narration",
                    ),
                    "visual": _property(
                        "The one picture shown during the scene, described concretely for an image model, with no "
                        f"text in the picture; at most {MAX_PROMPT_CHARS} characters.",
                        "visual",
                    ),
                },
                "required": ["title", "narration", "visual"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["title", "scenes"],
    "additionalProperties": False,
}
_RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "scenecast_script", "schema": ANSWER_SCHEMA, "strict": True},
}
_SYSTEM = (
    "You write scripts for short narrated videos. A script is a list of scenes; each scene is one picture on screen "
    "with narration spoken over it. Answer with the script as JSON following the given schema, and nothing else. "
    "Keep facts accurate; when drafting from a document, keep its facts and their order and add nothing it does "
    "not say."
)


def _messages(job: DraftJob) -> list[dict[str, str]]:
    seconds = job.target_seconds or DEFAULT_TARGET_SECONDS
    lines = [
        f"Audience: {job.audience or 'a general audience'}.",
        f"Tone: {job.tone or 'clear and friendly'}.",
        f"Length: about {seconds} seconds of narration in all (about {round(seconds * SPOKEN_CHARS_PER_SECOND)} "
        f"characters), in at most {job.max_scenes} scenes.",
    ]
    if job.language:
        lines.append(f"Language of the title, scene titles and narration: {job.language}.")
    source = f"Topic: {job.topic}" if job.topic else f"Turn this document into the script:\n\n{job.document}"
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join([source, "", *lines])}]


def _output_cap(job: DraftJob) -> int:
    """The most output tokens one call may bill (its max_completion_tokens)."""
    narration_chars = (job.target_seconds or DEFAULT_TARGET_SECONDS) * SPOKEN_CHARS_PER_SECOND
    return math.ceil(narration_chars * ANSWER_CHARS_PER_NARRATION_CHAR / CHARS_PER_TOKEN) + OVERHEAD_TOKENS


def _tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class OpenAIChatProvider(Provider[OpenAIChatSettings, DraftJob]):
    description = ProviderDescription(
        name=NAME,
        description="A chat model (OpenAI, or an OpenAI-compatible server via OPENAI_BASE_URL) drafts from a topic "
        "or a document",
        offline=False,
    )
    settings_class = OpenAIChatSettings
    required_settings = ("openai_api_key",)
    output_settings = ("script_openai_model", "openai_base_url")

    @classmethod
    def prices(cls, settings: OpenAIChatSettings) -> tuple[Price, ...]:
        try:
            usd_in, usd_out = _usd_per_million_tokens(settings)
        except FailedPrecondition:
            return ()  # GetConfig shows no price; a draft is refused until one is set
        model = settings.script_openai_model
        return (
            Price(model, "1M input tokens", usd_in, "the prompt: instructions, topic or document"),
            Price(model, "1M output tokens", usd_out, "the drafted script"),
        )

    @classmethod
    def estimate_usd(cls, settings: OpenAIChatSettings, job: DraftJob) -> float:
        """The worst case: the first call with its full output allowance, then the one repeat, whose prompt also
        holds the first answer and what was wrong with it."""
        usd_in, usd_out = _usd_per_million_tokens(settings)
        prompt = _tokens(json.dumps(_messages(job)) + json.dumps(_RESPONSE_FORMAT)) + OVERHEAD_TOKENS
        output = _output_cap(job)
        input_tokens = prompt + (prompt + output + OVERHEAD_TOKENS)
        return (input_tokens * usd_in + 2 * output * usd_out) / 1_000_000

    async def draft(self, job: DraftJob) -> Draft:
        calls: list[DraftCall] = []
        try:
            return await self._draft(job, calls)
        except ScenecastError as error:
            if not calls:
                raise
            raise UnusableDraft(error, tuple(calls)) from error

    async def _draft(self, job: DraftJob, calls: list[DraftCall]) -> Draft:
        """The draft; each billed call is appended to `calls` as soon as it is answered."""
        model = self.settings.script_openai_model
        usd_in, usd_out = _usd_per_million_tokens(self.settings)
        client = openai_client(self.settings, NAME)
        field = "topic" if job.topic else "document.text"
        messages = _messages(job)
        for _ in range(2):  # the first answer, and one more when it is not a usable script
            completion = await call_with_retries(
                functools.partial(self._complete, client, messages, _output_cap(job), field),
                attempts=job.attempts,
                deadline=job.deadline,
                provider=NAME,
            )
            calls.append(_call(completion, messages, model, usd_in, usd_out))
            message = completion.choices[0].message if completion.choices else None
            refusal = getattr(message, "refusal", None) or ""
            content = (message.content if message else None) or ""
            try:
                return checked_draft(
                    _answer(completion, refusal, content), job.max_scenes, calls[-1].model, tuple(calls)
                )
            except InvalidDraft as error:
                problem = str(error)
            messages = [
                *messages,
                {"role": "assistant", "content": content or refusal},
                {
                    "role": "user",
                    "content": f"That answer cannot be used: {problem}. Answer again with the whole script as JSON "
                    "following the schema, within its limits.",
                },
            ]
        spent = sum(call.cost_usd for call in calls)
        if refusal:
            raise InvalidArgument(f"{field}: {model} refused to draft it twice ({refusal}); rephrase it")
        raise JobFailed(
            f"{NAME}: {model} answered twice without a usable script ({problem}); both calls are billed "
            f"(${spent:.4f}); try again, or choose another model (SCRIPT_OPENAI_MODEL)"
        )

    async def _complete(
        self, client: openai.AsyncOpenAI, messages: list[dict[str, str]], max_tokens: int, field: str
    ) -> ChatCompletion:
        try:
            completion = await client.chat.completions.create(
                model=self.settings.script_openai_model,
                messages=messages,  # type: ignore[arg-type]
                response_format=_RESPONSE_FORMAT,  # type: ignore[arg-type]
                max_completion_tokens=max_tokens,
            )
        except openai.OpenAIError as error:
            mapped = map_openai_error(error, NAME, field)
            if isinstance(mapped, ProviderUnavailable) and not isinstance(mapped, RateLimited):
                # Only a 429 is certain not to have been answered: after a 5xx or a lost connection the request may
                # have been answered, and billed, so it is not ordered again behind the caller's back.
                raise JobFailed(
                    f"{mapped}; not repeated, since the request may have been answered (and billed)"
                ) from error
            raise mapped from error
        if not isinstance(completion, ChatCompletion):  # a proxy answering 200 with something else
            raise JobFailed(f"{NAME}: the answer is not a chat completion ({type(completion).__name__})")
        return completion


def _answer(completion: ChatCompletion, refusal: str, content: str) -> Any:
    """The JSON the model answered; InvalidDraft for a refusal, a cut answer or text that is not JSON."""
    if refusal:
        raise InvalidDraft(f"the answer is a refusal ({refusal})")
    if completion.choices and completion.choices[0].finish_reason == "length":
        raise InvalidDraft("the answer was cut off at its length limit; write a shorter script")
    try:
        return json.loads(content)
    except ValueError as error:
        raise InvalidDraft(f"the answer is not valid JSON ({error})") from None


def _call(
    completion: ChatCompletion, messages: list[dict[str, str]], model: str, usd_in: float, usd_out: float
) -> DraftCall:
    """The billed call, priced from the token counts the vendor reports. A compatible server that reports none is
    priced from the characters sent and received, as the estimate counts them."""
    usage = completion.usage
    if usage is not None:
        input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
    else:
        message = completion.choices[0].message if completion.choices else None
        input_tokens = _tokens(json.dumps(messages)) + OVERHEAD_TOKENS
        output_tokens = _tokens((message.content or message.refusal or "") if message else "")
    return DraftCall(
        id=completion.id or uuid.uuid4().hex,
        model=completion.model or model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=(input_tokens * usd_in + output_tokens * usd_out) / 1_000_000,
    )
