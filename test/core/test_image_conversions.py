"""Frame buffer <-> tensor conversions: exact round trips, zero-copy views and every rejection reason."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qdr_ros.core.image_conversions import (
    ENCODINGS, FrameError, InputBuffer, alpha_channel, decode_compressed, downscale_to_fit, from_model_output,
    image_view, pad_to, padded_size, tensor_to_rgb_uint8, to_model_input)

RNG = np.random.default_rng(0)


def make_frame(height: int, width: int, encoding: str, pad: int = 0, bigendian: bool = False,
               rng: np.random.Generator = RNG) -> tuple[np.ndarray, bytes, int]:
    """Random pixels plus the ROS ``data`` bytes (rows padded by ``pad`` bytes) and ``step``."""
    spec = ENCODINGS[encoding]
    pixels = rng.integers(0, spec.max_value + 1, (height, width, spec.channels), dtype=spec.dtype)
    raw = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<")).view(np.uint8)
    raw = raw.reshape(height, -1)
    step = raw.shape[1] + pad
    rows = np.zeros((height, step), np.uint8)
    rows[:, :raw.shape[1]] = raw
    return pixels, rows.tobytes(), step


def round_trip(pixels: np.ndarray, data: bytes, step: int, encoding: str, bigendian: bool = False) -> np.ndarray:
    height, width = pixels.shape[:2]
    view = image_view(data, height, width, encoding, step, bigendian)
    x, (h, w) = to_model_input(view, encoding)
    return from_model_output(x, h, w, encoding, alpha=alpha_channel(view, encoding))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3, 64])
def test_round_trip_is_exact_for_every_encoding(encoding: str, pad: int) -> None:
    pixels, data, step = make_frame(37, 53, encoding, pad)
    out = round_trip(pixels, data, step, encoding)
    assert out.dtype == ENCODINGS[encoding].dtype
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("encoding", ["mono16", "rgb16", "bgra16"])
def test_big_endian_16_bit_reads_and_round_trips(encoding: str) -> None:
    pixels, data, step = make_frame(9, 11, encoding, pad=2, bigendian=True)
    view = image_view(data, 9, 11, encoding, step, is_bigendian=True)
    np.testing.assert_array_equal(view, pixels)
    np.testing.assert_array_equal(round_trip(pixels, data, step, encoding, bigendian=True), pixels)
    little = image_view(data, 9, 11, encoding, step, is_bigendian=False)
    assert not np.array_equal(little, pixels)


def test_big_endian_flag_is_ignored_for_8_bit() -> None:
    pixels, data, step = make_frame(5, 7, "rgb8")
    np.testing.assert_array_equal(image_view(data, 5, 7, "rgb8", step, is_bigendian=True), pixels)


def test_16_bit_scales_like_8_bit_divided_by_257() -> None:
    pixels = np.array([[[0], [257], [32896], [65535]]], np.uint16)
    x, _ = to_model_input(pixels, "mono16", stride=1)
    np.testing.assert_allclose(x[0, 0, 0], [0, 1 / 255, 128 / 255, 1.0], rtol=1e-6)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("source", [bytes, bytearray, lambda b: array.array("B", b), memoryview])
def test_view_shares_memory_with_the_message_buffer(pad: int, source) -> None:
    pixels, data, step = make_frame(12, 10, "bgr8", pad)
    buffer = source(data)
    view = image_view(buffer, 12, 10, "bgr8", step)
    assert np.shares_memory(view, np.frombuffer(buffer, np.uint8))
    np.testing.assert_array_equal(view, pixels)


def test_view_of_16_bit_padded_frame_shares_memory() -> None:
    pixels, data, step = make_frame(6, 4, "rgb16", pad=3)
    view = image_view(data, 6, 4, "rgb16", step)
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    np.testing.assert_array_equal(view, pixels)


def test_operator_message_for_short_step() -> None:
    with pytest.raises(FrameError) as err:
        image_view(bytes(1000 * 480), 480, 640, "rgb8", 1000)
    assert err.value.reason_code == "bad_step"
    assert str(err.value) == "frame 640x480 rgb8 needs step >= 1920 bytes, got 1000; fix the camera driver's step"


GOOD = {"data": bytes(4 * 6 * 3), "height": 4, "width": 6, "encoding": "rgb8", "step": 18}
BAD_FRAMES = [
    ("unknown_encoding", {"encoding": "rgb9"}),
    ("unknown_encoding", {"encoding": ""}),
    ("unsupported_encoding", {"encoding": "32FC1"}),
    ("unsupported_encoding", {"encoding": "32FC3"}),
    ("unsupported_encoding", {"encoding": "8UC3"}),
    ("unsupported_encoding", {"encoding": "16UC1"}),
    ("unsupported_encoding", {"encoding": "bayer_rggb8"}),
    ("unsupported_encoding", {"encoding": "yuv422"}),
    ("empty_frame", {"height": 0, "data": b""}),
    ("empty_frame", {"width": 0, "step": 0, "data": b""}),
    ("bad_header", {"height": -4}),
    ("bad_header", {"width": 6.0}),
    ("bad_header", {"step": None}),
    ("too_large", {"height": 5000, "width": 5000, "step": 15000}),
    ("bad_step", {"step": 17}),
    ("bad_data_size", {"data": bytes(4 * 18 - 1)}),
    ("bad_data_size", {"data": bytes(4 * 18 + 1)}),
    ("bad_data_size", {"step": 20}),
    ("bad_data", {"data": None}),
    ("bad_data", {"data": "not bytes"}),
]


@pytest.mark.parametrize(("reason", "change"), BAD_FRAMES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_FRAMES)])
def test_bad_frames_are_rejected_with_a_reason_code(reason: str, change: dict) -> None:
    with pytest.raises(FrameError) as err:
        image_view(**{**GOOD, **change})
    assert err.value.reason_code == reason
    assert len(str(err.value)) > 20


def test_max_pixels_is_a_parameter() -> None:
    image_view(**GOOD, max_pixels=24)
    with pytest.raises(FrameError) as err:
        image_view(**GOOD, max_pixels=23)
    assert err.value.reason_code == "too_large"
    assert "max_pixels" in str(err.value)


def test_to_model_input_rejects_an_array_of_the_wrong_layout() -> None:
    with pytest.raises(FrameError) as err:
        to_model_input(np.zeros((4, 4, 3), np.uint8), "rgba8")
    assert err.value.reason_code == "bad_shape"
    with pytest.raises(FrameError):
        to_model_input(np.zeros((4, 4, 3), np.float32), "rgb8")


def test_odd_size_is_padded_by_reflection_and_cropped_back() -> None:
    pixels, data, step = make_frame(37, 53, "rgb8")
    x, hw = to_model_input(image_view(data, 37, 53, "rgb8", step), "rgb8")
    assert x.shape == (1, 3, 40, 56) and x.dtype == np.float32 and hw == (37, 53)
    assert x.min() >= 0.0 and x.max() <= 1.0
    ref = np.pad(pixels.astype(np.float32) / 255, ((0, 3), (0, 3), (0, 0)), mode="reflect").transpose(2, 0, 1)
    np.testing.assert_array_equal(x[0], ref)
    assert from_model_output(x, *hw, "rgb8").shape == (37, 53, 3)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 9), (2, 3), (8, 8)])
def test_tiny_frames_pad_without_error(height: int, width: int) -> None:
    pixels, data, step = make_frame(height, width, "mono8")
    x, hw = to_model_input(image_view(data, height, width, "mono8", step), "mono8")
    assert x.shape == (1, 3, *padded_size(height, width))
    np.testing.assert_array_equal(from_model_output(x, *hw, "mono8"), pixels)


def test_input_buffer_reuses_its_array_per_size() -> None:
    buffer = InputBuffer()
    a, _ = buffer.convert(np.zeros((30, 30, 3), np.uint8), "rgb8")
    b, _ = buffer.convert(np.ones((30, 30, 3), np.uint8), "rgb8")
    c, _ = buffer.convert(np.ones((50, 30, 3), np.uint8), "rgb8")
    assert a is b and c is not a and c.shape == (1, 3, 56, 32)
    with pytest.raises(ValueError):
        to_model_input(np.zeros((30, 30, 3), np.uint8), "rgb8", out=np.empty((1, 3, 30, 30), np.float32))


def test_output_clamps_rounds_half_to_even_and_fills_alpha() -> None:
    y = np.zeros((1, 3, 8, 8), np.float32)
    y[0, 0, 0, :4] = [-0.5, 1.5, 0.5 / 255, 2.5 / 255]
    out = from_model_output(y, 1, 4, "bgra8")
    np.testing.assert_array_equal(out[0, :, 2], [0, 255, 0, 2])
    np.testing.assert_array_equal(out[..., 3], 255)
    alpha = np.arange(4, dtype=np.uint8).reshape(1, 4)
    np.testing.assert_array_equal(from_model_output(y, 1, 4, "rgba8", alpha=alpha)[..., 3], alpha)


def test_mono_output_is_bt601_luminance() -> None:
    y = np.zeros((3, 8, 8), np.float32)
    y[0], y[1], y[2] = 1.0, 0.5, 0.0
    out = from_model_output(y, 8, 8, "mono8")
    assert out.shape == (8, 8, 1)
    assert out[0, 0, 0] == np.rint(255 * (0.299 + 0.587 * 0.5))


def test_output_rejects_batches_and_small_arrays() -> None:
    with pytest.raises(ValueError):
        from_model_output(np.zeros((2, 3, 8, 8), np.float32), 8, 8, "rgb8")
    with pytest.raises(ValueError):
        from_model_output(np.zeros((1, 3, 8, 8), np.float32), 9, 8, "rgb8")


def test_training_helpers_match_the_node_path() -> None:
    image = RNG.integers(0, 256, (13, 21, 3), dtype=np.uint8)
    x, _ = to_model_input(image, "rgb8", stride=1)
    assert x.shape == (1, 3, 13, 21) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], image.transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(tensor_to_rgb_uint8(x), image)
    np.testing.assert_array_equal(tensor_to_rgb_uint8(x[0]), image)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(tensor_to_rgb_uint8(torch.from_numpy(x).requires_grad_()), image)


def test_decode_compressed_png_and_jpeg() -> None:
    image = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", image)
    decoded, encoding = decode_compressed(png.tobytes(), "png")
    assert encoding == "bgr8"
    np.testing.assert_array_equal(decoded, image)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    decoded, _ = decode_compressed(array.array("B", jpeg.tobytes()), "mono8; jpeg compressed mono8")
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8


@pytest.mark.parametrize(("data", "fmt", "reason"), [
    (b"", "jpeg", "empty_compressed"),
    (bytes(RNG.integers(0, 256, 500, dtype=np.uint8)), "jpeg", "decode_failed"),
    (b"\xff\xd8\xff\xe0 truncated jpeg", "jpeg", "decode_failed"),
    (b"\x89PNG\r\n\x1a\n", "png", "decode_failed"),
    (b"1234", "16UC1; compressedDepth png", "unsupported_format"),
    (None, "jpeg", "bad_data"),
])
def test_decode_compressed_rejects_bad_payloads(data: bytes, fmt: str, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        decode_compressed(data, fmt)
    assert err.value.reason_code == reason


def test_a_jpeg_header_claiming_a_huge_frame_is_a_rejected_frame() -> None:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(jpeg.tobytes())
    sof = data.index(b"\xff\xc0")  # baseline start of frame: length(2) precision(1) height(2) width(2)
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2  # 60000 x 60000: above OpenCV's own pixel limit
    with pytest.raises(FrameError) as err:
        decode_compressed(bytes(data), "jpeg")
    assert err.value.reason_code == "decode_failed"


def test_decode_compressed_enforces_max_pixels() -> None:
    ok, png = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(FrameError) as err:
        decode_compressed(png.tobytes(), "png", max_pixels=599)
    assert err.value.reason_code == "too_large"


def test_downscale_to_fit() -> None:
    image = RNG.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    assert downscale_to_fit(image, 20000) == (image, 1.0)
    small, scale = downscale_to_fit(image, 5000)
    assert small.shape[0] * small.shape[1] <= 5000 and small.shape == (50, 100, 3) and scale == 0.5
    column = RNG.integers(0, 256, (100, 1, 3), dtype=np.uint8)
    small, scale = downscale_to_fit(column, 64)  # one pixel wide: the width stays, the frame still shrank
    assert small.shape == (80, 1, 3) and scale < 1.0
    pixels, data, step = make_frame(64, 64, "mono16", pad=2, bigendian=True)
    small, _ = downscale_to_fit(image_view(data, 64, 64, "mono16", step, True), 1024)
    assert small.shape == (32, 32, 1) and small.dtype == np.uint16
    expected = pixels.astype(np.float64).reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.abs(small[..., 0] - expected).max() <= 1


@settings(max_examples=80, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), encoding=st.sampled_from(sorted(ENCODINGS)),
       pad=st.integers(0, 9), bigendian=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_round_trip_property(height: int, width: int, encoding: str, pad: int, bigendian: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    big = bigendian and ENCODINGS[encoding].dtype == np.uint16
    pixels, data, step = make_frame(height, width, encoding, pad, big, rng)
    view = image_view(data, height, width, encoding, step, bigendian)
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    x, hw = to_model_input(view, encoding)
    assert x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0 and hw == (height, width)
    np.testing.assert_array_equal(from_model_output(x, *hw, encoding, alpha=alpha_channel(view, encoding)), pixels)


@given(st.integers(1, 30), st.integers(1, 30), st.sampled_from([1, 4, 8]))
@settings(max_examples=60, deadline=None)
def test_pad_to_pads_like_the_model_input(height: int, width: int, stride: int) -> None:
    """The uint8 path pads with the same reflection as the float path (and not at all when aligned)."""
    frame = np.random.default_rng(height * 31 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    padded = pad_to(frame, *padded_size(height, width, stride))
    assert padded.shape[:2] == padded_size(height, width, stride)
    x, _ = to_model_input(padded, "rgb8", stride=1)
    y, _ = to_model_input(frame, "rgb8", stride=stride)
    np.testing.assert_array_equal(x, y)
    if (height % stride, width % stride) == (0, 0):
        assert padded is frame


def test_pad_to_pads_frames_and_nchw_tensors_alike() -> None:
    """An NCHW tensor padded on axes (2, 3) equals the tensor of the HxWxC frame padded on (0, 1)."""
    frame = np.random.default_rng(9).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    x, _ = to_model_input(frame, "rgb8", stride=1)
    padded_frame = pad_to(frame, 16, 12)
    assert padded_frame.shape == (16, 12, 3) and pad_to(frame, 5, 3) is frame
    np.testing.assert_array_equal(pad_to(x, 16, 12, axes=(2, 3)), to_model_input(padded_frame, "rgb8", stride=1)[0])
    np.testing.assert_array_equal(padded_frame[:5, :3], frame)
    with pytest.raises(ValueError, match="adjacent"):
        pad_to(x, 16, 12, axes=(1, 3))
