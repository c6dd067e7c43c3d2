"""Errors as RFC 9457 `application/problem+json`, and the one place where gRPC status codes become HTTP statuses."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from scenecast.v1 import render_service_pb2
from starlette.exceptions import HTTPException

from services.common.errors import ORIGIN_KEY

PROBLEM_JSON = "application/problem+json"

# Google's mapping (google.rpc.Code), except where the HTTP caller is not the one who can act on it: the gateway
# refusing this service's own token, or a cancelled render, is no fault of the request's credentials.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.ABORTED: HTTPStatus.CONFLICT,
    # A cancelled render exists but will never have a video: the state conflicts with the request.
    grpc.StatusCode.CANCELLED: HTTPStatus.CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    # This service's SCENECAST_TOKEN (or certificate) was refused: an operator's fix, not the caller's.
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.BAD_GATEWAY,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.BAD_GATEWAY,
}

# The request fields a gateway message may start with ("scenes[2].narration is empty ..."), from the contract itself.
_REQUEST_FIELDS = {
    name
    for message in (render_service_pb2.RenderRequest, render_service_pb2.GetSpendRequest)
    for name in message.DESCRIPTOR.fields_by_name
}
_LEADING_PATH = re.compile(r"[a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*")


class FieldProblem(BaseModel):
    """One refused field: its path as the gRPC messages write it ("scenes[0].id") and why."""

    field: str
    detail: str


class Problem(BaseModel):
    """An RFC 9457 problem document; `detail` has the gRPC message's wording, which names the field and the fix."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    # The field the problem is about, when there is one.
    field: str | None = None
    # Every refused field, when the script model found several.
    errors: list[FieldProblem] | None = None
    # The gRPC status the gateway answered with, when it did.
    grpc_status: str | None = None


class ProblemError(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        errors: list[FieldProblem] | None = None,
        grpc_status: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = Problem(
            title=HTTPStatus(status).phrase,
            status=status,
            detail=detail,
            field=field,
            errors=errors,
            grpc_status=grpc_status,
        )
        self.headers = headers

    @classmethod
    def from_rpc(cls, error: grpc.aio.AioRpcError) -> ProblemError:
        """The problem for a failed gateway call. A transport failure (no status from the gateway itself) is 502
        when the gateway cannot be reached at all; the gateway's own UNAVAILABLE (a provider down) stays 503."""
        code, detail = error.code(), error.details() or ""
        from_gateway = any(key == ORIGIN_KEY for key, _ in (error.trailing_metadata() or ()))
        if code == grpc.StatusCode.UNAVAILABLE and not from_gateway:
            status, detail = HTTPStatus.BAD_GATEWAY, f"the gateway cannot be reached: {detail}"
        else:
            status = _HTTP_STATUS.get(code, HTTPStatus.INTERNAL_SERVER_ERROR)
        field = None
        if code == grpc.StatusCode.INVALID_ARGUMENT and (match := _LEADING_PATH.match(detail)):
            if re.split(r"[.\[]", match.group())[0] in _REQUEST_FIELDS:
                field = match.group()
        return cls(status, detail, field=field, grpc_status=code.name)


def field_path(loc: tuple[str | int, ...]) -> str:
    """A pydantic location as the gRPC messages write a field: ("scenes", 0, "id") is "scenes[0].id"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True), status_code=problem.status, media_type=PROBLEM_JSON, headers=headers
    )


async def _on_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ProblemError)
    return problem_response(error.problem, error.headers)


async def _on_rpc_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, grpc.aio.AioRpcError)
    return problem_response(ProblemError.from_rpc(error).problem)


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own errors (404 route, 405, the body cap's 413) as problem documents too."""
    assert isinstance(error, HTTPException)
    status = HTTPStatus(error.status_code)
    detail = str(error.detail) if error.detail != status.phrase else _HTTP_DETAILS.get(status, status.description)
    return problem_response(Problem(title=status.phrase, status=status, detail=detail), dict(error.headers or {}))


_HTTP_DETAILS = {HTTPStatus.NOT_FOUND: "no such route; the API's routes are listed in /v1/openapi.json"}


async def _on_validation_error(request: Request, error: Exception) -> JSONResponse:
    """A query parameter or header that does not fit its declared type: 400 naming it."""
    assert isinstance(error, RequestValidationError)
    errors = [
        FieldProblem(field=field_path(tuple(problem["loc"][1:])) or str(problem["loc"][0]), detail=problem["msg"])
        for problem in error.errors()
    ]
    detail = "; ".join(f"{e.field}: {e.detail}" for e in errors)
    return problem_response(
        Problem(
            title="Bad Request", status=400, detail=detail, field=errors[0].field if errors else None, errors=errors
        )
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProblemError: _on_problem,
    grpc.aio.AioRpcError: _on_rpc_error,
    HTTPException: _on_http_error,
    RequestValidationError: _on_validation_error,
}
