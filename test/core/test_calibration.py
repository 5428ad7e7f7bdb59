"""Calibration files in the camera_info_manager format: read, scaled to the published size, refused when malformed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qdr_ros.core.calibration import CalibrationError, load_calibration, pinhole_guess

# What camera_calibration writes (ost.yaml), for a 640x480 camera.
OST = {
    'image_width': 640, 'image_height': 480, 'camera_name': 'narrow_stereo',
    'camera_matrix': {'rows': 3, 'cols': 3, 'data': [500.5, 0, 320.25, 0, 501.0, 240.5, 0, 0, 1]},
    'distortion_model': 'plumb_bob',
    'distortion_coefficients': {'rows': 1, 'cols': 5, 'data': [-0.1, 0.01, 0.001, -0.002, 0]},
    'rectification_matrix': {'rows': 3, 'cols': 3, 'data': [1, 0, 0, 0, 1, 0, 0, 0, 1]},
    'projection_matrix': {'rows': 3, 'cols': 4, 'data': [490.0, 0, 321.0, 0, 0, 495.0, 241.0, 0, 0, 0, 1, 0]},
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / 'camera.yaml'
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_a_camera_calibration_file_is_read_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, OST)
    for url in (str(path), f'file://{path}'):
        c = load_calibration(url)
        assert (c.width, c.height, c.camera_name, c.distortion_model) == (640, 480, 'narrow_stereo', 'plumb_bob')
        assert c.k == (500.5, 0, 320.25, 0, 501.0, 240.5, 0, 0, 1) and c.d == (-0.1, 0.01, 0.001, -0.002, 0)
        assert c.p[:3] == (490.0, 0, 321.0) and c.r[0] == c.r[4] == c.r[8] == 1
    half = load_calibration(str(path)).scaled(320, 240)
    assert (half.width, half.height) == (320, 240)
    assert (half.k[0], half.k[2], half.k[4], half.k[5], half.k[8]) == (250.25, 160.125, 250.5, 120.25, 1.0)
    assert (half.p[0], half.p[2], half.p[5], half.p[6], half.p[10]) == (245.0, 160.5, 247.5, 120.5, 1.0)
    assert half.d == load_calibration(str(path)).d


def test_the_default_is_a_centred_pinhole_with_a_60_degree_field_of_view() -> None:
    c = pinhole_guess(640, 480)
    assert c.k[0] == pytest.approx(320 / 0.57735, rel=1e-4) and c.k[0] == c.k[4]
    assert (c.k[2], c.k[5], c.distortion_model, c.d) == (319.5, 239.5, 'plumb_bob', (0.0,) * 5)
    assert c.p[:3] == c.k[:3] and c.p[4:7] == (0.0, c.k[4], c.k[5])


def changed(**updates: object) -> dict:
    data = dict(OST)
    for key, value in updates.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


@pytest.mark.parametrize('data, message', [
    (changed(camera_matrix=None), 'camera_matrix must be a mapping with rows, cols and data'),
    (changed(projection_matrix={'rows': 3, 'cols': 3, 'data': [0] * 9}), 'projection_matrix must be 3x4'),
    (changed(camera_matrix={'rows': 3, 'cols': 3, 'data': [1, 2, 3]}), 'says 3x3 but data has 3 values'),
    (changed(rectification_matrix={'rows': 3, 'cols': 3, 'data': ['a'] * 9}), 'must be a list of numbers'),
    (changed(distortion_coefficients={'rows': 1, 'cols': 4, 'data': [0] * 4}), 'plumb_bob takes 5 coefficients'),
    (changed(image_width=-640), 'image_width must be a positive integer'),
    (changed(image_height=None), 'image_height must be a positive integer'),
    (changed(distortion_model=''), 'distortion_model must name a model'),
    ([1, 2, 3], 'expected a camera_info_manager calibration'),
    ('image_width: [640\n', 'is not valid YAML'),
])
def test_malformed_files_say_what_is_wrong(tmp_path: Path, data: object, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(CalibrationError) as error:
        load_calibration(str(path))
    assert str(path) in str(error.value) and message in str(error.value), error.value


def test_unreadable_locations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match='cannot read calibration file .*missing.yaml'):
        load_calibration(str(tmp_path / 'missing.yaml'))
    with pytest.raises(CalibrationError, match='only file paths and file:// URLs'):
        load_calibration('package://my_robot/config/camera.yaml')
    other = changed(distortion_model='kannala_brandt', distortion_coefficients={'rows': 1, 'cols': 4, 'data': [0] * 4})
    assert load_calibration(str(write(tmp_path, other))).d == (0.0,) * 4  # other models pass as given
