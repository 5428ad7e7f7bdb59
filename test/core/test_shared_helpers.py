"""The helpers every report writer shares: percentiles, atomic writes and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qdr_ros.core import plots
from qdr_ros.core.atomic import atomic_open, atomic_write
from qdr_ros.core.stats import percentiles


def test_percentiles_are_plain_floats_and_none_without_samples() -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    found = percentiles(values, (50, 95, 99))
    assert found == pytest.approx(tuple(np.percentile(values, [50, 95, 99])))
    assert all(type(v) is float for v in found)
    assert percentiles([]) is None and percentiles(iter(())) is None
    assert percentiles(iter([2.0, 4.0])) == (3.0, pytest.approx(3.9))


def test_an_interrupted_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / 'sub' / 'report.json', '{"old": 1}')
    plain = tmp_path / 'plain.json'
    plain.write_text('{}')
    assert target.stat().st_mode == plain.stat().st_mode, 'an atomic write must not change the file mode'
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target, 'w') as f:
            f.write('{"new": ')
            raise KeyboardInterrupt
    assert target.read_text() == '{"old": 1}'
    assert [p.name for p in target.parent.iterdir()] == ['report.json']
    with pytest.raises(ValueError, match='whole files'):
        with atomic_open(target, 'a'):
            pass


def test_a_figure_is_saved_whole_and_closed(tmp_path: Path) -> None:
    plt = plots.pyplot()
    assert plots.missing() is None and plt.get_backend().lower() == 'agg'
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    path = plots.save(fig, tmp_path / 'out' / 'figure.png')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert [p.name for p in path.parent.iterdir()] == ['figure.png']
    assert not plt.fignum_exists(fig.number)
