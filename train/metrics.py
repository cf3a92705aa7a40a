"""Where scalars go: TensorBoard under train/, eval/, loss/ and perf/, behind a small protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from torch.utils.tensorboard import SummaryWriter


class MetricsWriter(Protocol):
    """Receives named scalars at an environment step."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Record ``values`` (names like ``eval/return_mean``) at ``step``."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


class TensorBoardWriter:
    """A :class:`MetricsWriter` writing TensorBoard event files into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self._writer = SummaryWriter(log_dir=str(directory))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Record ``values`` at ``step``."""
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
