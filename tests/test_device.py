"""Device helpers that touch the operating system."""

from __future__ import annotations

import os
import platform
import threading

import pytest

from model.device import lower_thread_priority


@pytest.mark.skipif(platform.system() != "Linux", reason="per-thread nice values are Linux's")
def test_lower_thread_priority_changes_only_the_calling_thread() -> None:
    before_main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def worker() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["ok"] = lower_thread_priority(3)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["ok"]
    assert seen["after"] == min(19, seen["before"] + 3)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before_main
