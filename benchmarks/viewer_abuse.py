"""Each way a client can try to hurt a run, against a live training process, in alternating windows.

    python benchmarks/viewer_abuse.py TEXT [--window 10] [--rounds 2] [--only NAME ...]

The run: `chargpt-tui TEXT --headless --threads 1` (one core): a 3.2M-parameter model for the
attacks on snapshots (a snapshot is 13 MB), a ~60k-parameter one at over 100 steps a second for
the others (where a client's cost in the trainer's Python shows most). The attacker: this
process, on the other core. For each attack: --rounds times a quiet window then the attack's
window, and a last quiet window; training speed is steps logged in metrics.jsonl per second.
Printed per attack: the mean speed during the attack over the mean of the quiet windows around
its windows (a 2-core machine drifts: one pair of windows is noisy), each window's figure, the
trainer's RSS (quiet, peak during the attack, after), its open file descriptors (quiet, peak),
how long the attacking clients took to be cut off, and any process left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

COMMON = ["--dropout", "0", "--dtype", "float32", "--max-iters", "10000000", "--eval-interval", "10000000",
          "--sample-interval", "10000000", "--threads", "1"]
# 3.2M parameters: a snapshot of 13 MB, what the memory of snapshot attacks is measured with
BIG = ["--n-embed", "256", "--n-layers", "4", "--n-heads", "4", "--block-size", "64", "--batch-size", "8", *COMMON]
# ~60k parameters, over 100 steps a second: where a client's cost in the trainer's Python shows most
SMALL = ["--n-embed", "64", "--n-layers", "2", "--n-heads", "4", "--block-size", "32", "--batch-size", "8", *COMMON]


def cpu() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


class Trainer:
    def __init__(self, text: str, folder: Path, model: list[str]) -> None:
        self.run_dir = folder / f"run-{time.monotonic_ns()}"
        self.proc = subprocess.Popen([sys.executable, "-m", "chargpt_tui", text, "--headless", *model,
                                      "--out-dir", str(self.run_dir)], stdout=subprocess.DEVNULL,
                                     stderr=open(folder / "stderr.txt", "w"), start_new_session=True)  # noqa: SIM115
        deadline = time.monotonic() + 120
        while not (self.run_dir / "server.json").exists() or self.steps() < 20:
            assert self.proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        self.socket = json.loads((self.run_dir / "server.json").read_text())["socket"]
        self._offset, self._steps = 0, 0

    def steps(self) -> int:
        try:
            with open(self.run_dir / "metrics.jsonl", "rb") as f:
                f.seek(getattr(self, "_offset", 0))
                data = f.read()
        except OSError:
            return 0
        cut = data.rfind(b"\n") + 1
        self._offset = getattr(self, "_offset", 0) + cut
        self._steps = getattr(self, "_steps", 0) + data[:cut].count(b'"event": "step"')
        return self._steps

    def rss_mb(self) -> float:
        for line in open(f"/proc/{self.proc.pid}/status", encoding="utf-8"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def window(trainer: Trainer, seconds: float) -> tuple[float, float, int]:
    """Steps a second over the window; peak RSS and fds during it."""
    start_steps, start = trainer.steps(), time.monotonic()
    peak_rss, peak_fds = 0.0, 0
    while time.monotonic() - start < seconds:
        peak_rss, peak_fds = max(peak_rss, trainer.rss_mb()), max(peak_fds, trainer.fds())
        time.sleep(0.2)
    return (trainer.steps() - start_steps) / (time.monotonic() - start), peak_rss, peak_fds


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s


class Attack:
    """Runs `step` in a thread until stopped; clients it opened are closed at the end."""

    def __init__(self, trainer: Trainer, step: Callable[[Attack], None]) -> None:
        self.trainer, self.step = trainer, step
        self.socks: list[socket.socket] = []
        self.cut_after: list[float] = []  # seconds from a client's start to its cut-off
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(self)
            except OSError:
                time.sleep(0.01)

    def watch_cut(self, s: socket.socket, started: float) -> None:
        """A client that reads nothing: when did the run end its connection? (POLLRDHUP: the other
        end closed, whatever is still unread here)"""
        def wait() -> None:
            poller = select.poll()
            poller.register(s, select.POLLRDHUP | select.POLLHUP)
            while not self._stop.is_set():
                try:
                    events = poller.poll(200)
                except (OSError, ValueError):
                    return
                if any(e & (select.POLLRDHUP | select.POLLHUP) for _, e in events) and not self._stop.is_set():
                    self.cut_after.append(time.monotonic() - started)
                    return
        threading.Thread(target=wait, daemon=True).start()

    def __enter__(self) -> Attack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            s.close()


def snapshots_unread(clients: int) -> Callable[[Attack], None]:
    def step(a: Attack) -> None:
        if len(a.socks) < clients:
            s = connect(a.trainer.socket)
            s.sendall(b'{"op": "snapshot", "id": 1}\n' * 3)
            a.socks.append(s)
            a.watch_cut(s, time.monotonic())
        time.sleep(0.05)
    return step


def slow_reader(a: Attack) -> None:
    """Asks for a snapshot, reads 30 KB a second, asks again."""
    if not a.socks:
        s = connect(a.trainer.socket)
        a.socks.append(s)
        a.watch_cut(s, time.monotonic())
    s = a.socks[0]
    s.sendall(b'{"op": "snapshot", "id": 2}\n')
    s.recv(3000)
    time.sleep(0.1)


def connect_and_close(a: Attack) -> None:
    connect(a.trainer.socket).close()
    time.sleep(1 / 90)


def garbage_reconnects(a: Attack) -> None:
    s = connect(a.trainer.socket)
    s.sendall(b"garbage\n" * 30)
    s.close()


def idle_connections(a: Attack) -> None:
    if len(a.socks) < 200:
        a.socks.append(connect(a.trainer.socket))
    else:
        time.sleep(0.1)


def request_spam(op: str) -> Callable[[Attack], None]:
    def step(a: Attack) -> None:
        if not a.socks:
            a.socks.append(connect(a.trainer.socket))
            threading.Thread(target=_drain, args=(a.socks[0],), daemon=True).start()
        a.socks[0].sendall(json.dumps({"op": op, "id": 3}).encode() + b"\n")
    return step


def _drain(s: socket.socket) -> None:
    try:
        while s.recv(1 << 16):
            pass
    except OSError:
        pass


def deep_json(a: Attack) -> None:
    s = connect(a.trainer.socket)
    s.sendall(b"[" * 1500 + b"\n")
    s.close()
    time.sleep(0.02)


def stop_reading(a: Attack) -> None:
    if not a.socks:
        s = connect(a.trainer.socket)
        a.socks.append(s)
        a.watch_cut(s, time.monotonic())
    time.sleep(0.1)


# (name, attack, model): the snapshot attacks on the 3.2M-parameter model, the others on the small one
ATTACKS: list[tuple[str, Callable[[Attack], None], list[str]]] = [
    ("snapshot, never read (1 client)", snapshots_unread(1), BIG),
    ("snapshot, never read (20 clients)", snapshots_unread(20), BIG),
    ("slow reader (30 KB/s) asking for snapshots", slow_reader, BIG),
    ("snapshot requests back to back", request_spam("snapshot"), BIG),
    ("connect and close (~90/s)", connect_and_close, SMALL),
    ("garbage reconnects", garbage_reconnects, SMALL),
    ("200 idle connections", idle_connections, SMALL),
    ("resume requests back to back", request_spam("resume"), SMALL),
    ("deeply nested JSON", deep_json, SMALL),
    ("a viewer that stops reading", stop_reading, SMALL),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="attacks whose names contain one of these")
    args = parser.parse_args()
    print(f"cpu: {cpu()}, {os.cpu_count()} cores; windows of {args.window:g} s")
    chosen = [a for a in ATTACKS if not args.only or any(o in a[0] for o in args.only)]
    with tempfile.TemporaryDirectory() as folder:
        for model in (BIG, SMALL):
            attacks = [a for a in chosen if a[2] is model]
            if not attacks:
                continue
            trainer = Trainer(os.path.abspath(args.text), Path(folder), model)
            try:
                for name, step, _ in attacks:
                    quiet_rss, quiet_fds = trainer.rss_mb(), trainer.fds()
                    quiet, during, peak_rss, peak_fds, cuts = [], [], 0.0, 0, []
                    for _ in range(args.rounds):
                        quiet.append(window(trainer, args.window)[0])
                        with Attack(trainer, step) as attack:
                            speed, rss, fds = window(trainer, args.window)
                        during.append(speed)
                        peak_rss, peak_fds, cuts = max(peak_rss, rss), max(peak_fds, fds), cuts + attack.cut_after
                    quiet.append(window(trainer, args.window)[0])
                    ratio = (sum(during) / len(during)) / (sum(quiet) / len(quiet))
                    cut = f", cut off after {max(cuts):.1f} s" if cuts else ""
                    print(f"{name}: speed {ratio:.2f} of quiet ({' '.join(f'{s:.0f}' for s in during)} vs "
                          f"{' '.join(f'{s:.0f}' for s in quiet)} steps/s); RSS {quiet_rss:.0f} -> peak "
                          f"{peak_rss:.0f} -> {trainer.rss_mb():.0f} MB; fds {quiet_fds} -> {peak_fds}{cut}",
                          flush=True)
            finally:
                trainer.stop()
    left = subprocess.run(["pgrep", "-f", "chargpt_tui .*--threads 1"], capture_output=True, text=True).stdout.split()
    print(f"processes left behind: {len(left)}")


if __name__ == "__main__":
    main()
