"""Fixtures of the node tests: tiny real EFM models and one rclpy context per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
import torch

from qdr_train.export.cpu_variant import to_cpu_variant
from qdr_train.export.onnx import export_onnx
from qdr_train.models import build_model
from qdr_train.quant import calibrate, prepare_qat


@pytest.fixture(scope='module')
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An INT8 EFM (with its CPU twin), a second valid FP32 model and a corrupt file."""
    root = tmp_path_factory.mktemp('restore_models')
    torch.manual_seed(0)
    model = build_model({'type': 'EFM', 'widths': [8, 8, 16], 'num_blocks': 1}).eval()
    fp32 = export_onnx(model, root / 'efm_fp32.onnx', metadata={'task': 'denoise', 'precision': 'fp32', 'stride': 8})
    qat = calibrate(prepare_qat(model), [torch.rand(1, 3, 32, 32) for _ in range(2)], progress=False)
    int8 = export_onnx(qat, root / 'efm_int8.onnx', metadata={'task': 'denoise', 'precision': 'int8', 'stride': 8})
    to_cpu_variant(int8, root / 'efm_int8_cpu.onnx')
    corrupt = root / 'corrupt.onnx'
    corrupt.write_bytes(b'\x08\x07not an onnx protobuf' * 64)
    return {'int8': int8, 'fp32': fp32, 'corrupt': corrupt}


@pytest.fixture(scope='module')
def context() -> Iterator[Context]:
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()
