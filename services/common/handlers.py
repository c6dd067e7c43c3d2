"""Registers a servicer from its service descriptor, parsing requests itself so malformed ones get INVALID_ARGUMENT.

grpc's generated `add_XxxServicer_to_server` deserializes before the servicer runs, and a request it cannot parse
(invalid UTF-8 in a string field, truncated bytes) ends as UNKNOWN or INTERNAL with no field named. Here the
handlers take the raw bytes and parse them in the call, where the failure becomes a clear INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from services.common.errors import ORIGIN_KEY, InvalidArgument


def add_servicer(server: grpc.aio.Server, servicer: object, service_name: str) -> None:
    service = descriptor_pool.Default().FindServiceByName(service_name)
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        implementation = getattr(servicer, method.name)
        make = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            _wrap(implementation, request_class, method.client_streaming, method.server_streaming),
            request_deserializer=None,  # raw bytes in; parsed by _wrap
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))


_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _parse(request_class: type[Message], raw: bytes) -> Message:
    try:
        return request_class.FromString(raw)
    except DecodeError as error:
        raise InvalidArgument(
            f"{request_class.DESCRIPTOR.name} could not be parsed ({error}); string fields must be valid UTF-8"
        ) from error


def _wrap(implementation: Callable[..., Any], request_class: type[Message], streaming_in: bool, streaming_out: bool):
    if streaming_in:

        async def parsed(raw_requests: AsyncIterator[bytes]) -> AsyncIterator[Message]:
            # A bad message mid-stream raises InvalidArgument inside the servicer, which maps it like any other.
            async for raw in raw_requests:
                yield _parse(request_class, raw)

        if streaming_out:

            async def stream_stream(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext):
                async for response in implementation(parsed(raw_requests), context):
                    yield response

            return stream_stream

        async def stream_unary(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            return await implementation(parsed(raw_requests), context)

        return stream_unary

    async def parse_or_abort(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            return _parse(request_class, raw)
        except InvalidArgument as error:
            await context.abort(error.code, str(error), ((ORIGIN_KEY, "service"),))
            raise  # abort raises; this line is never reached

    if streaming_out:

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext):
            request = await parse_or_abort(raw, context)
            async for response in implementation(request, context):
                yield response

        return unary_stream

    async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await implementation(await parse_or_abort(raw, context), context)

    return unary_unary
