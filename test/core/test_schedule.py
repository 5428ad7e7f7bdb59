"""Weather schedules: parsing, looping, and errors that say how to write an entry."""

from __future__ import annotations

import pytest

from qdr_ros.core.schedule import Schedule, condition_of, tagged


def test_frames_follow_the_schedule_and_loop() -> None:
    schedule = Schedule.parse(['clean:2', 'derain:3', 'night:1'])
    assert schedule.period == 6
    expected = ['clean', 'clean', 'derain', 'derain', 'derain', 'night', 'clean', 'clean']
    assert [schedule.condition(i) for i in range(8)] == expected


def test_names_carry_the_condition() -> None:
    assert condition_of(tagged('bus.jpg@pass1', 'rain_haze')) == 'rain_haze'
    assert condition_of('bus.jpg@pass1') is None


@pytest.mark.parametrize('entries, message', [(['fog:3'], 'unknown condition'), (['dehaze:x'], 'whole number'),
                                              (['dehaze:0'], 'at least 1'), ([], 'empty')])
def test_bad_entries_say_how_to_write_them(entries: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule.parse(entries)
