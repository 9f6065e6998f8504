"""The embedded default's filesystem broker never hands a consumer a half-written message."""
import os
import threading
import time
from queue import Empty

import pytest
from kombu import Connection

import inferencekey_web.celery  # noqa: F401  (installs the `filesystem` alias)

MESSAGES = 200
PAYLOAD = "x" * 1024 * 1024


def _exchange_messages(transport: str, folder) -> tuple[int, list[Exception]]:
    """A producer puts large messages while a consumer polls the folder as fast as it can."""
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False,
               "control_folder": str(folder / "control")}
    whole, errors = 0, []
    producing = threading.Event()
    producing.set()

    def produce():
        with Connection(transport=transport, transport_options=options) as conn:
            for i in range(MESSAGES):
                conn.default_channel._put("q", {"i": i, "data": PAYLOAD})
        producing.clear()

    producer = threading.Thread(target=produce)
    with Connection(transport=transport, transport_options=options) as conn:
        channel = conn.default_channel
        producer.start()
        deadline = time.monotonic() + 60
        while (producing.is_set() or whole + len(errors) < MESSAGES) and time.monotonic() < deadline:
            try:
                message = channel._get("q")
            except Empty:
                if not producing.is_set():
                    break
                continue
            except Exception as exc:  # a decode error on a partial file: that message is gone
                errors.append(exc)
                continue
            whole += message["data"] == PAYLOAD
    producer.join(10)
    return whole, errors


def test_filesystem_broker_delivers_every_message_whole(tmp_path):
    whole, errors = _exchange_messages("filesystem", tmp_path)
    assert errors == []
    assert whole == MESSAGES


@pytest.mark.skipif(not os.environ.get("IK_RACE_CHECKS"), reason="a race in kombu itself: lost in most runs, not all")
def test_kombus_own_filesystem_transport_loses_messages(tmp_path):
    # The defect the atomic transport exists for (IK_RACE_CHECKS=1 runs it; it lost messages in 3 of 4 runs).
    whole, errors = _exchange_messages("kombu.transport.filesystem:Transport", tmp_path)
    assert errors or whole < MESSAGES
