"""A weather schedule for a replayed stream: which condition each frame shows.

``['clean:8', 'derain:8', 'dehaze:8', 'night:8', 'clean:8']`` means eight frames of each, in that
order, then again from the start. Conditions are the training degradations (``denoise``,
``derain``, ``lowlight``, ``dehaze``, ``night``, ``rain_haze``) or ``clean``. The camera source uses
it to show a node a robot's day in a minute; the condition of a frame travels in its name
(``<name>@<condition>``) so a listener knows the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

CONDITIONS = ('clean', 'denoise', 'derain', 'lowlight', 'dehaze', 'night', 'rain_haze')
SEPARATOR = '@'


@dataclass(frozen=True)
class Schedule:
    """Conditions and how many frames each lasts, looping."""

    steps: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, entries: list[str] | tuple[str, ...]) -> Schedule:
        """Parse ``condition:frames`` entries; a bad entry raises ValueError saying how to write it."""
        steps = []
        for entry in entries:
            condition, _, count = entry.partition(':')
            condition = condition.strip()
            if condition not in CONDITIONS:
                raise ValueError(f'schedule entry {entry!r}: unknown condition {condition!r}; '
                                 f'known: {", ".join(CONDITIONS)} (write condition:frames, e.g. derain:8)')
            try:
                frames = int(count)
            except ValueError:
                raise ValueError(f'schedule entry {entry!r}: frames must be a whole number (e.g. {condition}:8)') \
                    from None
            if frames < 1:
                raise ValueError(f'schedule entry {entry!r}: frames must be at least 1')
            steps.append((condition, frames))
        if not steps:
            raise ValueError('schedule is empty; give entries such as clean:8 derain:8')
        return cls(tuple(steps))

    @property
    def period(self) -> int:
        """Frames in one pass through the schedule."""
        return sum(frames for _, frames in self.steps)

    def condition(self, index: int) -> str:
        """Return the condition of frame ``index`` (0-based, counting every published frame)."""
        position = index % self.period
        for condition, frames in self.steps:
            if position < frames:
                return condition
            position -= frames
        raise AssertionError('unreachable: position is below the period')


def tagged(name: str, condition: str) -> str:
    """Return the frame name carrying its condition."""
    return f'{name}{SEPARATOR}{condition}'


def condition_of(name: str) -> str | None:
    """Return the condition a tagged frame name carries, or None."""
    tail = name.rsplit(SEPARATOR, 1)[-1] if SEPARATOR in name else None
    return tail if tail in CONDITIONS else None
