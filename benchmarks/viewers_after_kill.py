"""kill -9 of a training process, N times, with a dashboard attached each time (Textual's Pilot,
in this process): how long until the dashboard shows the run as not running.

    python benchmarks/viewers_after_kill.py TEXT [--kills 10] [--viewers 3]

Each round starts `chargpt-tui TEXT --headless` (the cpu preset, endless), attaches --viewers
dashboards, waits until they show training, sends SIGKILL, and times each viewer to "not
running". Prints the CPU, each round's times, and how many viewers were left on TRAINING.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.wire.run_link import RunClient
from chargpt_tui.wire.runtime import ServerInfo, is_running


def cpu() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


async def round_(text: str, folder: Path, viewers: int, limit_s: float) -> list[float | None]:
    run_dir = folder / f"run-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "chargpt_tui", text, "--headless", "--preset", "cpu",
                             "--max-iters", "1000000", "--eval-interval", "1000000", "--out-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while ServerInfo.read(run_dir) is None or not is_running(run_dir):
        assert time.monotonic() < deadline, "the run did not start"
        await asyncio.sleep(0.1)
    apps = []
    for _ in range(viewers):
        client = RunClient(run_dir)
        client.connect()
        apps.append(ChargptApp(client))
    times: list[float | None] = [None] * viewers
    async with asyncio.TaskGroup() as group:
        contexts = [app.run_test(size=(80, 24)) for app in apps]
        pilots = [await c.__aenter__() for c in contexts]
        while not all(a.caught_up and a.state == "training" and a.progress.iter > 0 for a in apps):
            await pilots[0].pause(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < limit_s and None in times:
            for i, app in enumerate(apps):
                if times[i] is None and not app.live and "not running" in app.status.detail:
                    times[i] = time.monotonic() - killed
            await pilots[0].pause(0.02)
        for c in contexts:
            await c.__aexit__(None, None, None)
        del group
    proc.wait()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--viewers", type=int, default=3)
    parser.add_argument("--limit", type=float, default=10.0, help="seconds to wait for a viewer (10)")
    args = parser.parse_args()
    print(f"cpu: {cpu()}, {os.cpu_count()} cores")
    stuck = 0
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for k in range(args.kills):
            times = await round_(os.path.abspath(args.text), Path(folder), args.viewers, args.limit)
            stuck += sum(t is None for t in times)
            worst = max([worst] + [t for t in times if t is not None])
            shown = ", ".join("stuck" if t is None else f"{t:.2f} s" for t in times)
            print(f"kill {k + 1}: {shown}", flush=True)
    print(f"{args.kills} kills x {args.viewers} viewers: {stuck} left on TRAINING; "
          f"slowest to not running {worst:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
