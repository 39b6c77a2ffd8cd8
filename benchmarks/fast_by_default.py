"""Fast by default: the defaults against the alternatives, on this machine, alone and beside a busy core.

    python benchmarks/fast_by_default.py TEXT [--rounds 2] [--only cpu,seed,busy,two,first]

Rows (each printed as it is measured, then a table to paste into README):
  cpu    `--preset cpu` headless, --dtype auto against float32, alternating: wall time from
         launch to the end and to the first validation loss <= 2.0 and <= 1.88 (metrics.jsonl).
  seed   the seed's settings: ms a step in float32, bfloat16 and auto (`chargpt-tui bench`),
         beside seed_reference.py's in the same run.
  busy   `--preset cpu` steps with one of the cores kept busy by another process: the default
         threads against --threads at every core (PyTorch's default) and the quiet machine; and
         a run that finds a core taken halfway (its threads before and after, from metrics.jsonl).
  two    two `--preset cpu` runs started together: each one's wall time against one alone.
  first  README's first command, `chargpt-tui` with no argument, in tmux at 80x24: from launch
         to the first evaluation, the first steps and the first sample, and that sample.

Runs are measured one at a time (but for `two`), each started and ended here; the machine must
be otherwise idle. The CPU is printed first: figures differ between kinds of machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = Path(os.environ.get("SEED_REFERENCE", HERE.parent.parent / "shared" / "bench" / "seed_reference.py"))
CHARGPT = shutil.which("chargpt-tui") or str(Path(sys.executable).with_name("chargpt-tui"))
THRESHOLDS = (2.0, 1.88)


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    native = "yes" if " avx512_bf16" in flags or " amx_bf16" in flags else "no"
    return f"cpu: {name}, {os.cpu_count()} cores; AVX-512: {'yes' if ' avx512f' in flags else 'no'}; " \
           f"native bfloat16: {native}"


def records(path: Path) -> list[dict]:
    """Every record of a metrics.jsonl (once the run is over: reading a live one whole, again
    and again, would take the CPU the run trains on)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Tail:
    """The records added to a live metrics.jsonl since the last look, read from where it left
    off; step records are not even parsed (the first one is noted from its prefix)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            if line.startswith(b'{"event": "step"'):
                out.append({"event": "step"})
            elif line.strip():
                out.append(json.loads(line))
        return out


class Watched:
    """A headless run, with the wall times from launch at which its metrics said what."""

    def __init__(self, text: str, out_dir: Path, *flags: str) -> None:
        self.out_dir = out_dir
        self.launched = time.monotonic()
        self.proc = subprocess.Popen([CHARGPT, text, "--headless", "--out-dir", str(out_dir), *flags],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.seen: dict[str, float] = {}
        self.ended_s: float | None = None
        self.final_val: float | None = None
        self.tail = Tail(out_dir / "metrics.jsonl")

    def poll(self) -> bool:
        """Note what the metrics say now; False once the run has ended."""
        now = time.monotonic() - self.launched
        for r in self.tail.new():
            kind = r.get("event")
            if kind == "eval":
                self.seen.setdefault("first eval", now)
                self.final_val = r["val_loss"]
                for t in THRESHOLDS:
                    if r["val_loss"] <= t:
                        self.seen.setdefault(f"val {t}", now)
            elif kind == "step":
                self.seen.setdefault("first steps", now)
            elif kind == "sample":
                self.seen.setdefault("first sample", now)
        if self.proc.poll() is not None and self.ended_s is None:
            self.ended_s = now
        return self.ended_s is None

    def wait(self) -> Watched:
        while self.poll():
            time.sleep(0.2)
        self.poll()
        if self.proc.returncode != 0:
            raise SystemExit(f"run failed: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return self

    def config(self) -> dict:
        return json.loads((self.out_dir / "config.json").read_text())


def busy_core() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def bench(text: str, *flags: str) -> dict:
    out = subprocess.run([CHARGPT, "bench", "--text", text, "--gen-tokens", "0", *flags], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


CPU_SHAPE = ("--block-size", "64", "--n-embed", "128", "--n-layers", "2", "--n-heads", "4", "--batch-size", "12",
             "--dropout", "0")


def row_cpu(text: str, rounds: int, tmp: Path, table: list[str]) -> dict[str, float]:
    results: dict[str, list[Watched]] = {"auto": [], "float32": []}
    for r in range(rounds):
        for dtype in ("auto", "float32") if r % 2 == 0 else ("float32", "auto"):
            run = Watched(text, tmp / f"cpu-{dtype}-{r}", "--preset", "cpu", "--dtype", dtype).wait()
            chosen = run.config()["precision"]
            results[dtype].append(run)
            print(f"  cpu preset, --dtype {dtype} ({chosen['dtype']}): {run.ended_s:.1f} s wall, val 1.88 at "
                  f"{run.seen.get('val 1.88', float('nan')):.1f} s, final val {run.final_val:.4f}", flush=True)
            if dtype == "auto" and r == 0:
                print(f"    auto: {chosen['reason']}")
    alone = {}
    for dtype, runs in results.items():
        walls = sorted(w.ended_s or 0 for w in runs)
        to188 = sorted(w.seen.get("val 1.88", float("nan")) for w in runs)
        alone[dtype] = walls[0]
        table.append(f"| `--preset cpu`, `--dtype {dtype}` ({runs[0].config()['precision']['dtype']}) | "
                     f"{walls[0]:.0f}-{walls[-1]:.0f} s wall, val 1.88 at {to188[0]:.0f}-{to188[-1]:.0f} s |")
    return alone


def row_seed(text: str, table: list[str]) -> None:
    ref = subprocess.run([sys.executable, str(REFERENCE), "bench", "--text", text, "--steps", "3", "--warmup", "1",
                          "--gen-tokens", "0"], capture_output=True, text=True, check=True)
    ref_ms = json.loads(ref.stdout.strip().splitlines()[-1])["step_ms"]
    parts = [f"seed_reference.py {ref_ms:.0f} ms"]
    for dtype in ("float32", "bfloat16", "auto"):
        try:
            got = bench(text, "--dtype", dtype, "--steps", "3", "--warmup", "1")
        except subprocess.CalledProcessError:
            parts.append(f"{dtype}: refused here")
            continue
        parts.append(f"{dtype} ({got['dtype']}) {got['step_ms']:.0f} ms = {ref_ms / got['step_ms']:.2f}x the seed")
        print(f"  seed settings, --dtype {dtype}: {got['step_ms']:.0f} ms a step ({got['dtype_reason']})", flush=True)
    table.append("| seed settings, ms a step | " + "; ".join(parts) + " |")


def row_busy(text: str, tmp: Path, table: list[str]) -> None:
    steps = ("--steps", "150", "--warmup", "10", *CPU_SHAPE)
    quiet = bench(text, *steps)
    hog = busy_core()
    try:
        time.sleep(1)
        default = bench(text, *steps)
        every = bench(text, *steps, "--threads", str(os.cpu_count()))
    finally:
        hog.kill()
        hog.wait()
    ratio = default["step_ms"] / quiet["step_ms"]
    print(f"  cpu shape: quiet {quiet['step_ms']:.1f} ms ({quiet['threads']} threads); one core busy: default "
          f"{default['step_ms']:.1f} ms ({default['threads']} threads, {default['threads_reason']}), "
          f"--threads {os.cpu_count()} {every['step_ms']:.1f} ms", flush=True)
    table.append(f"| one core busy, `--preset cpu` sizes | default {default['step_ms']:.1f} ms a step "
                 f"({default['threads']} thread(s)) = {ratio:.2f}x quiet ({quiet['step_ms']:.1f} ms); "
                 f"`--threads {os.cpu_count()}` {every['step_ms']:.1f} ms |")
    # a core taken halfway through a run: its threads follow
    run = Watched(text, tmp / "busy-halfway", "--preset", "cpu", "--max-iters", "1200")
    hog, taken = None, float("nan")
    try:
        while run.poll():
            since_launch = time.monotonic() - run.launched
            if hog is None and "first steps" in run.seen and since_launch > run.seen["first steps"] + 8:
                hog = busy_core()
                taken = since_launch
            time.sleep(0.1)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    changes = [(r["iter"], r["threads"], r["reason"]) for r in records(run.out_dir / "metrics.jsonl")
               if r.get("event") == "threads"]
    steps = [(r["iter"], r["time_s"]) for r in records(run.out_dir / "metrics.jsonl") if r.get("event") == "step"]
    by_100 = [(b[0], round(1000 * (b[1] - a[1]) / (b[0] - a[0]), 1)) for a, b in zip(steps[::100], steps[100::100])]
    print(f"  a core taken {taken:.0f} s after launch: threads {changes}; ms a step (step: ms over the 100 "
          f"before it): {by_100}", flush=True)
    table.append(f"| a core taken mid-run | threads changed: {changes or 'never'} |")


def row_two(text: str, tmp: Path, alone: float | None, table: list[str]) -> None:
    if alone is None:
        alone = Watched(text, tmp / "two-alone", "--preset", "cpu").wait().ended_s or 0.0
    runs = [Watched(text, tmp / f"two-{i}", "--preset", "cpu") for i in range(2)]
    while any([r.poll() for r in runs]):
        time.sleep(0.1)
    walls = [r.ended_s or 0.0 for r in runs]
    threads = [[(x["iter"], x["threads"]) for x in records(r.out_dir / "metrics.jsonl") if x.get("event") == "threads"]
               for r in runs]
    print(f"  two together: {walls[0]:.1f} s and {walls[1]:.1f} s, alone {alone:.1f} s; threads {threads}", flush=True)
    table.append(f"| two `--preset cpu` runs together | {walls[0]:.0f} s and {walls[1]:.0f} s = "
                 f"{max(walls) / alone:.2f}x one alone ({alone:.0f} s) |")


def row_first(tmp: Path, table: list[str]) -> None:
    where = tmp / "first"
    where.mkdir()
    session = f"fast-by-default-{os.getpid()}"
    launched = time.monotonic()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c", str(where), CHARGPT],
                   check=True)
    seen: dict[str, float] = {}
    sample = ""
    tail: Tail | None = None
    try:
        while time.monotonic() - launched < 240 and "first sample" not in seen:
            if tail is None:
                found = list(where.glob("runs/*/metrics.jsonl"))
                tail = Tail(found[0]) if found else None
            if tail is not None:
                for r in tail.new():
                    now = time.monotonic() - launched
                    kind = r.get("event")
                    if kind == "eval":
                        seen.setdefault("first eval", now)
                    elif kind == "step":
                        seen.setdefault("first steps", now)
                    elif kind == "sample":
                        seen.setdefault("first sample", now)
                        sample = sample or r["text"]
            time.sleep(0.1)
        screen = subprocess.run(["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
        for pid_file in where.glob("runs/*"):  # the training process the dashboard started
            subprocess.run(["pkill", "-TERM", "-f", str(pid_file.name)], check=False)
    print(f"  first run: {json.dumps({k: round(v, 1) for k, v in seen.items()})}\n  its first sample: {sample[:160]!r}"
          f"\n  the screen then:\n{screen}", flush=True)
    table.append(f"| `chargpt-tui` (no argument), tmux 80x24 | first evaluation {seen.get('first eval', -1):.0f} s, "
                 f"steps on the chart {seen.get('first steps', -1):.0f} s, first sample "
                 f"{seen.get('first sample', -1):.0f} s after launch |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("text")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", default="cpu,seed,busy,two,first")
    args = p.parse_args()
    text = str(Path(args.text).resolve())
    only = set(args.only.split(","))
    print(cpu_line(), flush=True)
    table = ["| case | measured |", "|---|---|"]
    tmp = Path(tempfile.mkdtemp(prefix="fast-by-default-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        alone = row_cpu(text, args.rounds, tmp, table) if "cpu" in only else {}
        if "seed" in only:
            row_seed(text, table)
        if "busy" in only:
            row_busy(text, tmp, table)
        if "two" in only:
            row_two(text, tmp, alone.get("auto"), table)
        if "first" in only:
            row_first(tmp, table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
