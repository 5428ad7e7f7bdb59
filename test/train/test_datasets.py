"""Image folders as sets: one folder, or a glob of folders whose shared photos count once."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from qdr_train.data.datasets import list_images, refuse_held_out, shared_images


def _write(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((4, 4, 3), value, np.uint8))


def test_a_glob_of_folders_is_one_set_with_each_name_once(tmp_path: Path) -> None:
    _write(tmp_path / "set_b" / "val" / "photo_1.png", 1)
    _write(tmp_path / "set_a" / "train" / "photo_1.png", 2)  # the same photo in a second sample set
    _write(tmp_path / "set_a" / "train" / "photo_2.png", 3)
    (tmp_path / "set_a" / "train" / "notes.txt").write_text("not an image")
    found = list_images(tmp_path / "set_*" / "*")
    assert found == [tmp_path / "set_a" / "train" / "photo_1.png", tmp_path / "set_a" / "train" / "photo_2.png"]
    assert list_images(tmp_path / "set_b" / "val") == [tmp_path / "set_b" / "val" / "photo_1.png"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "set_c*" / "*")
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(tmp_path / "set_a")  # folders only: the glob is explicit, a folder is not searched below


def test_evaluation_images_are_found_however_data_train_names_them(tmp_path: Path) -> None:
    """A glob, ./ or a trailing slash names the same photos: compared as files, not folder names."""
    for folder in ("clean/Kodak24", "clean/Set5"):
        (tmp_path / folder).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((8, 8, 3), np.uint8))  # one name, two photos
    kodak = (tmp_path / "clean" / "Kodak24" / "a.png").resolve()
    for train in (["clean/*"], ["./clean/Kodak24/"], ["clean/Set5", "clean/Kodak24"]):
        assert shared_images(tmp_path, train, "clean/Kodak24") == [kodak], train
    assert shared_images(tmp_path, ["clean/Set5"], "clean/Kodak24") == []
    with pytest.raises(ValueError, match="evaluation set clean/Kodak24"):
        refuse_held_out(tmp_path, ["clean/*"])
    refuse_held_out(tmp_path, ["clean/Set5"])
