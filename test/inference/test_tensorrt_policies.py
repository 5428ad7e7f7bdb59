"""TensorRT policies without TensorRT: a stand-in ``tensorrt``/``cuda`` (test/fake_tensorrt.py) that runs
"engines" with ONNX Runtime and can fail at build, load or first inference; everything else is real.

What is checked: frames the node accepts always fit the engine's profile (padding up, shrinking
down), ``backend:=auto`` falls back to ONNX Runtime and says why, the build options (strong
typing or precision flags, DLA, device, forced rebuild, progress logs) reach TensorRT, and the
extra outputs of an "auto" model come through the TensorRT path.
"""

from __future__ import annotations

import logging
from pathlib import Path
import sys

import numpy as np
import pytest

from support.auto_model import AUTO_LABELS, auto_model_reference
from support.fake_tensorrt import MISMATCHED_TIMING_CACHE, FakeTensorRT
from qdr_ros.inference import BackendUnavailable, create_backend
from qdr_ros.inference.onnxruntime import OnnxRuntimeBackend
from qdr_ros.inference.tensorrt import TensorRTBackend, TensorRTFailure
from qdr_ros.inference.tensorrt_build import ShapeProfile, build_or_load_engine, timing_cache_path
from qdr_ros.core.image_conversions import downscale_to_fit, pad_to

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models/denoise/efm_int8.onnx"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    return FakeTensorRT().install(monkeypatch)


def test_profile_follows_the_node_size_policy() -> None:
    profile = ShapeProfile.for_frames(1920 * 1080, (480, 640), 8)
    assert profile == ShapeProfile((64, 64), (480, 640), (1920, 1920))
    low, high = profile.min_hw, profile.max_hw
    for h, w in [(1080, 1920), (1920, 1080), (1200, 1600), (1600, 1200), (480, 640), (64, 64)]:
        assert low[0] <= h <= high[0] and low[1] <= w <= high[1], (h, w)
    small = ShapeProfile.for_frames(64, (480, 640), 16)
    assert small.min_hw == small.opt_hw == small.max_hw == (16, 16)


@pytest.mark.parametrize("size", [(48, 64), (5, 3), (1200, 1920), (1920, 1200), (400, 4000), (1080, 1920)])
def test_every_frame_the_node_accepts_fits_the_engine(fake: FakeTensorRT, tmp_path: Path,
                                                      size: tuple[int, int]) -> None:
    """Below the profile: padded up and cropped back; above it: shrunk as restore_node does, never a failure."""
    backend = create_backend(SHIPPED, "tensorrt", engine_cache_dir=str(tmp_path), max_pixels=1920 * 1080,
                             warmup_hw=(48, 64))
    assert (backend.min_hw, backend.max_hw) == ((64, 64), (1920, 1920))
    frame = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    small, scale = downscale_to_fit(frame, 1920 * 1080, backend.max_hw)
    assert small.shape[0] <= 1920 and small.shape[1] <= 1920 and (scale < 1) == (max(size) > 1920 or
                                                                                 size[0] * size[1] > 1920 * 1080)
    result = backend.restore_frame(small)
    assert result.image.shape == small.shape
    reference = OnnxRuntimeBackend(SHIPPED, prefer_cpu_variant=False)
    hp, wp = backend.input_size(*small.shape[:2])
    expected = reference.restore_uint8(pad_to(small, hp, wp))[:small.shape[0], :small.shape[1]]
    assert np.abs(result.image.astype(int) - expected.astype(int)).max() <= 1


def test_float_inputs_below_the_profile_are_padded_and_above_it_refused(fake: FakeTensorRT, tmp_path: Path) -> None:
    """The shape the GPU test feeds (64x48, below the 64-pixel minimum) runs; too big says how to fix it."""
    backend = create_backend(SHIPPED, "tensorrt", engine_cache_dir=str(tmp_path), max_pixels=640 * 480)
    x = np.random.default_rng(4).random((1, 3, 64, 48), dtype=np.float32)
    reference = OnnxRuntimeBackend(SHIPPED, prefer_cpu_variant=False).infer(pad_to(x, 64, 64, axes=(2, 3)))
    np.testing.assert_allclose(backend.infer(x), reference[..., :48], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="larger than 744x744.*raise max_pixels"):
        backend.infer(np.zeros((1, 3, 752, 64), np.float32))


def test_auto_model_outputs_come_through_tensorrt(fake: FakeTensorRT, tmp_path: Path, auto_model: Path) -> None:
    backend = create_backend(auto_model, "tensorrt", engine_cache_dir=str(tmp_path))
    assert backend.info.condition_labels == AUTO_LABELS
    x = np.random.default_rng(5).random((1, 3, 64, 72), dtype=np.float32)
    outputs = backend.infer_outputs(x)
    for name, expected in auto_model_reference(x).items():
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    frame = np.random.default_rng(6).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    result = backend.restore_frame(frame)
    assert result.gate.shape == (30, 20) and result.condition.shape == (len(AUTO_LABELS),)
    engine = next(tmp_path.glob("auto_fp32-*.engine"))
    from_engine = create_backend(engine, "auto")  # labels and stride come from the metadata saved beside it
    assert from_engine.info.condition_labels == AUTO_LABELS and from_engine.name == "tensorrt"


@pytest.mark.parametrize("stage", ["build", "load", "inference"])
def test_auto_falls_back_to_onnxruntime_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stage: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    FakeTensorRT(fail_at=stage).install(monkeypatch)
    with caplog.at_level(logging.WARNING):
        backend = create_backend(SHIPPED, "auto", engine_cache_dir=str(tmp_path), warmup_hw=(48, 64), threads=1)
    assert backend.name == "onnxruntime"
    assert f"TensorRT {stage} failed" in backend.fallback and "fake:" in backend.fallback
    facts = backend.describe()
    assert facts["fallback"] == backend.fallback and backend.fallback in facts["reason"]
    assert f"TensorRT {stage} failed" in caplog.text and "falling back to ONNX Runtime" in caplog.text
    with pytest.raises(TensorRTFailure) as err:  # an explicit choice does not fall back
        create_backend(SHIPPED, "tensorrt", engine_cache_dir=str(tmp_path), warmup_hw=(48, 64))
    assert err.value.stage == stage


def test_auto_without_a_gpu_is_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTensorRT(gpus=0).install(monkeypatch)
    backend = create_backend(SHIPPED, "auto", threads=1)
    assert backend.name == "onnxruntime" and backend.fallback == "" and "GPU 0 is not usable" in backend.reason
    assert not fake.builds


def test_build_uses_strong_typing_where_tensorrt_has_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTensorRT().install(monkeypatch)
    with caplog.at_level(logging.INFO):
        build_or_load_engine(SHIPPED, tmp_path / "a", device_id=1)
    build = fake.builds[-1]
    assert build["network_flags"] == 1 << 1 and build["flags"] == set() and build["onnx"] == str(SHIPPED)
    assert build["device"] == 1 and build["shapes"] == [[1, 3, 64, 64], [1, 3, 480, 640], [1, 3, 1080, 1920]]
    assert "building TensorRT 10.13.0 engine of efm_int8.onnx" in caplog.text and "strongly typed" in caplog.text
    assert fake.progress and "Building engine" in caplog.text
    old = FakeTensorRT(strongly_typed=False).install(monkeypatch)
    build_or_load_engine(SHIPPED, tmp_path / "b")
    # TensorRT 8.6: create_network(0) would be implicit batch, which its ONNX parser refuses
    assert old.builds[-1]["network_flags"] == 1 << 0 and old.builds[-1]["flags"] == {"int8", "fp16"}
    build_or_load_engine(SHIPPED, tmp_path / "c", fp16=False)
    assert old.builds[-1]["flags"] == {"int8"}


def test_engine_cache_and_forced_rebuild(fake: FakeTensorRT, tmp_path: Path) -> None:
    first = build_or_load_engine(SHIPPED, tmp_path)
    assert build_or_load_engine(SHIPPED, tmp_path) == first and len(fake.builds) == 1
    create_backend(SHIPPED, "tensorrt", engine_cache_dir=str(tmp_path), force_rebuild=True, max_pixels=1080 * 1920,
                   warmup_hw=(1080, 1920))
    assert len(fake.builds) == 2, "force_rebuild must build although the cache holds the engine"
    assert {p.suffix for p in tmp_path.iterdir()} == {".engine", ".json", ".cache"}


def test_a_timing_cache_from_another_gpu_is_replaced_not_fatal(fake: FakeTensorRT, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    timing = timing_cache_path(tmp_path, "10.13.0", "Fake GPU", "8.7")
    assert timing.name == "timing-trt10.13.0-Fake-GPU-sm8.7.cache"
    timing.write_bytes(MISMATCHED_TIMING_CACHE)
    with caplog.at_level(logging.WARNING):
        engine = build_or_load_engine(SHIPPED, tmp_path)
    assert engine.is_file() and fake.timing_caches == [MISMATCHED_TIMING_CACHE, b""]
    assert "refused the timing cache" in caplog.text and timing.read_bytes() == b"timing"


def test_an_engine_tensor_numpy_cannot_hold_is_a_load_failure(fake: FakeTensorRT, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def nptype(dtype: object) -> None:  # what TensorRT's nptype does for BF16, FP8 and INT4
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    monkeypatch.setattr(sys.modules["tensorrt"], "nptype", nptype)
    with pytest.raises(TensorRTFailure, match="tensor type NumPy cannot hold") as err:
        create_backend(SHIPPED, "tensorrt", engine_cache_dir=str(tmp_path), warmup_hw=(48, 64))
    assert err.value.stage == "load"
    assert create_backend(SHIPPED, "auto", engine_cache_dir=str(tmp_path), threads=1).name == "onnxruntime"


def test_dla_core_is_requested_from_tensorrt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeTensorRT(dla_cores=2).install(monkeypatch)
    backend = create_backend(SHIPPED, "tensorrt", engine_cache_dir=str(tmp_path), dla_core=1)
    build = fake.builds[-1]
    assert (build["device_type"], build["dla_core"], "gpu_fallback" in build["flags"]) == ("dla", 1, True)
    assert fake.runtime_dla_core == 1 and backend.device == "dla:1"
    assert backend.min_hw == backend.max_hw == (480, 640)  # DLA takes no dynamic shapes: one size, others fit to it
    frame = np.zeros((240, 320, 3), np.uint8)
    assert backend.restore_frame(frame).image.shape == frame.shape  # padded up to the engine's size, cropped back
    with pytest.raises(BackendUnavailable, match="dla_core 2 requested but this device has 2 DLA core"):
        create_backend(SHIPPED, "tensorrt", engine_cache_dir=str(tmp_path), dla_core=2)


def test_a_gpu_that_is_not_there_is_refused(fake: FakeTensorRT) -> None:
    with pytest.raises(BackendUnavailable, match="needs CUDA GPU 5, but 2 GPU"):
        TensorRTBackend(SHIPPED, device_id=5)


@pytest.mark.ros
def test_a_new_max_pixels_rebuilds_the_engine_profile(fake: FakeTensorRT, tmp_path: Path) -> None:
    """restore_node's runtime max_pixels change reaches the engine, and destroy_node frees the GPU memory."""
    import time

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from qdr_ros.nodes.restore_node import RestoreNode

    context = Context()
    rclpy.init(context=context)
    node = RestoreNode(context=context, namespace="/trt_profile", parameter_overrides=[
        Parameter("model", value=str(SHIPPED)), Parameter("backend", value="tensorrt"),
        Parameter("engine_cache_dir", value=str(tmp_path)), Parameter("max_pixels", value=640 * 480)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        first = node._backend
        assert first.max_hw == ShapeProfile.for_frames(640 * 480, (480, 640), 8).max_hw
        assert node.set_parameters([Parameter("max_pixels", value=1920 * 1080)])[0].successful
        deadline = time.monotonic() + 60
        while node._backend is first:
            assert time.monotonic() < deadline, "the engine was not rebuilt for the new max_pixels"
            executor.spin_once(timeout_sec=0.05)
        assert node._backend.max_hw == (1920, 1920)
        first = None  # the replaced engine's buffers go with its last reference
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert fake._memory == {}, "destroy_node left GPU buffers allocated"
