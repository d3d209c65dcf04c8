"""Device resolution fails clearly when the asked-for device is missing."""

from __future__ import annotations

import pytest
import torch

from robotrl.core.device import resolve_device, set_torch_threads


def test_auto_is_cpu_without_a_gpu():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_gpu_is_a_helpful_error(spec):
    with pytest.raises(ValueError, match="no CUDA GPU") as info:
        resolve_device(spec)
    assert spec in str(info.value) and "auto" in str(info.value) and "cpu" in str(info.value)


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_config_asking_for_cuda_fails_before_training(tmp_path, tiny_raw, capsys):
    import yaml

    from robotrl.cli import main

    raw = tiny_raw("sac")
    raw["device"] = "cuda"
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "--no-progress"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_set_torch_threads():
    before = torch.get_num_threads()
    try:
        set_torch_threads(1)
        assert torch.get_num_threads() == 1
        set_torch_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("spec", "index"), [("cuda:0", 0), ("cuda", None)])
def test_cuda_index_within_the_visible_gpus_resolves(monkeypatch, spec, index):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device(spec) == torch.device("cuda", index)


def test_cuda_index_beyond_the_visible_gpus_is_a_helpful_error(monkeypatch):
    """On a one-GPU machine `cuda:3` fails at resolution, not deep in torch at the first tensor move."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"'cuda:3' was requested but torch sees only 1 CUDA GPU") as info:
        resolve_device("cuda:3")
    assert "cuda:0 to cuda:0" in str(info.value) and "auto" in str(info.value)
