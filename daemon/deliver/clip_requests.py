"""Clips on request: `{prefix}/{node}/clip/request` -> the FLAC on `{prefix}/{node}/clip/{name}`.

A request is a JSON object ``{"id": NAME}`` (a clip name as a verdict's ``clip`` gives it) or
``{"seq": N}`` (the clip of verdict N). The answer is the file's bytes, QoS 1, not retained; a
refusal is a small JSON object on `{prefix}/{node}/clip/error` (``error``, and ``id`` or ``seq``
when they were valid): one fixed topic, because a refused id cannot be put in a topic safely.
paho's thread only queues the raw payload (`offer`); the service loop answers (`serve`), so
reading a file never delays the network thread or races the pipeline's retention.

A requested name is checked against `daemon.evidence.names.PATTERN` and then looked up among the
names the folder lists: no path is ever built from a request.
"""

from __future__ import annotations

import json
import queue
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from daemon.evidence import names
from daemon.evidence.store import ClipStore, StoredClip

log = structlog.get_logger(__name__)

REQUEST_TOPIC: Final = "clip/request"
ERROR_TOPIC: Final = "clip/error"
MAX_REQUEST_BYTES: Final = 1024
"""A request is a few dozen bytes; anything longer is refused unparsed."""
QUEUE_LIMIT: Final = 16
"""Requests waiting for the service loop; more are dropped (one log line each burst)."""
MAX_SEQ: Final = 10**20


class Sender(Protocol):
    def publish(
        self, topic_suffix: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> int | None: ...


@dataclass(frozen=True)
class Request:
    name: names.ClipName | None = None
    seq: int | None = None


def parse_request(payload: bytes) -> Request | str:
    """The request, or why it is refused (a short sentence, never the payload itself)."""
    if len(payload) > MAX_REQUEST_BYTES:
        return f"request longer than {MAX_REQUEST_BYTES} bytes"
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # 1 KiB of '[' nests too deep
        doc = None
    if not isinstance(doc, dict):
        return 'not a JSON object: send {"id": NAME} or {"seq": N}'
    if "id" in doc:
        name = names.parse(doc["id"])
        return (
            Request(name=name)
            if name is not None
            else "id is not a clip name (NODE_SEQ_YYYYMMDDTHHMMSSmmmZ_KIND.flac)"
        )
    seq = doc.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq < MAX_SEQ:
        return Request(seq=seq)
    return 'needs "id" (a clip name) or "seq" (a positive integer)'


class ClipServer:
    """Answers clip requests from the clips folder, within a publish size bound."""

    def __init__(self, store: ClipStore, sender: Sender, *, max_bytes: int, qos: int = 1) -> None:
        self._store = store
        self._sender = sender
        self._max_bytes = max_bytes
        self._qos = qos
        self._queue: queue.Queue[bytes] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.served = 0
        self.refused = 0

    def offer(self, payload: bytes) -> None:
        """paho's thread: queue a request (drop it when the queue is full)."""
        try:
            # Only what parse_request may read: a huge message is not kept 16 times over.
            self._queue.put_nowait(bytes(payload[: MAX_REQUEST_BYTES + 1]))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("clip_requests_dropped", dropped=self.dropped, queue=QUEUE_LIMIT)

    def serve(self) -> int:
        """The service loop: answer every queued request; how many were answered."""
        answered = 0
        while True:
            try:
                payload = self._queue.get_nowait()
            except queue.Empty:
                return answered
            self.handle(payload)
            answered += 1

    def handle(self, payload: bytes) -> None:
        request = parse_request(payload)
        if isinstance(request, str):
            self._refuse(request)
            return
        asked: dict[str, Any] = (
            {"id": request.name.name} if request.name is not None else {"seq": request.seq}
        )
        clip = self._store.find(name=request.name, seq=request.seq)
        if clip is None:
            self._refuse("no such clip (never kept, or deleted by retention)", **asked)
            return
        if clip.size > self._max_bytes:
            self._refuse(
                "clip larger than clips.max_publish_kb", bytes=clip.size,
                max_bytes=self._max_bytes, **asked,
            )  # fmt: skip
            return
        self._send(clip, asked)

    def _send(self, clip: StoredClip, asked: dict[str, Any]) -> None:
        try:
            data = clip.path.read_bytes()
        except OSError as err:  # deleted by retention between the listing and now
            self._refuse(f"cannot read the clip: {err.strerror}", **asked)
            return
        mid = self._sender.publish(f"clip/{clip.name.name}", data, qos=self._qos, retain=False)
        if mid is None:
            log.warning("clip_not_sent", clip=clip.name.name, reason="not connected")
            return
        self.served += 1
        log.info("clip_sent", clip=clip.name.name, bytes=len(data))

    def _refuse(self, error: str, **fields: Any) -> None:
        self.refused += 1
        # Debug only: anyone allowed to publish requests could otherwise fill the journal.
        log.debug("clip_request_refused", error=error, **fields)
        body = json.dumps({"error": error, **fields}, separators=(",", ":"))
        self._sender.publish(ERROR_TOPIC, body, qos=self._qos, retain=False)
