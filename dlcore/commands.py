"""The commands a :class:`dlcore.trainer.Trainer` queues for its worker thread.

Each is a small frozen value; the worker looks up its handler by type
(``dlcore.run.HANDLERS``) and applies it between two training steps. Commands that a
caller waits for carry a :class:`Reply`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class Reply:
    """A caller waiting for the worker to finish its command."""

    def __init__(self):
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None

    def wait(self, timeout: float = 60.0):
        if not self.done.wait(timeout):
            raise TimeoutError("the training thread did not answer in time")
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(frozen=True)
class Train:
    """Train ``steps`` steps then pause, or until paused (None)."""

    steps: int | None


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Update:
    """Hyperparameter changes and run settings, as ``Trainer.update`` takes them."""

    changes: Mapping
    source: str = "user"


@dataclass(frozen=True)
class Checkpoint:
    note: str


@dataclass(frozen=True)
class Rollback:
    """Restore a checkpoint read and checked by the caller (``state`` built from it)."""

    meta: Mapping
    state: object
    changes: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Adopt:
    """Continue from a sandbox's state: ``Sandbox.commit_payload()``; ``note`` says where
    it came from (a look-ahead candidate, a search trial)."""

    payload: tuple
    note: str = "look-ahead candidate committed"


@dataclass(frozen=True)
class Export:
    pass


@dataclass(frozen=True)
class Delete:
    path: Path


@dataclass(frozen=True)
class Stop:
    pass
