"""A TrialSession without Ray: checkpoints go to numbered folders, metrics to a list."""

from __future__ import annotations

import os
import shutil
from typing import Any

from trainables.checkpoint import load_checkpoint


class DirSession:
    """Keeps every reported checkpoint as ``root/epoch-N`` and can resume from any of them."""

    def __init__(self, root: str, resume_from: str | None = None) -> None:
        self.root = root
        self.resume_from = resume_from
        self.reports: list[dict[str, Any]] = []

    def restore(self) -> dict[str, Any] | None:
        return load_checkpoint(self.resume_from) if self.resume_from else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        dest = os.path.join(self.root, f"epoch-{metrics['epoch']}")
        shutil.copytree(checkpoint_dir, dest)
        self.reports.append(dict(metrics))
