"""A text larger than memory: the token cache's build, a run's start, and memory over a long run.

    python benchmarks/big_text.py TEXT [--steps 3000] [--cache-dir DIR]

Make a big text first, e.g. 10 GB of tinyshakespeare:
    python -c "import sys; s=open(sys.argv[1],'rb').read()*64; f=open(sys.argv[2],'wb'); \
[f.write(s) for _ in range(10**10//len(s)+1)]" ../shared/data/tinyshakespeare.txt big.txt

Prints, as JSON lines:
  prepare   `chargpt-tui prepare TEXT` from no cache: wall time, MB/s of text (per wall second
            and per CPU second), peak RSS
  start     a headless run at the seed's settings with the cache built: seconds from the command
            to its first log line (the run started: corpus opened, model built; step 0's evaluation
            next), peak RSS over 20 steps
  long      a small model (1 x 32) at batch 64 x block 256 for --steps steps (many batches read
            from the memmap): RSS sampled every 2 s (after a tenth of the run, largest, last) and
            the peak RSS
Peak RSS is /usr/bin/time -v's "Maximum resident set size".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict[str, str], on_line=None, sample_rss: bool = False) -> dict:
    """Run under /usr/bin/time -v; return wall time, peak RSS (MB), RSS samples and line times."""
    started = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    samples: list[float] = []
    if sample_rss:
        def sample() -> None:
            child = None
            while proc.poll() is None:
                if child is None:
                    try:
                        child = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
                    except (OSError, IndexError, ValueError):
                        time.sleep(0.1)
                        continue
                try:
                    status = Path(f"/proc/{child}/status").read_text()
                except OSError:
                    return
                samples.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
                time.sleep(2)
        threading.Thread(target=sample, daemon=True).start()
    line_times: list[float] = []
    lines: list[str] = []
    for line in proc.stdout:
        line_times.append(time.perf_counter() - started)
        lines.append(line)
        if on_line is not None:
            on_line(line, time.perf_counter() - started)
    err = proc.stderr.read()
    proc.wait()
    if proc.returncode != 0:
        sys.exit(f"{command} failed ({proc.returncode}):\n{err[-2000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) / 1024
    cpu_s = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", err).group(1)) for kind in ("User", "System"))
    return {"wall_s": round(time.perf_counter() - started, 2), "cpu_s": round(cpu_s, 2), "peak_rss_mb": round(peak),
            "rss_samples_mb": [x for x in samples if x > 50], "stdout": "".join(lines), "stderr": err}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("text")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--cache-dir", default=None, help="default: a temporary folder beside TEXT (removed after)")
    args = p.parse_args()
    text = Path(args.text).resolve()
    size = text.stat().st_size
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix=".bench-cache-", dir=text.parent))
    runs = Path(tempfile.mkdtemp(prefix="big-text-runs-"))
    env = {**os.environ, "CHARGPT_TUI_CACHE_DIR": str(cache_dir)}
    cli = [sys.executable, "-m", "chargpt_tui"]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(json.dumps({"text": str(text), "bytes": size, "cpu": cpu, "cores": os.cpu_count()}))
    try:
        for f in cache_dir.glob("*"):
            f.unlink()
        r = timed([*cli, "prepare", str(text)], env)
        # MB/s of text against the wall clock (the disk's write speed shows there) and against the
        # CPU time the build took (user + system: what one core does, the disk aside)
        # (the command's figures include starting Python and importing PyTorch: ~2 s here; the
        # build's own seconds are in the line it prints)
        built = re.search(r" in ([\d.]+) s \((\d+) MB/s\)", r["stdout"])
        print(json.dumps({"case": "prepare", "wall_s": r["wall_s"], "text_mb_per_s": round(size / r["wall_s"] / 1e6),
                          "cpu_s": r["cpu_s"], "text_mb_per_cpu_s": round(size / r["cpu_s"] / 1e6),
                          "build_s": float(built.group(1)) if built else None,
                          "build_mb_per_s": int(built.group(2)) if built else None, "peak_rss_mb": r["peak_rss_mb"]}))

        first: dict[str, float] = {}

        def on_line(line: str, t: float) -> None:
            first.setdefault("first_line_s", t)

        r = timed([*cli, str(text), "--headless", "--out-dir", str(runs / "start"), "--max-iters", "20",
                   "--eval-interval", "20", "--eval-iters", "2", "--sample-interval", "20", "--sample-tokens", "20"],
                  env, on_line)
        print(json.dumps({"case": "start", "first_line_s": round(first.get("first_line_s", -1), 2),
                          "wall_s_20_steps": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"]}))

        r = timed([*cli, str(text), "--headless", "--out-dir", str(runs / "long"), "--max-iters", str(args.steps),
                   "--n-layers", "1", "--n-embed", "32", "--n-heads", "2", "--batch-size", "64", "--block-size", "256",
                   "--eval-interval", str(args.steps), "--eval-iters", "2", "--sample-interval", str(args.steps),
                   "--sample-tokens", "20"], env, sample_rss=True)
        s = r["rss_samples_mb"]
        print(json.dumps({"case": "long", "steps": args.steps, "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"],
                          "rss_after_10pct_mb": round(s[len(s) // 10]) if s else None,
                          "rss_max_mb": round(max(s)) if s else None,
                          "rss_last_mb": round(s[-1]) if s else None, "samples": len(s)}))
    finally:
        shutil.rmtree(runs, ignore_errors=True)
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
