"""Rebuilding a gRPC method handler around wrapped behaviours, shared by the interceptors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]
#: ``wrap(behavior, streaming_request) -> wrapped behavior``
Wrap = Callable[[Behavior, bool], Behavior]


def rewrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], unary: Wrap, stream: Wrap
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behaviour wrapped: ``unary`` for unary responses, ``stream``
    for streamed ones; the second argument says whether the request is streamed."""
    codec: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, False), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream, False), **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary, True), **codec)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream, True), **codec)
    return handler
