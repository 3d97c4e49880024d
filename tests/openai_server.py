"""A small OpenAI-compatible embeddings server for tests, on 127.0.0.1 in a background thread.

It serves ``POST /v1/embeddings`` the way OpenAI does, with vectors from an embed function it is
given (in these tests, the real local model), records every request it receives, and can be told
to fail or stall the next requests so clients' error handling, retries and timeouts can be tested
against real HTTP.

Usage::

    from tests.openai_server import OpenAICompatibleServer

    with OpenAICompatibleServer(local_embedder.embed_documents) as server:
        embedder = OpenAIEmbedder(base_url=server.base_url, api_key="sk-test")
        embedder.embed_documents(["a", "b"])
        assert server.batch_sizes == [2]

        server.fail_next(500, times=2)  # the next two requests get HTTP 500
        server.delay_next(5.0)  # the request after those waits 5 s before answering
        server.reply_next(b"<html>bad gateway</html>")  # then a body that is not JSON
        server.reply_next(lambda reply: {**reply, "data": reply["data"][:1]})  # an edited reply
        server.drop_next()  # then a connection closed without an answer

Behaviour
---------
* ``input`` may be a string or a list of strings; anything else (token arrays, an empty list,
  an empty string) gets an OpenAI-style 400.
* ``dimensions`` gives shortened vectors the way OpenAI's text-embedding-3 models do: the first
  ``dimensions`` components, renormalised to unit length. A ``dimensions`` that is not a whole
  number between 1 and the model's width gets a 400.
* ``encoding_format`` ``"float"`` (the default) returns lists of floats; ``"base64"`` returns the
  little-endian float32 bytes, base64-encoded, as OpenAI does.
* With ``shuffle=True`` the ``data`` items come back in reverse order (each keeps its ``index``),
  to check that clients order results by ``index`` rather than by position.
* With ``api_key="..."`` requests without ``Authorization: Bearer <that key>`` get a 401.
* Scripted behaviours (:meth:`~OpenAICompatibleServer.fail_next`,
  :meth:`~OpenAICompatibleServer.delay_next`, :meth:`~OpenAICompatibleServer.reply_next`,
  :meth:`~OpenAICompatibleServer.drop_next`) are consumed one per embeddings request, in the
  order they were scripted; requests are recorded (in :attr:`~OpenAICompatibleServer.requests`)
  on arrival, before any scripted failure or delay, so retries are counted.
* :meth:`~OpenAICompatibleServer.reply_next` misbehaves the way broken servers and proxies do:
  it sends given bytes verbatim, or the real reply as edited by a function (JSON-encoded with
  ``NaN`` and ``Infinity`` allowed), with HTTP 200. :meth:`~OpenAICompatibleServer.drop_next`
  closes the connection without answering, as a crashing server does.
* Other paths get a 404, other methods a 405.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import numpy as np

__all__ = ["OpenAICompatibleServer", "RecordedRequest"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout",
    409: "conflict",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it."""

    method: str
    path: str
    #: Header names in lower case.
    headers: dict[str, str]
    #: The parsed JSON body, or ``None`` when there was none or it was not JSON.
    body: Any

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header, e.g. ``"Bearer sk-test"``."""
        return self.headers.get("authorization")

    @property
    def batch_size(self) -> int:
        """How many texts the request asked to embed (1 for a single string)."""
        texts = self.body.get("input") if isinstance(self.body, dict) else None
        return len(texts) if isinstance(texts, list) else 1


@dataclass(frozen=True)
class _Failure:
    status: int
    message: str
    retry_after: float | None


@dataclass(frozen=True)
class _Delay:
    seconds: float


@dataclass(frozen=True)
class _Reply:
    body: bytes | Callable[[dict[str, Any]], Any]
    status: int


@dataclass(frozen=True)
class _Drop:
    pass


_Scripted = _Failure | _Delay | _Reply | _Drop


class OpenAICompatibleServer:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint on ``127.0.0.1`` (a free port).

    Parameters
    ----------
    embed : callable
        ``embed(texts: list[str]) -> np.ndarray`` of shape ``(len(texts), d)``; it is called from
        the server's threads one request at a time (never concurrently).
    model : str, optional
        The model name reported in responses when a request names none.
    api_key : str, optional
        When given, requests must carry ``Authorization: Bearer <api_key>`` or get a 401.
    shuffle : bool, default=False
        Return the ``data`` items in reverse order (each keeps its ``index``).

    The server starts on :meth:`start` or on entering a ``with`` block, and :meth:`close` (or
    leaving the block) stops it, ends open connections and joins its threads.
    """

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray],
        *,
        model: str = "test-embedding-model",
        api_key: str | None = None,
        shuffle: bool = False,
    ) -> None:
        self.embed = embed
        self.model = model
        self.api_key = api_key
        self.shuffle = shuffle
        self._lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._script: deque[_Scripted] = deque()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> OpenAICompatibleServer:
        """Bind to ``127.0.0.1`` on a free port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        self._stopping.clear()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="openai-compatible-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end open connections and stalled requests, and join the threads."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes requests sleeping in a scripted delay
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()  # joins the request threads
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what to pass as an OpenAI client's ``base_url``."""
        return f"{self.url}/v1"

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` embeddings requests with an OpenAI-style error.

        ``retry_after`` (seconds) is sent as a ``retry-after-ms`` header, which OpenAI clients
        honour instead of their own backoff; a small value keeps retry tests fast.
        """
        failure = _Failure(status, message or f"scripted failure {status}", retry_after)
        with self._lock:
            self._script.extend([failure] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Make the next ``times`` embeddings requests wait ``seconds`` before answering.

        A delayed request is answered normally afterwards unless the client has gone; closing the
        server cuts the wait short.
        """
        with self._lock:
            self._script.extend([_Delay(seconds)] * times)

    def reply_next(
        self,
        body: bytes | Callable[[dict[str, Any]], Any],
        *,
        times: int = 1,
        status: int = 200,
    ) -> None:
        """Answer the next ``times`` embeddings requests with a reply of your making.

        ``body`` is either the bytes to send (verbatim, as ``application/json``), or a function
        that receives the real reply (a dict, as :meth:`_embeddings` builds it) and returns the
        object to send instead, JSON-encoded with ``NaN`` and ``Infinity`` allowed.
        """
        with self._lock:
            self._script.extend([_Reply(body, status)] * times)

    def drop_next(self, times: int = 1) -> None:
        """Close the connection of the next ``times`` embeddings requests without answering."""
        with self._lock:
            self._script.extend([_Drop()] * times)

    def reset(self) -> None:
        """Forget recorded requests and any scripted behaviour not yet used."""
        with self._lock:
            self._requests.clear()
            self._script.clear()

    # -- what was received -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def bodies(self) -> list[Any]:
        """The parsed JSON bodies of the requests."""
        return [request.body for request in self.requests]

    @property
    def batch_sizes(self) -> list[int]:
        """How many texts each request asked to embed."""
        return [request.batch_size for request in self.requests]

    @property
    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of each request."""
        return [request.authorization for request in self.requests]

    # -- internals -------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> _Scripted | None:
        with self._lock:
            self._requests.append(request)
            return self._script.popleft() if self._script else None

    def _embeddings(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return 400, _error(400, "the request body must be a JSON object")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(text, str) and text for text in texts)
        ):
            return 400, _error(400, "'input' must be a non-empty string or list of them", "input")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return 400, _error(400, f"unknown encoding_format {encoding!r}", "encoding_format")
        with self._embed_lock:
            vectors = np.asarray(self.embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            return 500, _error(500, f"embed returned shape {vectors.shape} for {len(texts)} texts")
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if (
                isinstance(dimensions, bool)
                or not isinstance(dimensions, int)
                or not 1 <= dimensions <= vectors.shape[1]
            ):
                message = f"'dimensions' must be between 1 and {vectors.shape[1]}"
                return 400, _error(400, message, "dimensions")
            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1, norms)
        data = [
            {"object": "embedding", "index": index, "embedding": _encode(vector, encoding)}
            for index, vector in enumerate(vectors)
        ]
        if self.shuffle:
            data.reverse()
        tokens = sum(len(text.split()) for text in texts)
        return 200, {
            "object": "list",
            "data": data,
            "model": body.get("model") or self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(value) for value in vector]


def _error(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins the request threads
    block_on_close = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        owner: OpenAICompatibleServer,
    ) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        """End open (keep-alive or stalled) connections so their threads finish."""
        with self.connections_lock:
            self.close_connections_locked()

    def close_connections_locked(self) -> None:
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.owner._stopping.is_set():
            return  # a connection cut by close()
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OpenAI's API
    server: _HTTPServer

    timeout = 30  # a safety net: an idle connection never holds a thread for longer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
            if self.server.owner._stopping.is_set():  # accepted while closing: end it now
                self.server.close_connections_locked()

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0].rstrip("/")
        headers = {name.lower(): value for name, value in self.headers.items()}
        if path != "/v1/embeddings":
            self._send(404, _error(404, f"unknown path {self.path}"))
            return
        scripted = owner._record(RecordedRequest("POST", self.path, headers, body))
        if isinstance(scripted, _Failure):
            extra = {}
            if scripted.retry_after is not None:
                extra["retry-after-ms"] = str(max(1, round(scripted.retry_after * 1000)))
            self._send(scripted.status, _error(scripted.status, scripted.message), extra)
            return
        if isinstance(scripted, _Delay) and owner._stopping.wait(scripted.seconds):
            self.close_connection = True
            return  # closing: the client has given up or the test is over
        if isinstance(scripted, _Drop):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(scripted, _Reply):
            self._send_reply(scripted, body)
            return
        if owner.api_key is not None and headers.get("authorization") != f"Bearer {owner.api_key}":
            self._send(401, _error(401, "Incorrect API key provided"))
            return
        try:
            status, payload = owner._embeddings(body)
        except Exception as exc:  # the embed function failed: report it like a server would
            status, payload = 500, _error(500, f"{type(exc).__name__}: {exc}")
        self._send(status, payload)

    def _send_reply(self, scripted: _Reply, body: Any) -> None:
        if isinstance(scripted.body, bytes):
            data = scripted.body
        else:
            status, payload = self.server.owner._embeddings(body)
            if status != 200:  # a bad request stays a bad request
                self._send(status, payload)
                return
            data = json.dumps(scripted.body(payload)).encode()
        self._send_bytes(scripted.status, data)

    def do_GET(self) -> None:
        status = 405 if self.path.split("?", 1)[0].rstrip("/") == "/v1/embeddings" else 404
        self._send(status, _error(status, f"GET {self.path} is not supported"))

    def _send(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away (e.g. it timed out)
            self.close_connection = True
