"""EFM: shapes, any input size through the node's padding, budget, named bottleneck, registry, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from qdr_ros.core.image_conversions import from_model_output, to_model_input
from qdr_train.config import load_config
from qdr_train.engine.checkpoint import save_model_file
from qdr_train.engine.stages import warm_start
from qdr_train.evaluation.budget import MAX_PARAMS
from qdr_train.export.check import check_int8
from qdr_train.export.cpu_variant import to_cpu_variant
from qdr_train.export.onnx import export_onnx
from qdr_train.models import EFM, build_model
from qdr_train.models.profile import count_macs, count_params
from qdr_train.quant import calibrate, prepare_qat
from support.untrained import with_live_correction

TINY = {"type": "EFM", "widths": [8, 8, 16], "num_blocks": 1}


def test_the_specialists_architecture_is_within_the_parameter_budget() -> None:
    """The default graph (the specialists'); auto's is larger and has its own targets (docs/benchmarks.md)."""
    model = build_model(load_config("denoise")["model"])
    assert count_params(model) <= MAX_PARAMS
    assert 1e9 < count_macs(model, 480, 640) < 8e9


@pytest.mark.parametrize("h, w", [(37, 53), (8, 8), (120, 96), (1, 1)])
def test_any_frame_size_via_pad_and_crop(h: int, w: int) -> None:
    model = build_model(TINY).eval()
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, size = to_model_input(frame, "rgb8", stride=model.stride)
    assert x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    assert from_model_output(y, *size, "rgb8").shape == (h, w, 3)


def test_unpadded_input_is_refused_with_advice() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        build_model(TINY)(torch.rand(1, 3, 30, 32))


def test_bottleneck_and_gate_are_named_tensors() -> None:
    model = build_model(TINY)
    y, feats = model.forward_features(torch.rand(2, 3, 32, 48))
    assert y.shape == (2, 3, 32, 48)
    assert feats["bottleneck"].shape == (2, 16, 4, 6)
    assert feats["gate"].shape == (2, 1, 16, 24)
    assert 0 <= float(feats["gate"].min()) and float(feats["gate"].max()) <= 1


def test_gate_closed_means_input_passes_through() -> None:
    model = build_model(TINY).eval()
    with torch.no_grad():
        model.gate_logit.conv.bias.fill_(-1e4)
        x = torch.rand(1, 3, 32, 32)
        assert torch.allclose(model(x), x)


@pytest.mark.parametrize("where", ["fine", "deep"])
def test_blocks_added_to_a_trained_model_start_as_its_identity(tmp_path: Path, where: str) -> None:
    torch.manual_seed(0)
    parent = build_model(TINY).eval()
    with torch.no_grad():
        parent.tail.conv.weight.normal_(0, 0.1)  # a trained model corrects; a fresh tail is zero
    path = save_model_file(parent, TINY, tmp_path / "parent.pt")
    child = warm_start({"init": str(path), "model": {**TINY, f"{where}_blocks": 2}}).eval()
    added = getattr(child, where)
    assert len(added) == 2
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        assert not torch.equal(parent(x), x)
        assert torch.equal(child(x), parent(x))
        added[0].body[-1].conv.weight.normal_(0, 0.1)  # and trained, a block does change the output
        assert not torch.equal(child(x), parent(x))


@pytest.mark.parametrize("widths", [[12, 8, 16], [12, 12, 24]])
def test_a_widened_model_starts_as_its_parent(tmp_path: Path, widths: list[int]) -> None:
    torch.manual_seed(0)
    arch = {**TINY, "condition_head": True, "global_context": True, "fine_blocks": 1, "deep_blocks": 1}
    parent = build_model(arch).eval()
    with torch.no_grad():
        for p in parent.parameters():
            p.normal_(0, 0.2)  # every weight trained, zero-initialised ones included
    path = save_model_file(parent, arch, tmp_path / "parent.pt")
    child = warm_start({"init": str(path), "model": {**arch, "widths": widths}}).eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        (y_parent, f_parent), (y_child, f_child) = parent.forward_features(x), child.forward_features(x)
        assert torch.allclose(y_child, y_parent, atol=1e-6)
        assert torch.allclose(f_child["condition"], f_parent["condition"], atol=1e-6)
        assert f_child["bottleneck"].shape[1] == widths[2]
        child.tail.conv.weight[:, -1].fill_(0.5)  # a trained new channel does change the output
        assert not torch.allclose(child(x), y_parent, atol=1e-6)


def test_registry_rejects_unknown_names_and_keys() -> None:
    with pytest.raises(ValueError, match="unknown model type"):
        build_model({"type": "UNet"})
    with pytest.raises(ValueError, match="unknown keys"):
        build_model({"type": "EFM", "depth": 3})
    assert isinstance(build_model(TINY), EFM)


@pytest.mark.parametrize("blocks", [0, 1])
def test_onnx_fp32_and_int8_match_torch(tmp_path: Path, blocks: int) -> None:
    torch.manual_seed(0)
    model = with_live_correction(build_model({**TINY, "fine_blocks": blocks, "deep_blocks": blocks})).eval()
    x = torch.rand(1, 3, 40, 56)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    run = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run
    np.testing.assert_allclose(run(None, {"image": x.numpy()})[0], model(x).detach().numpy(), atol=1e-5)

    qmodel = calibrate(prepare_qat(model), [torch.rand(1, 3, 32, 32) for _ in range(3)], progress=False).eval()
    int8 = export_onnx(qmodel, tmp_path / "efm_int8.onnx")
    cpu = to_cpu_variant(int8, tmp_path / "efm_int8_cpu.onnx")
    assert check_int8(int8).ok and check_int8(cpu, cpu=True).ok  # every conv INT8, the added blocks' too
    with torch.no_grad():
        ref = qmodel(x).numpy()
    for path in (int8, cpu):
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
        assert np.abs(out - ref).max() < 2 * float(qmodel.q_in.scale) + 1e-4
