"""model/distributed.py without starting processes: which group and device its calls use."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from model import distributed
from model.control import RunControl
from model.distributed import ProcessGroup


def test_under_nccl_the_controls_are_agreed_on_the_cpu_through_a_gloo_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA tensor's tolist() after the broadcast waited for the GPU at every step."""
    made: list[dict] = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "new_group", lambda **kwargs: made.append(kwargs) or "the gloo group")
    group = ProcessGroup.from_env("cuda")
    assert group is not None and group.backend == "nccl" and group.control_group == "the gloo group"
    assert [m["backend"] for m in made] == ["gloo"]

    sent: list[tuple[torch.Tensor, object]] = []

    def broadcast(tensor: torch.Tensor, src: int, group: object = None) -> None:
        sent.append((tensor, group))
        tensor[distributed.PAUSE] = 1  # as if rank 0 had been asked to pause

    monkeypatch.setattr(dist, "broadcast", broadcast)
    control = RunControl()
    group.agree(RunControl(), control, flush_due=False)
    assert [(t.device.type, g) for t, g in sent] == [("cpu", "the gloo group")]
    assert control.pause.is_set()


def test_under_gloo_the_controls_use_the_default_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "new_group", lambda **kwargs: pytest.fail("no second group for gloo"))
    group = ProcessGroup.from_env("cpu")
    assert group is not None and group.backend == "gloo" and group.control_group is None


def test_where_no_gloo_group_can_be_made_the_controls_go_over_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    """gloo picks an interface of its own on a cluster (GLOO_SOCKET_IFNAME): where it cannot reach
    the others, the job still starts, with the flags over NCCL as before."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)

    def no_gloo(**kwargs: object) -> None:
        raise RuntimeError("Gloo connectFullMesh failed")

    monkeypatch.setattr(dist, "new_group", no_gloo)
    group = ProcessGroup.from_env("cuda")
    assert group is not None and group.backend == "nccl" and group.control_group is None
