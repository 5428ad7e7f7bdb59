"""Check a model file before any backend touches it, and describe it without running it.

ONNX files are parsed with the ``onnx`` package (protobuf parsing plus ``onnx.checker``, no
execution, external data not loaded) when it is installed; a runtime without ``onnx`` falls back
to ONNX Runtime's own loader with graph optimisation off. TensorRT engines (``.engine``/``.plan``)
are opaque until TensorRT deserialises them, so only file-level checks apply to them here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qdr_ros.core.image_conversions import DEFAULT_STRIDE

INPUT_NAME = "image"
OUTPUT_NAME = "restored"
CONDITION_NAME = "condition"
GATE_NAME = "gate"
# Optional outputs of an "auto" restoration model: per-image degradation probabilities and a per-pixel gate.
EXTRA_OUTPUTS = (CONDITION_NAME, GATE_NAME)
CONDITION_LABELS_KEY = "condition_labels"
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger"})
_FLOAT = "tensor(float)"


class ModelError(ValueError):
    """A model file that cannot be used; the message says what to do about it."""


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about a model file (read statically, never executed)."""

    path: Path
    format: str
    sha256: str
    size_bytes: int
    input_name: str | None = None
    output_name: str | None = None
    output_names: tuple[str, ...] = ()
    input_shape: tuple[int | str | None, ...] | None = None
    output_shape: tuple[int | str | None, ...] | None = None
    input_dtype: str | None = None
    output_dtype: str | None = None
    stride: int = DEFAULT_STRIDE
    precision: str = "unknown"
    task: str | None = None
    config: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    condition_labels: tuple[str, ...] = ()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (identifies the exact model in logs and diagnostics)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in ONNX_SUFFIXES + ENGINE_SUFFIXES:
        raise ModelError(f"model file {path} has suffix {suffix or '(none)'!r}; expected .onnx (exported by "
                         "qdr_train's ONNX export) or a TensorRT .engine/.plan; export the checkpoint first")
    if not path.exists():
        raise ModelError(f"model file {path} does not exist (resolved as {path.absolute()}); check the model "
                         "path (the node's model parameter, the command's --model) or copy the exported model there")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a regular file; point the model path at the .onnx/.engine file")
    if not os.access(path, os.R_OK):
        raise ModelError(f"model file {path} is not readable by this user; fix its permissions (chmod a+r)")
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty (0 bytes); the copy or download was interrupted, copy it again")


def _metadata_fields(path: Path, metadata: dict[str, str]) -> tuple[int, str | None, dict[str, Any] | None]:
    try:
        stride = int(json.loads(metadata.get("stride", str(DEFAULT_STRIDE))))
        config = json.loads(metadata["config"]) if "config" in metadata else None
    except (ValueError, TypeError) as exc:
        raise ModelError(f"model {path} has malformed metadata ({exc}); re-export it with qdr_train") from exc
    if stride <= 0:
        raise ModelError(f"model {path} declares stride {stride}; it must be a positive integer, re-export it")
    task = metadata.get("task")
    return stride, task.strip('"') if task else None, config


def _check_tensor(what: str, name: str, dtype: str, shape: tuple[Any, ...], rank: int, layout: str) -> None:
    if dtype != _FLOAT:
        raise ModelError(f"{what} {name!r} has type {dtype}, expected float32 (FP32 I/O, INT8 only inside the graph)")
    if len(shape) != rank:
        raise ModelError(f"{what} {name!r} has rank {len(shape)} {shape}, expected {rank} {layout}")


def _check_input(path: Path, items: list[tuple[str, str, tuple[Any, ...]]]) -> None:
    what = f"model {path} input"
    if len(items) != 1:
        raise ModelError(f"{what}s are {[i[0] for i in items]}; a qdr model has exactly one input {INPUT_NAME!r}. "
                         "Export it with qdr_train.export.onnx.export_onnx")
    name, dtype, shape = items[0]
    if name != INPUT_NAME:
        raise ModelError(f"{what} is named {name!r}, expected {INPUT_NAME!r}; "
                         "re-export with qdr_train.export.onnx.export_onnx (input 'image', output 'restored')")
    _check_tensor(what, name, dtype, shape, 4, "(N, 3, H, W)")
    if isinstance(shape[1], int) and shape[1] != 3:
        raise ModelError(f"{what} {name!r} has {shape[1]} channels, expected 3 (RGB)")


def _check_outputs(path: Path, items: list[tuple[str, str, tuple[Any, ...]]]) -> None:
    """``restored`` (N, 3, H, W), optionally ``condition`` (N, L) and ``gate`` (N, 1, H, W); nothing else."""
    what = f"model {path} output"
    names = [i[0] for i in items]
    allowed = (OUTPUT_NAME, *EXTRA_OUTPUTS)
    if OUTPUT_NAME not in names or len(set(names)) != len(names) or not set(names) <= set(allowed):
        expected = f"{OUTPUT_NAME!r}, optionally also {' and '.join(map(repr, EXTRA_OUTPUTS))}"
        raise ModelError(f"{what}s are {names}; a qdr model has the outputs {expected}. "
                         "Re-export it with qdr_train.export.onnx.export_onnx (input 'image', output 'restored')")
    for name, dtype, shape in items:
        if name == CONDITION_NAME:
            _check_tensor(what, name, dtype, shape, 2, "(N, number of condition labels)")
        elif name == GATE_NAME:
            _check_tensor(what, name, dtype, shape, 4, "(N, 1, H, W)")
            if isinstance(shape[1], int) and shape[1] != 1:
                raise ModelError(f"{what} {name!r} has {shape[1]} channels, expected 1 (one gate value per pixel)")
        else:
            _check_tensor(what, name, dtype, shape, 4, "(N, 3, H, W)")


def _condition_labels(path: Path, metadata: dict[str, str],
                      outputs: list[tuple[str, str, tuple[Any, ...]]]) -> tuple[str, ...]:
    """Return the names of the ``condition`` entries, from the JSON list in metadata ``condition_labels``."""
    shapes = {name: shape for name, _, shape in outputs}
    raw = metadata.get(CONDITION_LABELS_KEY)
    if CONDITION_NAME not in shapes:
        if raw is not None:
            raise ModelError(f"model {path} lists {CONDITION_LABELS_KEY} but has no {CONDITION_NAME!r} output; "
                             "re-export it with the condition head, or without the metadata key")
        return ()
    fix = (f'; re-export it with metadata {CONDITION_LABELS_KEY} = a JSON list of label strings, one per '
           f'{CONDITION_NAME} entry, e.g. ["clean", "noise", "rain", "lowlight", "haze"]')
    if path.suffix.lower() in ENGINE_SUFFIXES:  # an engine keeps its ONNX metadata in a sidecar file
        fix = (f"; an engine's labels come from {path.name}.json beside it, which qdr-train build-engine and the "
               "node's engine cache write: copy that file along with the engine, or set the model to the .onnx file "
               "and let the node build the engine")
    if raw is None:
        raise ModelError(f"model {path} has a {CONDITION_NAME!r} output but no {CONDITION_LABELS_KEY} metadata{fix}")
    try:
        labels = json.loads(raw)
    except ValueError as exc:
        raise ModelError(f"model {path} has malformed {CONDITION_LABELS_KEY} metadata ({exc}){fix}") from exc
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) and v for v in labels) \
            or len(set(labels)) != len(labels):
        raise ModelError(f"model {path} {CONDITION_LABELS_KEY} is {raw!r}, not a list of distinct names{fix}")
    width = shapes[CONDITION_NAME][1]
    if isinstance(width, int) and width != len(labels):
        raise ModelError(f"model {path} {CONDITION_NAME!r} output has {width} entries but {CONDITION_LABELS_KEY} "
                         f"names {len(labels)}{fix}")
    return tuple(labels)


def _read_onnx_with_onnx(path: Path) -> tuple[list[Any], list[Any], dict[str, str], str]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"model file {path} is not a valid ONNX file ({exc}); it is corrupt or not ONNX, "
                         "export or copy it again") from exc
    try:  # by path: external weight files resolve beside the model, not in the working directory
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {path} fails the ONNX checker ({first}); it is corrupt or hand-edited, "
                         "export it again") from exc
    weights = {init.name for init in model.graph.initializer}

    def describe(values: Any) -> list[tuple[str, str, tuple[Any, ...]]]:
        out = []
        for v in values:
            if v.name in weights:
                continue
            t = v.type.tensor_type
            dtype = _FLOAT if t.elem_type == onnx.TensorProto.FLOAT else \
                f"tensor({onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)})" if t.elem_type else "unknown"
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
            out.append((v.name, dtype, shape))
        return out

    ops = {node.op_type for node in model.graph.node}
    precision = "int8" if ops & QUANT_OPS else "fp32"
    metadata = {p.key: p.value for p in model.metadata_props}
    return describe(model.graph.input), describe(model.graph.output), metadata, precision


def _read_onnx_with_onnxruntime(path: Path) -> tuple[list[Any], list[Any], dict[str, str], str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped exceptions for every kind of bad file
        raise ModelError(f"model file {path} could not be loaded as ONNX ({exc}); it is corrupt or not ONNX, "
                         "export or copy it again") from exc

    def describe(values: Any) -> list[tuple[str, str, tuple[Any, ...]]]:
        return [(v.name, v.type, tuple(v.shape)) for v in values]

    metadata = dict(session.get_modelmeta().custom_metadata_map)
    precision = metadata.get("precision", "unknown").strip('"')
    return describe(session.get_inputs()), describe(session.get_outputs()), metadata, precision


def describe_engine(info: ModelInfo, metadata: dict[str, str],
                    outputs: list[tuple[str, str, tuple[Any, ...]]]) -> ModelInfo:
    """Complete an engine file's ``ModelInfo`` with its outputs (read from TensorRT) and the ONNX metadata it came from.

    ``metadata`` is what ``tensorrt_build`` saved beside the engine. Without it (an engine built elsewhere)
    the stride is 8, and an engine with a ``condition`` output is refused: its labels are unknown.
    """
    _check_outputs(info.path, outputs)
    stride, task, config = _metadata_fields(info.path, metadata)
    return replace(info, output_name=OUTPUT_NAME, output_names=tuple(o[0] for o in outputs), stride=stride,
                   precision=metadata.get("precision", info.precision).strip('"'), task=task, config=config,
                   metadata=metadata, condition_labels=_condition_labels(info.path, metadata, outputs))


def validate_model_file(path: str | os.PathLike[str], parser: str = "auto") -> ModelInfo:
    """Check ``path`` is a usable qdr model and describe it; raise ``ModelError`` saying what to fix.

    ``onnx.checker`` also refuses external weight files that point outside the model's folder.

    ``parser``: ``"onnx"``, ``"onnxruntime"`` or ``"auto"`` (``onnx`` when installed).
    """
    if parser not in ("auto", "onnx", "onnxruntime"):
        raise ValueError(f"parser must be 'auto', 'onnx' or 'onnxruntime', got {parser!r}")
    path = Path(path).expanduser()
    _check_file(path)
    sha, size = file_sha256(path), path.stat().st_size
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return ModelInfo(path=path, format="tensorrt_engine", sha256=sha, size_bytes=size)
    if parser == "auto":
        parser = "onnx" if importlib.util.find_spec("onnx") else "onnxruntime"
    reader = _read_onnx_with_onnx if parser == "onnx" else _read_onnx_with_onnxruntime
    inputs, outputs, metadata, precision = reader(path)
    _check_input(path, inputs)
    _check_outputs(path, outputs)
    stride, task, config = _metadata_fields(path, metadata)
    restored = next(o for o in outputs if o[0] == OUTPUT_NAME)
    return ModelInfo(path=path, format="onnx", sha256=sha, size_bytes=size,
                     input_name=inputs[0][0], output_name=OUTPUT_NAME, output_names=tuple(o[0] for o in outputs),
                     input_shape=inputs[0][2], output_shape=restored[2],
                     input_dtype="float32", output_dtype="float32", stride=stride, precision=precision,
                     task=task, config=config, metadata=metadata,
                     condition_labels=_condition_labels(path, metadata, outputs))
