"""The OpenAI-compatible wire format: request validation and response bodies, with no Ray or torch.

Requests are checked here so that every bad request gets a 4xx with a reason in OpenAI's error
shape (`{"error": {"message", "type", "param", "code"}}`) before any model work starts. Unknown
OpenAI fields that do not change the output (`user`, `logprobs: null`, ...) are accepted and ignored;
fields that would change it and are not supported (`n > 1`, `stop`) are refused rather than ignored.
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
        kind = {401: "authentication_error", 404: "not_found_error"}.get(self.status, "invalid_request_error")
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


def parse_request(cls: type[_Request], raw: bytes, served_model: str, max_tokens_limit: int, default_max_tokens: int):
    """A validated request, or `RequestError` (400 malformed/invalid, 404 unknown model)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object")
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
    limit = getattr(request, "max_completion_tokens", None) or request.max_tokens
    if limit is None:
        limit = default_max_tokens
    if not 1 <= limit <= max_tokens_limit:
        raise RequestError(400, f"max_tokens must be between 1 and {max_tokens_limit}, got {limit}", "max_tokens")
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
