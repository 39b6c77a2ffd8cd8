"""Bad input gets one clear line on stderr and exit status 2, no traceback, nothing written;
valid but unusual text trains. Through `chargpt_tui.commands.cli.main` (what the `chargpt-tui` script
calls) for the long matrix of flags, and through the real script, headless and on a terminal,
for the rest."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import TINY_FLAGS, make_text, one_clear_line, permissions_apply, run_script
from terminal import TerminalProcess

from chargpt_tui.commands.cli import main
from model.checkpoint import load_checkpoint, save_checkpoint

# (flag, bad values): zero where zero is not allowed, negative, and the wrong type
NUMERIC_FLAGS = {
    "--batch-size": ["0", "-1", "2.5"],
    "--block-size": ["0", "-8", "x"],
    "--max-iters": ["0", "-1", "1e3"],
    "--eval-interval": ["0", "-5", "ten"],
    "--eval-iters": ["0", "-5", ""],
    "--learning-rate": ["0", "-1e-3", "fast", "nan", "inf"],
    "--n-embed": ["0", "-32", "32.0"],
    "--n-layers": ["0", "-2", "two"],
    "--n-heads": ["0", "-4", "four"],
    "--dropout": ["1", "1.5", "-0.1", "nan", "lots"],
    "--sample-interval": ["0", "-1", "often"],
    "--sample-tokens": ["0", "-1", "many"],
    "--threads": ["0", "-2", "all", "100000"],  # (100,000 crashed PyTorch without a word)
    "--seed": ["-1", "1.5", "random", "99999999999999999999999"],  # (past 64 bits: a traceback)
    "--warmup-iters": ["-1", "some"],
    "--min-lr": ["-1e-5", "low", "inf"],
    "--weight-decay": ["-0.1", "none"],
    "--grad-clip": ["-1", "off"],
}
CASES = [(flag, value) for flag, values in NUMERIC_FLAGS.items() for value in values]
SAMPLE_CASES = [("--max-new-tokens", "-1"), ("--max-new-tokens", "x"), ("--temperature", "-1"),
                ("--temperature", "hot"), ("--top-k", "0"), ("--top-k", "-3"), ("--seed", "-1"),
                ("--seed", str(2**64))]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="chargpt-bad-input-"))
    (root / "tiny.txt").write_text(make_text(), encoding="utf-8")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own exit, as the script would see it
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag, value", CASES, ids=[f"{f}={v}" for f, v in CASES])
def test_every_numeric_flag_refuses_bad_values(workdir: Path, capsys: pytest.CaptureFixture[str], flag: str,
                                               value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    code, err = run_main(["tiny.txt", f"{flag}={value}", "--headless"], capsys)
    assert code == 2
    one_clear_line(err, flag)
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("flag, value", SAMPLE_CASES, ids=[f"{f}={v}" for f, v in SAMPLE_CASES])
def test_sample_flags_refuse_bad_values(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    code, err = run_main(["sample", "ckpt.pt", f"{flag}={value}"], capsys)
    assert code == 2
    one_clear_line(err, flag)


def test_bfloat16_where_the_cpu_lacks_it_is_one_clear_line(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    code, err = run_main(["tiny.txt", *TINY_FLAGS, "--dtype", "bfloat16", "--headless"], capsys)
    assert code == 2
    one_clear_line(err, "--dtype bfloat16", "no bfloat16 support")
    assert not (workdir / "runs").exists()


def test_an_unreadable_file(workdir: Path) -> None:
    secret = workdir / "secret.txt"
    secret.write_text(make_text(), encoding="utf-8")
    secret.chmod(0o000)
    result = run_script(["secret.txt", "--headless"], workdir, permissions_apply())
    assert result.returncode == 2, result.stderr
    one_clear_line(result.stderr, "secret.txt", "permission denied")
    assert not (workdir / "runs").exists()


def test_an_out_dir_that_cannot_be_written_is_refused_before_training(workdir: Path) -> None:
    locked = workdir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    result = run_script(["tiny.txt", *TINY_FLAGS, "--out-dir", "locked/run", "--headless"], workdir,
                        permissions_apply())
    assert result.returncode == 2, result.stderr
    one_clear_line(result.stderr, "locked/run", "cannot write")
    assert result.stdout == ""  # not a step was trained
    assert not list(locked.iterdir())


def test_a_binary_file(workdir: Path) -> None:
    (workdir / "program.bin").write_bytes(bytes(range(256)) * 64)
    result = run_script(["program.bin", "--headless"], workdir)
    assert result.returncode == 2
    one_clear_line(result.stderr, "binary")
    # Windows' "Unicode" (UTF-16 with its byte-order mark) is text, full of NUL bytes: said so
    (workdir / "windows.txt").write_bytes("hello world\n".encode("utf-16"))
    result = run_script(["windows.txt", "--headless"], workdir)
    assert result.returncode == 2
    one_clear_line(result.stderr, "windows.txt is UTF-16 text", "iconv -f UTF-16 -t UTF-8")
    (workdir / "cjk.txt").write_bytes(("\ufeff" + "你好世界，这是测试。" * 3).encode("utf-16-be"))  # no NUL byte in it
    result = run_script(["cjk.txt", "--headless"], workdir)
    assert result.returncode == 2
    one_clear_line(result.stderr, "cjk.txt is UTF-16 text")


@pytest.fixture(scope="module")
def checkpoint(workdir: Path) -> Path:
    result = run_script(["tiny.txt", *TINY_FLAGS, "--max-iters", "10", "--out-dir", "trained"], workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "trained" / "ckpt.pt"


def test_a_new_run_never_replaces_the_checkpoints_of_another(workdir: Path, checkpoint: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Training again with the same --out-dir replaced that run's ckpt.pt and best.pt (best.pt
    went from step 10 to step 1), without a word."""
    before = {name: (checkpoint.parent / name).read_bytes() for name in ("ckpt.pt", "best.pt")}
    text = str(workdir / "tiny.txt")
    for args in ([text, *TINY_FLAGS, "--max-iters", "1"],  # a new run
                 [text, "--fork", str(checkpoint.parent), "--max-iters", "20"]):  # a fork into its parent
        code, err = run_main([*args, "--out-dir", str(checkpoint.parent), "--headless"], capsys)
        assert code == 2
        one_clear_line(err, "holds a run already", f"--resume {checkpoint}")
    assert {name: (checkpoint.parent / name).read_bytes() for name in before} == before


def test_a_path_that_is_not_what_a_command_wants_is_named(workdir: Path, checkpoint: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Each said something true of another path: `attach tiny.txt` that "." was not a run, `runs
    tiny.txt` that there was no such directory, `--fork RUN@Best` that RUN did not exist, and
    `--fork` of an empty folder that its run had saved no checkpoint yet."""
    text, run = str(workdir / "tiny.txt"), str(checkpoint.parent)
    (workdir / "empty").mkdir(exist_ok=True)
    for args, fragments in (
        (["attach", text], [f"{text} is a file, not a run directory"]),
        (["runs", text, "--plain"], [f"{text}: not a directory"]),
        ([text, "--fork", f"{run}@Best"], [f"--fork {run}@Best: after the @, best or latest"]),
        ([text, "--fork", str(workdir / "empty")], ["empty: not a run directory"]),
    ):
        code, err = run_main(args, capsys)
        assert code == 2, (args, err)
        one_clear_line(err, *fragments)


def test_resume_refuses_damaged_and_foreign_files(workdir: Path, checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    (workdir / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(3)}, workdir / "foreign.pt")
    state = load_checkpoint(checkpoint)
    save_checkpoint({**state, "version": 99}, workdir / "future.pt")
    cases = [
        ("truncated.pt", ["truncated.pt", "truncated or corrupt"]),
        ("foreign.pt", ["foreign.pt", "not a chargpt-tui checkpoint"]),
        ("future.pt", ["future.pt", "version 99"]),
        ("tiny.txt", ["tiny.txt", "not a readable checkpoint"]),
        ("missing.pt", ["missing.pt", "no such file"]),
    ]
    for name, fragments in cases:
        for mode in (["--headless"], []):  # headless; and stdout a pipe, the same path as no terminal
            result = run_script(["tiny.txt", "--resume", name, "--max-iters", "20", *mode], workdir)
            assert result.returncode == 2, (name, result.stderr)
            one_clear_line(result.stderr, *fragments)
        result = run_script(["sample", name], workdir)
        assert result.returncode == 2, (name, result.stderr)
        one_clear_line(result.stderr, *fragments)
    # the vocabulary must cover the text it resumes on
    (workdir / "other.txt").write_text(make_text().upper() + "ÆØÅ", encoding="utf-8")
    result = run_script(["other.txt", "--resume", str(checkpoint), "--max-iters", "20", "--headless"], workdir)
    assert result.returncode == 2
    one_clear_line(result.stderr, "not in the vocabulary", "'Æ'")


# On a terminal, where the dashboard would start: the same one line, the terminal untouched.
TERMINAL_CASES = [
    (["missing.txt"], ["no such file"]),
    (["tiny.txt", "--n-embed", "30", "--n-heads", "4"], ["divisible"]),
    (["tiny.txt", "--dropout", "1"], ["--dropout"]),
    (["tiny.txt", "--resume", "tiny.txt"], ["not a readable checkpoint"]),
    (["tiny.txt", "--out-dir", "tiny.txt"], ["not a directory"]),
]


@pytest.mark.parametrize("args, fragments", TERMINAL_CASES, ids=[" ".join(a) for a, _ in TERMINAL_CASES])
def test_bad_input_on_a_terminal(workdir: Path, args: list[str], fragments: list[str]) -> None:
    with TerminalProcess(args, workdir) as term:
        assert term.wait(timeout=60) == 2
        shown = bytes(term.output).decode()
        assert "\x1b[?1049h" not in shown  # the dashboard never started
        one_clear_line(shown.replace("\r\n", "\n"), *fragments)
    assert not (workdir / "runs").exists()


UNUSUAL = {
    "crlf": "\r\n".join(make_text(3000).splitlines()).encode(),
    "bom": b"\xef\xbb\xbf" + make_text(3000).encode(),
    "scripts-and-emoji": ("Привет, мир. 你好，世界。 مرحبا 🙂🚀🧪 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 60).encode(),
    "thousands-of-characters": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 3000) for _ in range(2)).encode(),
    "two-characters": ("ab" * 700 + "ba" * 700).encode(),
}
SMALL = ["--block-size", "8", "--n-embed", "16", "--n-layers", "1", "--n-heads", "2", "--batch-size", "4",
         "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--sample-interval", "2",
         "--sample-tokens", "10", "--device", "cpu", "--threads", "1", "--headless"]


@pytest.mark.parametrize("name", list(UNUSUAL))
def test_unusual_but_valid_text_trains_and_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    raw = UNUSUAL[name]
    (tmp_path / "text.txt").write_bytes(raw)
    text = raw.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    assert main(["text.txt", *SMALL, "--out-dir", "run"]) == 0, capsys.readouterr().err
    state = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    assert set(state["vocab"]) == set(text) and "\r" not in state["vocab"] and "\ufeff" not in state["vocab"]
    capsys.readouterr()
    prompt = text[:3]
    assert main(["sample", "run/ckpt.pt", "--prompt", prompt, "--max-new-tokens", "20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(prompt) and out.endswith("\n") and set(out[:-1]) <= set(text)
    assert len(out) == len(prompt) + 20 + 1  # (a newline after: generated ones are characters too)
