"""The OpenAI-compatible wire format: request validation and response bodies, with no Ray or torch.

Requests are checked here so that every bad request gets a 4xx with a reason in OpenAI's error
shape (`{"error": {"message", "type", "param", "code"}}`) before any model work starts. Fields that
do not change the output (`user`, `logprobs: null`, ...) are accepted and ignored; fields that would
change it and are not supported (`UNSUPPORTED`, `n > 1`, `stop`) are refused with a 400 naming the
field rather than silently dropped. The body is bounded before it is trusted: JSON only (415),
nesting at most `MAX_JSON_DEPTH` deep and numbers Python can hold (400); its size is bounded by the
ingress while it is read (413).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)


class RequestError(Exception):
    """A client error: HTTP status, message, and the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large",
                415: "unsupported_media_type"}.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Strict types: `true` or "10" for a number is a client error, not a value to coerce.
    model: StrictStr
    max_tokens: StrictInt | None = None
    temperature: StrictFloat = Field(1.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(1.0, gt=0.0, le=1.0)
    seed: StrictInt | None = Field(None, ge=0, lt=2**64, description="torch seeds are unsigned 64-bit")
    stream: StrictBool = False
    n: StrictInt = Field(1, ge=1, le=1, description="one choice per request")
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _no_stop_sequences(cls, value):
        if value:
            raise ValueError("stop sequences are not supported; generation ends at end-of-sequence or max_tokens")
        return None


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_non_empty_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("exactly one prompt per request")
            value = value[0]
        if not value.strip():
            raise ValueError("the prompt is empty")
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_content(cls, value):
        if not any(m.role == "user" and m.content.strip() for m in value):
            raise ValueError("no user message with content")
        return value


MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request may have (a chat request needs 4)."""

UNSUPPORTED = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "prediction": (None,),
    "audio": (None,),
    "modalities": (None, ["text"]),
}
"""OpenAI fields this server does not implement -> the values that leave the output unchanged (accepted)."""


def check_content_type(content_type: str | None) -> None:
    """415 unless the body is declared JSON: a browser's CORS "simple" request (text/plain, forms) cannot be."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _depth(value, limit: int) -> int:
    """Nesting depth of parsed JSON, counted without recursion and stopping once past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= limit:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(raw: bytes):
    """The parsed body, or a 400 for text that is not JSON, nests too deep, or holds what Python or a tokenizer refuses."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError, NaN, integers of over 4,300 digits
        raise RequestError(400, f"request body is not valid JSON: {error}") from None
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise RequestError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:  # `\ud800` escapes decode to lone surrogates, which no tokenizer can encode
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(400, "request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), not text") from None
    return data


def _refuse_unsupported(data: dict) -> None:
    for field, neutral in UNSUPPORTED.items():
        if field in data and data[field] not in neutral:
            raise RequestError(400, f"{field} is not supported by this server; remove it from the request", field,
                               "unsupported_parameter")


def parse_request(cls: type[_Request], raw: bytes, served_model: str, max_tokens_limit: int, default_max_tokens: int):
    """A validated request, or `RequestError` (400 malformed/invalid/unsupported, 404 unknown model)."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object")
    _refuse_unsupported(data)
    try:
        request = cls.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        param = ".".join(str(part) for part in problem["loc"]) or None
        message = problem["msg"].removeprefix("Value error, ")
        raise RequestError(400, f"{param}: {message}" if param else message, param) from None
    if request.model != served_model:
        raise RequestError(404, f"model {request.model!r} does not exist; this server serves {served_model!r}",
                           "model", "model_not_found")
    field = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) is not None else "max_tokens"
    limit = getattr(request, field)
    if limit is None:
        limit = default_max_tokens
    if not 1 <= limit <= max_tokens_limit:
        raise RequestError(400, f"{field} must be between 1 and {max_tokens_limit}, got {limit}", field)
    request.max_tokens = limit
    return request


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(metrics: dict) -> dict:
    """OpenAI `usage`, plus the speculative decoding counters of this request under `speculative`."""
    prompt, completion = metrics["prompt_tokens"], metrics["new_tokens"]
    speculative = {key: metrics[key] for key in (
        "target_forwards", "drafts", "draft_tokens", "accepted_tokens", "mean_accepted_length",
        "acceptance_rate", "acceptance_rate_by_position", "tokens_per_s",
    )}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "speculative": speculative}


def completion_body(request_id: str, model: str, text: str, finish_reason: str, metrics: dict) -> dict:
    return {
        "id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage(metrics),
    }


def chat_body(request_id: str, model: str, text: str, finish_reason: str, metrics: dict) -> dict:
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": usage(metrics),
    }


def stream_chunk(chat: bool, request_id: str, model: str, text: str, finish_reason: str | None,
                 metrics: dict | None = None, first: bool = False) -> str:
    """One server-sent event; the last chunk carries `finish_reason` and `usage`."""
    if chat:
        delta = {"role": "assistant", "content": text} if first else {"content": text}
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        obj = "text_completion"
    body = {"id": request_id, "object": obj, "created": int(time.time()), "model": model, "choices": [choice]}
    if metrics is not None:
        body["usage"] = usage(metrics)
    return f"data: {json.dumps(body)}\n\n"


STREAM_DONE = "data: [DONE]\n\n"


def models_body(model: str, owned_by: str = "sdd-ray") -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": owned_by}]}
