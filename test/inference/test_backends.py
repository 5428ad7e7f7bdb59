"""Model checks and backends on real tiny ONNX models (real ONNX Runtime, no mocks)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from support.auto_model import AUTO_LABELS, auto_model_reference
from support.untrained import with_live_correction
from qdr_ros.inference import BackendUnavailable, create_backend
from qdr_ros.inference.base import Backend
from qdr_ros.inference.onnxruntime import OnnxRuntimeBackend, cpu_variant_of, physical_cores
from qdr_ros.inference.tensorrt import tensorrt_unavailable_reason
from qdr_ros.core.image_conversions import from_model_output, pad_to, to_model_input
from qdr_ros.core.model_info import ModelError, validate_model_file
from qdr_train.export.cpu_variant import to_cpu_variant
from qdr_train.export.onnx import export_onnx
from qdr_train.models import EFM
from qdr_train.quant import calibrate, prepare_qat

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


class TinyNet(torch.nn.Module):
    """Two convs and a residual: enough graph to make backends do real work."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(4, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.body(x)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain torch-exported FP32 net, an FP32 and an INT8 EFM, and the INT8 model's CPU twin."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tiny = root / "tiny.onnx"
    dynamic = {0: "n", 2: "h", 3: "w"}
    torch.onnx.export(TinyNet().eval(), (torch.rand(1, 3, 16, 16),), str(tiny), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["restored"],
                      dynamic_axes={"image": dynamic, "restored": dynamic})
    efm = with_live_correction(EFM(widths=(8, 8, 8), num_blocks=1))
    fp32 = export_onnx(efm, root / "efm_fp32.onnx", metadata={"task": "denoise", "stride": 8, "config": {"w": 8}})
    qat = calibrate(prepare_qat(efm), [torch.rand(1, 3, 32, 32) for _ in range(2)], progress=False)
    int8 = export_onnx(qat, root / "efm_int8.onnx", metadata={"task": "denoise", "precision": "int8"})
    cpu = to_cpu_variant(int8, root / "efm_int8_cpu.onnx")
    return {"tiny": tiny, "fp32": fp32, "int8": int8, "cpu": cpu}


def identity_model(path: Path, inputs: list[tuple[str, int, list]], outputs: list[tuple[str, int, list]],
                   metadata: dict[str, str] | None = None) -> Path:
    """A hand-built ONNX graph with the given I/O (name, elem type, shape) for the rejection tests."""
    nodes = [helper.make_node("Identity", [inputs[0][0]], [o[0]]) for o in outputs]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


F = TensorProto.FLOAT
U8 = TensorProto.UINT8
NCHW = ["n", 3, "h", "w"]


def condition_model(path: Path, width: int, labels: str | None) -> Path:
    """A model with ``restored`` and a ``condition`` output of ``width`` entries; ``labels`` is the metadata value."""
    nodes = [helper.make_node("Identity", ["image"], ["restored"]),
             helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["condition"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", F, NCHW)],
                              [helper.make_tensor_value_info("restored", F, NCHW),
                               helper.make_tensor_value_info("condition", F, ["n", width])],
                              initializer=[helper.make_tensor("w", F, [3, width], [0.0] * 3 * width)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if labels is not None:
        model.metadata_props.add(key="condition_labels", value=labels)
    onnx.save(model, str(path))
    return path


def direct_run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["restored"], {"image": x})[0]


@pytest.mark.parametrize("key", ["tiny", "fp32", "int8"])
def test_onnxruntime_backend_matches_a_direct_session(models: dict[str, Path], key: str) -> None:
    backend = OnnxRuntimeBackend(models[key], prefer_cpu_variant=False)
    x = np.random.default_rng(1).random((1, 3, 48, 40), dtype=np.float32)
    y = backend.infer(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, direct_run(models[key], x), rtol=0, atol=1e-6)


def test_cpu_variant_matches_the_int8_model(models: dict[str, Path]) -> None:
    x = np.random.default_rng(2).random((1, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(direct_run(models["cpu"], x), direct_run(models["int8"], x), rtol=0, atol=1e-5)


def test_full_frame_path_through_the_backend(models: dict[str, Path]) -> None:
    backend = create_backend(models["tiny"])
    frame = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x, (h, w) = to_model_input(frame, "bgr8", stride=backend.stride)
    out = from_model_output(backend.infer(x), h, w, "bgr8")
    assert out.shape == frame.shape and out.dtype == np.uint8


@pytest.mark.parametrize("key", ["tiny", "fp32", "cpu"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
@pytest.mark.parametrize("size", [(48, 64), (37, 53), (1, 9)])
def test_uint8_path_matches_the_float_path(models: dict[str, Path], key: str, encoding: str,
                                           size: tuple[int, int]) -> None:
    """In-graph conversion (restore_uint8) == numpy conversion around infer, up to one level on rare pixels."""
    backend = OnnxRuntimeBackend(models[key], prefer_cpu_variant=False)
    frame = np.random.default_rng(4).integers(0, 256, (*size, 3), dtype=np.uint8)
    x, (h, w) = to_model_input(frame, encoding, stride=backend.stride)
    reference = from_model_output(backend.infer(x), h, w, encoding)
    out = backend.restore_uint8(frame, bgr=encoding == "bgr8")
    assert out.shape == frame.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - reference.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01
    if key == "tiny" and encoding == "bgr8":  # the channel order must really be honoured
        swapped = backend.restore_uint8(np.ascontiguousarray(frame[..., ::-1]))[..., ::-1]
        assert np.abs(swapped.astype(int) - out.astype(int)).max() <= 1


def test_uint8_input_table_gives_the_bytes_of_the_float_steps(models: dict[str, Path]) -> None:
    """The CPU variant's input quantizer read as a table: every output equal, every byte value, both orders."""
    from qdr_ros.inference.uint8_io import BGR_ORDER, CHANNELS, IMAGE, RGB_ORDER, with_uint8_io

    model = onnx.load(models["cpu"])
    table = with_uint8_io(model, integer_input=True)
    assert [n.op_type for n in table.graph.node if n.name == "uint8_io_input_table"] == ["QLinearLeakyRelu"]
    assert not any(n.name == "uint8_io_input_table" for n in with_uint8_io(onnx.load(models["int8"]), True).graph.node)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (with_uint8_io(model), table)]
    every_value = np.resize(np.arange(256, dtype=np.uint8), (1, 32, 40, 3))  # each value in each channel
    noise = np.random.default_rng(6).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    for frame in (every_value, noise):
        for order in (RGB_ORDER, BGR_ORDER):
            floats, ints = (s.run(None, {IMAGE: frame, CHANNELS: order}) for s in sessions)
            for a, b in zip(floats, ints):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [(48, 64), (37, 53)])
def test_uint8_path_writes_into_the_callers_frame(models: dict[str, Path], size: tuple[int, int]) -> None:
    """``out=`` (the node's message array) gets exactly what a plain call returns; a wrong array is refused."""
    backend = OnnxRuntimeBackend(models["cpu"], prefer_cpu_variant=False)
    frame = np.random.default_rng(5).integers(0, 256, (*size, 3), dtype=np.uint8)
    for bgr in (False, True):
        target = np.zeros_like(frame)
        assert backend.restore_uint8(frame, bgr=bgr, out=target) is target
        np.testing.assert_array_equal(target, backend.restore_uint8(frame, bgr=bgr))
    with pytest.raises(ValueError, match="C-contiguous"):
        backend.restore_uint8(frame, out=np.zeros((size[0], size[1] + 1, 3), np.uint8))
    with pytest.raises(ValueError, match="C-contiguous"):
        backend.restore_uint8(frame, out=np.zeros((size[1], size[0], 3), np.uint8).transpose(1, 0, 2))


def test_precision_is_detected_from_the_graph(models: dict[str, Path]) -> None:
    for parser in ("onnx", "onnxruntime"):
        assert validate_model_file(models["int8"], parser).precision == "int8"
        assert validate_model_file(models["cpu"], parser).precision == "int8"
    fp32 = validate_model_file(models["fp32"])
    assert fp32.precision == "fp32" and fp32.task == "denoise" and fp32.stride == 8 and fp32.config == {"w": 8}
    assert fp32.input_name == "image" and fp32.output_name == "restored" and len(fp32.input_shape) == 4
    assert len(fp32.sha256) == 64 and fp32.format == "onnx"
    assert validate_model_file(models["tiny"]).precision == "fp32"
    assert validate_model_file(models["tiny"]).stride == 8


def test_cpu_sibling_is_preferred_on_cpu_and_logged(models: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    assert cpu_variant_of(models["int8"]) == models["cpu"]
    assert cpu_variant_of(models["cpu"]) is None and cpu_variant_of(models["fp32"]) is None
    with caplog.at_level(logging.INFO, logger="qdr_ros.inference.onnxruntime"):
        backend = create_backend(models["int8"], backend="onnxruntime")
    assert backend.model_path == str(models["cpu"])
    assert "efm_int8_cpu.onnx" in backend.reason and "efm_int8_cpu.onnx" in caplog.text
    plain = create_backend(models["int8"], backend="onnxruntime", prefer_cpu_variant=False)
    assert plain.model_path == str(models["int8"]) and plain.precision == "int8"


def test_auto_records_why_tensorrt_was_not_used(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # behave as on a machine without TensorRT
    backend = create_backend(models["fp32"], threads=1)
    assert backend.name == "onnxruntime" and backend.device == "cpu"
    assert backend.providers == ["CPUExecutionProvider"]
    info = backend.describe()
    for text in ("TensorRT not used", "import tensorrt failed", "CPUExecutionProvider", "efm_fp32.onnx"):
        assert text in backend.reason and text in info["reason"]
    assert info["threads"] == 1 and info["precision"] == "fp32" and info["model_sha256"]
    assert tensorrt_unavailable_reason() is not None


def test_threads_default_to_physical_cores(models: dict[str, Path]) -> None:
    backend = OnnxRuntimeBackend(models["tiny"])
    assert backend.threads == physical_cores() >= 1
    assert backend.warmup(30, 30) > 0


def test_explicit_tensorrt_without_tensorrt_raises_a_plain_message(
        models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable) as err:
        create_backend(models["fp32"], backend="tensorrt")
    message = str(err.value)
    assert "TensorRT is not installed in this Python environment (import tensorrt failed:" in message
    assert "python3-libnvinfer" in message and "backend:=onnxruntime" in message
    engine = tmp_path / "efm.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendUnavailable):
        create_backend(engine)


def test_backend_rejects_bad_inputs(models: dict[str, Path]) -> None:
    backend = OnnxRuntimeBackend(models["tiny"])
    with pytest.raises(ValueError, match="multiple of the model stride 8"):
        backend.infer(np.zeros((1, 3, 30, 32), np.float32))
    with pytest.raises(ValueError, match="float32"):
        backend.infer(np.zeros((1, 3, 32, 32), np.float64))
    with pytest.raises(ValueError, match="backend"):
        create_backend(models["tiny"], backend="tflite")


def test_engine_files_get_file_level_checks_only(tmp_path: Path) -> None:
    engine = tmp_path / "efm.plan"
    engine.write_bytes(b"\x00" * 16)
    info = validate_model_file(engine)
    assert info.format == "tensorrt_engine" and info.precision == "unknown" and info.size_bytes == 16
    with pytest.raises(ValueError, match="TensorRT engine"):
        OnnxRuntimeBackend(engine)


def bad_models(tmp: Path) -> list[tuple[Path, str]]:
    """(file, text the ModelError must contain) for every kind of unusable model file."""
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    text = tmp / "text.onnx"
    text.write_text("this is not a model\n")
    empty = tmp / "empty.onnx"
    empty.touch()
    weights = tmp / "model.pt"
    weights.write_bytes(b"\x80\x02")
    (tmp / "folder.onnx").mkdir()
    return [
        (tmp / "missing.onnx", "does not exist"),
        (tmp / "folder.onnx", "not a regular file"),
        (empty, "is empty"),
        (garbage, "export or copy it again"),
        (text, "export or copy it again"),
        (weights, "export the checkpoint first"),
        (identity_model(tmp / "rank3.onnx", [("image", F, [3, "h", "w"])], [("restored", F, [3, "h", "w"])]),
         "rank 3"),
        (identity_model(tmp / "name.onnx", [("input", F, NCHW)], [("restored", F, NCHW)]), "re-export"),
        (identity_model(tmp / "outname.onnx", [("image", F, NCHW)], [("output", F, NCHW)]), "'restored'"),
        (identity_model(tmp / "dtype.onnx", [("image", U8, NCHW)], [("restored", U8, NCHW)]), "float32"),
        (identity_model(tmp / "gray.onnx", [("image", F, ["n", 1, "h", "w"])], [("restored", F, NCHW)]),
         "3 (RGB)"),
        (identity_model(tmp / "two.onnx", [("image", F, NCHW)], [("restored", F, NCHW), ("mask", F, NCHW)]),
         "optionally also 'condition' and 'gate'"),
        (identity_model(tmp / "gate3.onnx", [("image", F, NCHW)], [("restored", F, NCHW), ("gate", F, NCHW)]),
         "expected 1 (one gate value per pixel)"),
        (condition_model(tmp / "nolabels.onnx", 5, None), "no condition_labels metadata"),
        (condition_model(tmp / "fewlabels.onnx", 5, '["clean", "noise"]'),
         "has 5 entries but condition_labels names 2"),
        (condition_model(tmp / "badlabels.onnx", 2, '{"clean": 0}'), "not a list of distinct names"),
        (condition_model(tmp / "twice.onnx", 2, '["rain", "rain"]'), "not a list of distinct names"),
        (identity_model(tmp / "orphan.onnx", [("image", F, NCHW)], [("restored", F, NCHW)],
                        {"condition_labels": '["clean"]'}), "has no 'condition' output"),
        (identity_model(tmp / "stride.onnx", [("image", F, NCHW)], [("restored", F, NCHW)], {"stride": "eight"}),
         "malformed metadata"),
        (identity_model(tmp / "stride0.onnx", [("image", F, NCHW)], [("restored", F, NCHW)], {"stride": "0"}),
         "positive integer"),
    ]


@pytest.mark.parametrize("parser", ["onnx", "onnxruntime"])
def test_model_info_rejects_unusable_files_with_actionable_messages(tmp_path: Path, parser: str) -> None:
    for path, expected in bad_models(tmp_path):
        with pytest.raises(ModelError) as err:
            validate_model_file(path, parser)
        assert expected in str(err.value), (path.name, str(err.value))
        assert str(path.name) in str(err.value)


def test_model_info_rejects_external_data_outside_the_model_folder(tmp_path: Path) -> None:
    weight = helper.make_tensor("w", F, [1], [0.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    weight.external_data.add(key="location", value="../../etc/passwd")
    add = helper.make_node("Add", ["image", "w"], ["restored"])
    graph = helper.make_graph([add], "g", [helper.make_tensor_value_info("image", F, NCHW)],
                              [helper.make_tensor_value_info("restored", F, NCHW)], initializer=[weight])
    path = tmp_path / "escape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="points outside the directory"):
        validate_model_file(path, "onnx")


def test_model_info_reads_external_weights_beside_the_model_from_any_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weight = onnx.numpy_helper.from_array(np.full([1], 0.5, np.float32), "w")  # raw data: can go external
    add = helper.make_node("Add", ["image", "w"], ["restored"])
    graph = helper.make_graph([add], "g", [helper.make_tensor_value_info("image", F, NCHW)],
                              [helper.make_tensor_value_info("restored", F, NCHW)], initializer=[weight])
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "m.onnx"),
              save_as_external_data=True, location="m.data", size_threshold=0)
    assert (folder / "m.data").is_file()
    monkeypatch.chdir(tmp_path)  # not the model's folder
    assert validate_model_file(folder / "m.onnx", "onnx").output_name == "restored"


def test_model_info_reads_metadata_written_as_json(tmp_path: Path) -> None:
    path = identity_model(tmp_path / "meta.onnx", [("image", F, NCHW)], [("restored", F, NCHW)],
                          {"stride": "16", "task": json.dumps("deblur"), "config": json.dumps({"a": [1, 2]})})
    info = validate_model_file(path)
    assert (info.stride, info.task, info.config) == (16, "deblur", {"a": [1, 2]})
    assert info.input_shape == ("n", 3, "h", "w")


class NumpyPathBackend(OnnxRuntimeBackend):
    """ONNX Runtime behind the base class's own uint8 path (numpy conversions around ``infer_outputs``).

    That is the path the TensorRT backend takes, run here on a real engine.
    """

    restore_frame = Backend.restore_frame
    _infer_uint8 = Backend._infer_uint8


def test_three_output_model_is_described_with_its_labels(auto_model: Path) -> None:
    for parser in ("onnx", "onnxruntime"):
        info = validate_model_file(auto_model, parser)
        assert info.output_names == ("restored", "condition", "gate") and info.output_name == "restored"
        assert info.condition_labels == AUTO_LABELS and info.output_shape == ("n", 3, "h", "w")
    backend = OnnxRuntimeBackend(auto_model)
    facts = backend.describe()
    assert facts["outputs"] == ["restored", "condition", "gate"] and facts["condition_labels"] == list(AUTO_LABELS)
    shipped = validate_model_file(Path(__file__).resolve().parents[2] / "models/denoise/efm_int8.onnx")
    assert shipped.output_names == ("restored",) and shipped.condition_labels == ()


@pytest.mark.parametrize("cls", [OnnxRuntimeBackend, NumpyPathBackend])
def test_three_output_model_passes_condition_and_gate_through(auto_model: Path, cls: type) -> None:
    """Float path: all three outputs equal numpy's; uint8 path: the same outputs for the frame, gate cropped."""
    backend = cls(auto_model)
    x = np.random.default_rng(11).random((2, 3, 24, 40), dtype=np.float32)
    outputs, expected = backend.infer_outputs(x), auto_model_reference(x)
    assert set(outputs) == set(expected)
    for name in expected:
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(backend.infer(x), expected["restored"], rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(12)
    for size in [(48, 64), (37, 53), (5, 3)]:
        frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        for bgr, out in [(False, None), (True, None), (False, np.zeros_like(frame)), (True, np.zeros_like(frame))]:
            result = backend.restore_frame(frame, bgr=bgr, out=out)
            x, (h, w) = to_model_input(frame, "bgr8" if bgr else "rgb8", stride=backend.stride)
            reference = auto_model_reference(x)
            image = from_model_output(reference["restored"], h, w, "bgr8" if bgr else "rgb8")
            assert result.image.shape == frame.shape and result.image.dtype == np.uint8
            assert out is None or result.image is out
            assert np.abs(result.image.astype(int) - image.astype(int)).max() <= 1
            assert result.condition.shape == (len(AUTO_LABELS),) and result.condition.dtype == np.float32
            np.testing.assert_allclose(result.condition, reference["condition"][0], atol=1e-5)
            assert result.gate.shape == size and result.gate.dtype == np.float32
            np.testing.assert_allclose(result.gate, reference["gate"][0, 0, :h, :w], atol=1e-5)
            np.testing.assert_array_equal(backend.restore_uint8(frame, bgr=bgr), result.image)


def test_one_output_models_restore_frames_without_extras(models: dict[str, Path]) -> None:
    shipped = Path(__file__).resolve().parents[2] / "models/denoise/efm_int8.onnx"
    frame = np.random.default_rng(13).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for backend in (OnnxRuntimeBackend(shipped), NumpyPathBackend(models["tiny"])):
        result = backend.restore_frame(frame, out=np.zeros_like(frame))
        assert result.condition is None and result.gate is None
        np.testing.assert_array_equal(result.image, backend.restore_uint8(frame))
        assert set(backend.infer_outputs(np.zeros((1, 3, 8, 8), np.float32))) == {"restored"}


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed")
def test_tensorrt_backend_on_gpu_matches_onnxruntime(models: dict[str, Path], tmp_path: Path) -> None:
    """64x48 is below the profile's 64-pixel minimum: the backend pads it up, as ORT gets it here, and crops."""
    backend = create_backend(models["int8"], backend="tensorrt", engine_cache_dir=str(tmp_path))
    assert backend.name == "tensorrt" and backend.device == "cuda" and backend.precision == "int8"
    assert backend.min_hw == (64, 64)
    x = np.random.default_rng(4).random((1, 3, 64, 48), dtype=np.float32)
    reference = OnnxRuntimeBackend(models["int8"], prefer_cpu_variant=False).infer(pad_to(x, 64, 64, axes=(2, 3)))
    np.testing.assert_allclose(backend.infer(x), reference[..., :48], rtol=0, atol=0.02)


def test_an_x86_cpu_without_vnni_is_named_for_int8_models(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """u8s8 dot products saturate on x86 without VNNI (VPMADDUBSW's 16-bit sums): the operator hears of it."""
    from qdr_ros.inference import onnxruntime as ort_backend

    older = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 avx512f avx512bw\n"
    assert ort_backend.x86_without_vnni(older)
    assert not ort_backend.x86_without_vnni(older.replace("avx512bw", "avx512bw avx512_vnni"))
    assert not ort_backend.x86_without_vnni(older.replace("avx2", "avx2 avx_vnni"))
    assert not ort_backend.x86_without_vnni("processor\t: 0\n")  # cannot tell: say nothing
    monkeypatch.setattr(ort_backend, "x86_without_vnni", lambda: True)
    with caplog.at_level(logging.WARNING):
        int8 = OnnxRuntimeBackend(models["cpu"], prefer_cpu_variant=False)
    assert "no VNNI" in int8.reason and "no VNNI" in caplog.text
    assert "no VNNI" not in OnnxRuntimeBackend(models["tiny"]).reason  # a float model has no 8-bit sums
