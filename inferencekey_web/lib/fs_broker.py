"""kombu's filesystem transport with atomic writes: the embedded default's Celery broker.

kombu's own `_put` creates `<n>_<uuid>.<queue>.msg` empty and then writes it, while `_get` moves and
reads any `.msg` file without taking the writer's lock: a consumer polling at that moment reads a
half-written message (a JSON decode error in the worker) and deletes it, so the task is lost. Here a
message is written under a name no consumer matches, flushed, and renamed into place; the rename is
atomic on one filesystem, so a consumer sees a whole message or none.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot and no ".msg" suffix: `_get` matches on `<queue>.msg` after the first dot.
        partial = os.path.join(self.data_folder_out, f".{uuid.uuid4().hex}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
