"""INT8 recipe: quantizer math, the Q/DQ rule checker, LMR, a tiny QDR run, engine-cache keys."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from qdr_ros.inference.base import BackendUnavailable
from qdr_ros.inference.tensorrt_build import ShapeProfile, build_or_load_engine, engine_cache_key
from qdr_train.cli import main
from qdr_train.config import CONFIG_DIR, load_config
from qdr_train.data.datasets import data_root
from qdr_train.engine.checkpoint import CheckpointError, load_model, safe_load, save_model_file
from qdr_train.engine.stages import CALIBRATION_STEP_OFFSET
from qdr_train.engine.trainer import Trainer
from qdr_train.export.check import check_int8
from qdr_train.export.cpu_variant import shuffle_before_dequant, to_cpu_variant, widen_narrow_convs
from qdr_train.export.onnx import export_onnx
from qdr_train.losses.weighting import (AlignedMagnitudeReweighting, BoundedMagnitudeReweighting,
                                        GradientMagnitudeReweighting, LearnableMagnitudeReweighting)
from qdr_train.models import build_model
from qdr_train.release.release import release
from qdr_train.quant import QMAX, QMIN, ActFakeQuant, QuantConv2d, QuantConvTranspose2d, calibrate, prepare_qat
from support.untrained import with_live_correction

TINY = {"type": "EFM", "widths": [8, 8, 16], "num_blocks": 1}
SHIPPED_TEACHER = Path(__file__).resolve().parents[2] / "models" / "denoise" / "efm_fp32.pt"


def test_activation_quantizer_grid_clamp_and_train_eval_agree() -> None:
    q = ActFakeQuant()
    with torch.no_grad():
        q.scale.fill_(0.1)
    x = torch.tensor([-20.0, -12.8, -0.26, -0.04, 0.0, 0.05, 0.149, 0.151, 12.7, 13.0])
    q.eval()
    y = q(x)
    assert torch.allclose(y / 0.1, torch.round(y / 0.1), atol=1e-4)
    assert float(y.min()) == pytest.approx(QMIN * 0.1) and float(y.max()) == pytest.approx(QMAX * 0.1)
    assert torch.equal(q(y), y)
    q.train()
    x.requires_grad_(True)
    y_train = q(x)
    assert torch.allclose(y_train, y, atol=1e-6)
    y_train.sum().backward()
    assert q.scale.grad is not None and float(q.scale.grad.abs()) > 0
    assert x.grad is not None and float(x.grad[0]) == 0.0 and float(x.grad[4]) == 1.0


def test_calibration_sets_scale_from_observed_range() -> None:
    model = nn.Sequential(nn.Identity())
    model[0] = ActFakeQuant(percentile=100.0)
    calibrate(model, [torch.linspace(-2.54, 2.54, 100), torch.linspace(-1.27, 1.27, 100)], progress=False)
    assert float(model[0].scale) == pytest.approx((2.54 + 1.27) / 2 / QMAX, rel=1e-4)


@pytest.mark.parametrize("cls, axis", [(QuantConv2d, 0), (QuantConvTranspose2d, 1)])
def test_weight_scales_are_per_output_channel(cls: type, axis: int) -> None:
    base = nn.Conv2d(4, 6, 3) if cls is QuantConv2d else nn.ConvTranspose2d(4, 6, 2, 2)
    q = cls.from_float(base)
    w = q.quant_weight()
    dims = [d for d in range(4) if d != axis]
    assert q.w_scale.shape == (6,)
    assert torch.allclose(q.w_scale, base.weight.abs().amax(dim=dims) / QMAX)
    levels = w / q.w_scale.view([-1 if d == axis else 1 for d in range(4)])
    assert torch.allclose(levels, torch.round(levels), atol=1e-4)
    assert float(levels.abs().max()) == pytest.approx(QMAX)


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    model = calibrate(prepare_qat(with_live_correction(build_model(TINY))), [torch.rand(1, 3, 32, 32)],
                      progress=False)
    return export_onnx(model, folder / "efm_int8.onnx")


def _edit(src: Path, dst: Path, edit: object) -> Path:
    model = onnx.load(str(src))
    edit(model.graph)
    onnx.save(model, str(dst))
    return dst


def test_checker_accepts_the_export_and_its_cpu_twin(int8_onnx: Path, tmp_path: Path) -> None:
    assert check_int8(int8_onnx).ok
    cpu = to_cpu_variant(int8_onnx, tmp_path / "efm_int8_cpu.onnx")
    assert check_int8(cpu, cpu=True).ok
    assert not check_int8(cpu).ok
    assert main(["check-int8", str(int8_onnx)]) == 0


def test_cpu_twin_shuffles_8bit_values_and_changes_no_output(int8_onnx: Path, tmp_path: Path) -> None:
    cpu = onnx.load(str(to_cpu_variant(int8_onnx, tmp_path / "efm_int8_cpu.onnx"))).graph
    producers = {out: node for node in cpu.node for out in node.output}
    shuffle = next(n for n in cpu.node if n.op_type == "DepthToSpace")
    source = producers[shuffle.input[0]]
    if source.op_type == "Slice":  # the tail's 12 channels, sliced from 16 (see the widening test)
        source = producers[source.input[0]]
    assert source.op_type == "QuantizeLinear"

    def move(graph: onnx.GraphProto) -> None:
        assert shuffle_before_dequant(graph) == 1

    moved = _edit(int8_onnx, tmp_path / "moved.onnx", move)
    x = np.random.default_rng(0).random((1, 3, 40, 56), np.float32)
    before, after = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
                     for p in (int8_onnx, moved))
    np.testing.assert_array_equal(after, before)


def test_cpu_twin_widens_narrow_convs_and_changes_no_output(int8_onnx: Path, tmp_path: Path) -> None:
    def conv_widths(graph: onnx.GraphProto) -> list[int]:
        arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        producers = {out: node for node in graph.node for out in node.output}
        return [arrays[producers[conv.input[1]].input[0]].shape[0] for conv in graph.node if conv.op_type == "Conv"]

    widths = conv_widths(onnx.load(str(int8_onnx)).graph)
    assert 1 in widths and 12 in widths  # the gate logit and the tail of TINY
    twin = onnx.load(str(to_cpu_variant(int8_onnx, tmp_path / "efm_int8_cpu.onnx"))).graph
    assert all(w % 16 == 0 for w in conv_widths(twin))
    narrow = sum(w % 16 != 0 for w in widths)
    assert sum(n.op_type == "Slice" and n.name.endswith("_narrow") for n in twin.node) == narrow

    def widen(graph: onnx.GraphProto) -> None:
        assert widen_narrow_convs(graph) == narrow
    widened = _edit(int8_onnx, tmp_path / "widened.onnx", widen)
    x = np.random.default_rng(0).random((1, 3, 40, 56), np.float32)
    before, after = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})
                     for p in (int8_onnx, widened))
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)


def test_checker_rejects_float_convs_and_broken_rules(int8_onnx: Path, tmp_path: Path) -> None:
    fp32 = export_onnx(build_model(TINY), tmp_path / "fp32.onnx")
    report = check_int8(fp32)
    assert not report.ok and any("would run in float" in v for v in report.violations)
    assert main(["check-int8", str(fp32)]) == 1

    def unquantize_one_output(graph: onnx.GraphProto) -> None:
        conv = next(n for n in graph.node if n.op_type == "Conv")
        q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == conv.output[0])
        dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
        for node in graph.node:
            node.input[:] = [conv.output[0] if i == dq.output[0] else i for i in node.input]
        graph.node.remove(q)
        graph.node.remove(dq)
    report = check_int8(_edit(int8_onnx, tmp_path / "float_out.onnx", unquantize_one_output))
    assert any("output must feed only QuantizeLinear" in v for v in report.violations)

    def nonzero_zero_point(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute[0].t.data_type == onnx.TensorProto.INT8:
                node.attribute[0].t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(node.attribute[0].t) + 3, node.attribute[0].t.name))
                return
    report = check_int8(_edit(int8_onnx, tmp_path / "zp.onnx", nonzero_zero_point))
    assert any("zero point" in v for v in report.violations)

    def bias_beyond_int32(graph: onnx.GraphProto) -> None:
        conv = next(n for n in graph.node if n.op_type == "Conv" and len(n.input) > 2 and n.input[2])
        for init in graph.initializer:
            if init.name == conv.input[2]:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0 + 1e12, init.name))
        for node in graph.node:
            if node.op_type == "Constant" and node.output[0] == conv.input[2]:
                t = node.attribute[0].t
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 0 + 1e12, t.name))
    report = check_int8(_edit(int8_onnx, tmp_path / "bias.onnx", bias_beyond_int32))
    assert any("above INT32" in v for v in report.violations)


def _shut_gate_int8(model_cfg: dict[str, object], gate_logit: float = -10.0,
                    clean_logit: float | None = None) -> nn.Module:
    """A calibrated INT8 model whose tail would change every pixel, but whose gate is shut everywhere.

    ``gate_logit`` sets how far the local gate is open; ``clean_logit`` fixes the head's clean logit
    (every other label at -10) for models with a condition head.
    """
    torch.manual_seed(0)
    model = build_model(model_cfg)
    if clean_logit is not None:
        head = model.condition[-1].conv
        nn.init.normal_(head.weight, std=0.01)
        nn.init.constant_(head.bias, -10.0)
        head.bias.data[0] = clean_logit
    nn.init.normal_(model.tail.conv.weight, std=0.5)
    nn.init.normal_(model.gate_logit.conv.weight, std=0.01)
    nn.init.constant_(model.gate_logit.conv.bias, gate_logit)
    return calibrate(prepare_qat(model), [torch.rand(2, 3, 32, 32)], progress=False)


def _every_8bit_value() -> np.ndarray:
    """(1, 3, 16, 16) float input holding each of the 256 camera values once per channel."""
    values = np.arange(256, dtype=np.float32).reshape(16, 16) / 255
    return np.stack([values, values.T, values[::-1]])[None].copy()


def test_shut_gate_passes_every_8bit_value_exactly_through_int8(tmp_path: Path) -> None:
    """Exact skip: a clean frame comes back bit for bit from the INT8 file and its CPU twin (rule 5 holds).

    The old graph added the INT8-quantized input, which moved about half of the 256 values.
    """
    auto = {**TINY, "exact_skip": True, "condition_head": True}
    x = _every_8bit_value()
    changed = {}
    for name, cfg in (("exact", auto), ("quantized", TINY)):
        path = export_onnx(_shut_gate_int8(cfg), tmp_path / name / "efm_int8.onnx", {"model": cfg})
        cpu = to_cpu_variant(path, tmp_path / name / "efm_int8_cpu.onnx")
        for file, on_cpu in ((path, False), (cpu, True)):
            report = check_int8(file, cpu=on_cpu)
            assert report.ok and report.skip == name, report.summary()
            out = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
            changed[name, on_cpu] = int(np.count_nonzero(np.rint(out * 255) != np.rint(x * 255)))
    assert changed["exact", False] == changed["exact", True] == 0
    assert changed["quantized", False] > 0.3 * x.size


def test_gate_floor_shuts_a_gate_that_a_sigmoid_leaves_ajar(tmp_path: Path) -> None:
    """A gate probability of about 0.1 changes pixels through INT8; a floor of 0.15 makes it pass them exactly."""
    x = _every_8bit_value()
    changed = {}
    for floor in (0.0, 0.15):
        cfg = {**TINY, "exact_skip": True, "condition_head": True, "gate_floor": floor}
        path = export_onnx(_shut_gate_int8(cfg, gate_logit=-2.2), tmp_path / str(floor) / "efm_int8.onnx",
                           {"model": cfg})
        cpu = to_cpu_variant(path, tmp_path / str(floor) / "efm_int8_cpu.onnx")
        for file, on_cpu in ((path, False), (cpu, True)):
            report = check_int8(file, cpu=on_cpu)
            assert report.ok and report.skip == "exact", report.summary()
            out, _, gate = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]).run(None, {"image": x})
            changed[floor, on_cpu] = int(np.count_nonzero(np.rint(out * 255) != np.rint(x * 255)))
            assert (float(gate.max()) == 0.0) == (floor > 0)
    assert changed[0.0, False] > 0.3 * x.size and changed[0.0, True] > 0.3 * x.size
    assert changed[0.15, False] == changed[0.15, True] == 0


@pytest.mark.parametrize("clean_logit", [10.0, -10.0])
def test_a_head_sure_of_a_clean_frame_shuts_an_open_gate(tmp_path: Path, clean_logit: float) -> None:
    """clean_shuts_gate: the local gate is open (0.9), so only the head's P(clean) decides whether pixels pass."""
    cfg = {**TINY, "exact_skip": True, "condition_head": True, "clean_shuts_gate": True}
    int8 = _shut_gate_int8(cfg, gate_logit=2.2, clean_logit=clean_logit)
    path = export_onnx(int8, tmp_path / "efm_int8.onnx", {"model": cfg})
    cpu = to_cpu_variant(path, tmp_path / "efm_int8_cpu.onnx")
    x = _every_8bit_value()
    for file, on_cpu in ((path, False), (cpu, True)):
        assert check_int8(file, cpu=on_cpu).ok
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        out, condition, gate = session.run(None, {"image": x})
        changed = int(np.count_nonzero(np.rint(out * 255) != np.rint(x * 255)))
        assert (condition[0, 0] > 0.5) == (clean_logit > 0)
        if clean_logit > 0:
            assert changed == 0 and float(gate.max()) == 0.0
        else:
            assert changed > 0.3 * x.size and float(gate.min()) > 0.5


@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_clean_gain_shuts_a_gate_the_head_is_only_half_sure_of(tmp_path: Path, gain: float) -> None:
    """P(clean) 0.5 under an open local gate (0.9): gain 1 leaves 0.4 of the correction, gain 2 none.

    A degraded frame (P(clean) ~ 0) keeps its gate at either gain.
    """
    cfg = {**TINY, "exact_skip": True, "condition_head": True, "clean_shuts_gate": True, "clean_gain": gain}
    x = _every_8bit_value()
    for clean_logit in (0.0, -10.0):
        folder = tmp_path / str(clean_logit)
        path = export_onnx(_shut_gate_int8(cfg, gate_logit=2.2, clean_logit=clean_logit), folder / "efm_int8.onnx",
                           {"model": cfg})
        cpu = to_cpu_variant(path, folder / "efm_int8_cpu.onnx")
        for file, on_cpu in ((path, False), (cpu, True)):
            assert check_int8(file, cpu=on_cpu).ok
            out, condition, gate = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]).run(
                None, {"image": x})
            changed = int(np.count_nonzero(np.rint(out * 255) != np.rint(x * 255)))
            if clean_logit == 0.0 and gain > 1:
                assert abs(float(condition[0, 0]) - 0.5) < 0.05
                assert changed == 0 and float(gate.max()) == 0.0
            else:
                assert changed > 0.3 * x.size and float(gate.min()) > 0.3


def test_condition_model_exports_restored_condition_and_gate(tmp_path: Path) -> None:
    model = _shut_gate_int8({**TINY, "exact_skip": True, "condition_head": True})
    path = export_onnx(model, tmp_path / "efm_int8.onnx", {"model": {"exact_skip": True}})
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["restored", "condition", "gate"]
    labels = json.loads({p.key: p.value for p in proto.metadata_props}["condition_labels"])
    assert labels == ["clean", "noise", "rain", "lowlight", "haze"]
    restored, condition, gate = ort.InferenceSession(str(path)).run(None, {"image": _every_8bit_value()})
    with torch.no_grad():
        y, feats = model(torch.from_numpy(_every_8bit_value()), return_features=True)
    assert condition.shape == (1, 5) and gate.shape == (1, 1, 16, 16)
    np.testing.assert_allclose(condition, torch.sigmoid(feats["condition"]).numpy(), atol=1e-5)
    assert float(gate.max()) < 1e-3  # shut everywhere

    def skip_through_int8(graph: onnx.GraphProto) -> None:
        add = next(n for n in graph.node if n.output[0] == "restored")
        q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
        dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
        add.input[:] = [dq.output[0] if i == "image" else i for i in add.input]
    report = check_int8(_edit(path, tmp_path / "quantized_skip.onnx", skip_through_int8))
    assert report.skip == "quantized" and any("exact_skip" in v for v in report.violations)


def test_lmr_weights_stay_positive_and_bounded() -> None:
    """A distillation term that jumps 50000x (a quantization-noise burst) is down-weighted, never to zero."""
    lmr = LearnableMagnitudeReweighting(2, momentum=0.9, s_max=3.0)
    opt = torch.optim.SGD(lmr.parameters(), lr=0.5)
    history, pulls = [], []
    for step in range(300):
        distill = torch.tensor(1e-4 if step < 150 else 5.0, requires_grad=True)
        total = lmr([torch.tensor(0.03, requires_grad=True), distill])
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(lmr.current())
        pulls.append(float(distill.grad) * float(lmr.magnitude[1]))  # the weight the network sees, vs balanced
    assert history[-1][1] < history[149][1] / 1000
    assert history[-1][1] * 5.0 > 0.01
    floor = math.exp(-3.0)
    assert min(pulls) >= floor * (1 - 1e-5)  # never below exp(-s_max) of balanced ...
    assert min(pulls) < 1.5 * floor  # ... and the burst did drive it down to that floor


def test_lmr_comes_back_from_its_bound_and_ignores_a_non_finite_step() -> None:
    """After a long burst drove a weight to its bound, a settled term gets its weight back; inf moves no mean."""
    lmr = LearnableMagnitudeReweighting(1, momentum=0.9, s_max=3.0)
    with torch.no_grad():
        lmr.s.fill_(6.0)  # far past the bound, where a clamp had left no gradient
    total = lmr([torch.tensor(1.0)])
    total.backward()
    assert float(lmr.s.grad) != 0.0
    lmr([torch.tensor(float("inf"))])
    assert float(lmr.magnitude) == 1.0  # the first value stays the mean; inf would have stuck there


def test_gradient_lmr_equalises_pulls_and_keeps_every_weight_above_its_floor() -> None:
    """Term 1 pulls the shared tensor 10x harder than term 0: the weights move until both pull alike."""
    lmr = GradientMagnitudeReweighting(2, alpha=0.0, rate=100.0, floor=0.05)
    opt = torch.optim.Adam(lmr.parameters(), lr=1e-3)
    z = torch.randn(64, requires_grad=True)
    for _ in range(400):
        total = lmr([z.abs().mean(), 10 * (z - 1).abs().mean()], z)
        opt.zero_grad()
        total.backward()
        opt.step()
        w = lmr.current()
        assert min(w) >= 0.05 - 1e-6 and abs(sum(w) - 2) < 1e-5
    assert 7 < w[0] / w[1] < 13, w
    assert z.grad is not None  # the weighted sum still trains the network
    with pytest.raises(ValueError, match="anchor"):
        lmr([z.abs().mean()] * 2)


def test_bounded_lmr_lowers_a_bursting_term_and_never_raises_it_above_its_fixed_weight() -> None:
    """Calm, then a 20x burst in distillation term 0: its weight falls toward 1/20, term 1 keeps its weight."""
    lmr = BoundedMagnitudeReweighting([0.5, 0.5], momentum=0.99, rate=100.0, floor=0.05)
    opt = torch.optim.Adam(lmr.parameters(), lr=2e-3)
    history = []
    for step in range(400):
        burst = 20.0 if 200 <= step < 260 else 1.0
        losses = [torch.tensor(0.03, requires_grad=True), torch.tensor(1e-3 * burst, requires_grad=True),
                  torch.tensor(1e-3, requires_grad=True)]
        total = lmr(losses)
        opt.zero_grad()
        total.backward()
        history.append(lmr.current())
        rec, first, second = history[-1]
        assert rec == 1.0 and 0.5 * 0.05 < first <= 0.5 and 0.5 * 0.05 < second <= 0.5
        assert abs(float(losses[1].grad) - first) < 1e-6  # the network sees exactly the current weight
        opt.step()
    assert history[199][1] > 0.45 and history[199][2] > 0.45  # calm: the fixed weight
    assert min(h[1] for h in history[200:260]) < 0.1  # the bursting term is lowered in proportion
    assert min(h[2] for h in history[200:260]) > 0.45  # and only that one
    assert history[-1][1] > 0.4  # and gets its weight back once it settles


def test_aligned_lmr_raises_an_agreeing_term_and_lowers_an_opposing_one() -> None:
    """Term 0 pulls the bottleneck the way reconstruction does, term 1 against it: weights part, stay in range."""
    lmr = AlignedMagnitudeReweighting([0.5, 0.5], rate=100.0, floor=0.05, cap=2.0)
    assert lmr.current() == pytest.approx([1.0, 0.5, 0.5])  # starts at the fixed weights
    opt = torch.optim.Adam(lmr.parameters(), lr=2e-3)
    target = torch.linspace(-1, 1, 64)
    for _ in range(300):
        z = torch.zeros(64, requires_grad=True)
        rec = ((z - target) ** 2).mean()
        agree, oppose = ((z - 0.5 * target) ** 2).mean(), ((z + target) ** 2).mean()
        total = lmr([rec, agree, oppose], z)
        opt.zero_grad()
        total.backward()
        rec_weight, first, second = lmr.current()
        assert rec_weight == 1.0 and 0.5 * 0.05 < second <= first < 0.5 * 2.0
        assert float(z.grad @ z.grad) > 0  # the network still gets the weighted sum's gradient
        opt.step()
    assert lmr.alignment.tolist() == pytest.approx([1.0, -1.0])
    assert first > 0.9 and second < 0.1  # w -> 1 + cos: twice the fixed weight, and close to the floor
    with pytest.raises(ValueError, match="anchor"):
        lmr.train()([rec, agree, oppose])


HELD_OUT_BATCHES = 16  # one 4-crop batch is too noisy to tell a 60-step change in reconstruction


@pytest.mark.skipif(not (data_root() / "clean" / "CBSD68").is_dir(), reason="training photos not found")
def test_tiny_qdr_run_losses_fall_and_lmr_stays_positive(tmp_path: Path) -> None:
    """QDR from the shipped FP32 denoiser on small crops: on fixed held-out batches both terms fall."""
    cfg = load_config("denoise", CONFIG_DIR / "int8.yaml", [
        "stage=qdr", f"quant.teacher={SHIPPED_TEACHER}", "train.iters=60", "train.log_every=10", "optim.lr=1e-4",
        "optim.warmup=5", "quant.calib_batches=8", "data.crop=32", "data.batch=4", "train.threads=1",
        "train.progress=false", "train.val_every=1000", "train.save_every=1000", "data.val_images=1",
        "data.val_crop=64", f"out={tmp_path}", "degradation.denoise.sigma=[25,25]", "name=qdr"])
    trainer = Trainer(cfg)
    held_out = [trainer.batches(CALIBRATION_STEP_OFFSET - 1 - i, trainer.device) for i in range(HELD_OUT_BATCHES)]

    def held_out_losses() -> dict[str, float]:
        trainer.model.eval()
        trainer.stage.objective.eval()
        with torch.no_grad():
            logs = [trainer.stage.objective(trainer.model, lq, gt, labels)[1] for lq, gt, labels in held_out]
        trainer.model.train()
        trainer.stage.objective.train()
        return {key: float(np.mean([log[key] for log in logs])) for key in logs[0]}

    before = held_out_losses()
    run = trainer.fit()
    after = held_out_losses()
    # 16 fixed held-out batches: a 15% fall is far outside their noise (the teacher starts close already)
    assert after["kd_bottleneck"] < 0.85 * before["kd_bottleneck"], (before, after)
    assert after["rec"] < before["rec"], (before, after)
    rows = [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]
    weights: dict[str, list[float]] = {}
    for _, key, v in rows:
        if key.startswith("w_"):
            weights.setdefault(key, []).append(float(v))
    assert set(weights) == {"w_rec", "w_kd_bottleneck", "w_kd_output"}
    assert any(abs(w[-1] / w[0] - 1) > 0.01 for w in weights.values()), weights  # the weights were learned
    card = release(run, tmp_path / "models", tmp_path / "results", threads=1, eval_data="clean/Kodak24")
    shipped = sorted(p.name for p in (tmp_path / "models" / "denoise").iterdir())
    assert shipped == ["MODEL_CARD_int8.md", "efm_int8.onnx", "efm_int8_cpu.onnx", "model_card_int8.json"]
    assert [Path(f).name for f in card["files"]] == ["efm_int8.onnx", "efm_int8_cpu.onnx"]
    model, info = load_model(run / "model.pt")
    assert info["quantized"] and info["stage"] == "qdr"


def test_engine_cache_key_changes_with_everything_that_invalidates_an_engine() -> None:
    base = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                profile=ShapeProfile())
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)
    for change in ({"onnx_sha256": "b" * 64}, {"trt_version": "10.7.0"}, {"gpu_name": "NVIDIA H100"},
                   {"compute_capability": "9.0"}, {"profile": ShapeProfile(max_hw=(720, 1280))}):
        assert engine_cache_key(**{**base, **change}) != key, change
    assert engine_cache_key(**base, fp16=False) != key
    assert engine_cache_key(**base, strongly_typed=True) != key
    assert engine_cache_key(**base, dla_core=0) != key


def test_engine_build_without_tensorrt_says_so(int8_onnx: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        build_or_load_engine(int8_onnx)
    assert main(["build-engine", str(int8_onnx)]) == 3
    assert "TensorRT-ready" in capsys.readouterr().err


def test_ablate_refuses_an_unknown_variant_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    """``--variants qdr train.iters=5`` would swallow the override as a variant name: say so, train nothing."""
    assert main(["ablate", "--task", "denoise", "--teacher", str(SHIPPED_TEACHER), "--variants", "qdr",
                 "train.iters=5"]) == 2
    err = capsys.readouterr().err
    assert "unknown variant(s) train.iters=5" in err and "before --variants" in err


@pytest.mark.skipif(not (data_root() / "clean" / "CBSD68").is_dir(), reason="training photos not found")
def test_an_int8_run_resumes_only_with_the_teacher_it_started_from(tmp_path: Path) -> None:
    """A release can replace models/<task>/efm_fp32.pt while a QAT run is paused: resuming then is refused."""
    teacher = tmp_path / "teacher.pt"
    shutil.copy(SHIPPED_TEACHER, teacher)
    overrides = ["stage=qat", f"quant.teacher={teacher}", "train.iters=4", "train.save_every=2", "train.threads=1",
                 "train.progress=false", "train.val_every=1000", "quant.calib_batches=1", "data.crop=32",
                 "data.batch=2", f"out={tmp_path}", "name=qat_resume"]
    Trainer(load_config("denoise", CONFIG_DIR / "int8.yaml", overrides)).fit()
    longer = [*overrides, "train.iters=6"]
    resumed = Trainer(load_config("denoise", CONFIG_DIR / "int8.yaml", longer), resume=True)
    assert resumed.step == 4 and safe_load(resumed.fit() / "last.pt")["step"] == 6  # the same teacher: it goes on
    model, _ = load_model(teacher)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # the same graph, other weights: what a release leaves
    save_model_file(model, load_model(teacher)[1]["model"], teacher)
    with pytest.raises(CheckpointError, match="another teacher"):
        Trainer(load_config("denoise", CONFIG_DIR / "int8.yaml", overrides), resume=True)
