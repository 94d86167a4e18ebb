"""The workspace folder: where a build keeps its offline store, models, indexes and online store."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortlist.config import CONFIG_FILE, Settings, default_config_text, load_settings
from shortlist.errors import WorkspaceError

DEFAULT_WORKSPACE = "workspace"


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace; nothing here reads data, so opening one is free."""

    root: Path

    @property
    def offline(self) -> Path:
        return self.root / "offline"

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    def settings(self, overrides: dict[str, Any] | None = None) -> Settings:
        return load_settings(self.root, overrides)

    def init(self) -> Path:
        """Create the folder and a commented shortlist.toml (kept if one exists)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.config_path.write_text(default_config_text())
        return self.config_path


def open_workspace(path: str | Path | None = None) -> Workspace:
    """The workspace at `path`, else $SHORTLIST_WORKSPACE, else ./workspace.

    Raises:
        WorkspaceError: the path exists and is not a folder.
    """
    chosen = Path(path or os.environ.get("SHORTLIST_WORKSPACE") or DEFAULT_WORKSPACE)
    if chosen.exists() and not chosen.is_dir():
        raise WorkspaceError(f"workspace {chosen} exists and is not a folder")
    return Workspace(chosen.resolve())


def file_digest(*paths: Path) -> str:
    """A short content hash of files, in order: the fingerprint that ties saved artefacts (a
    model, the index built from it, the ranker trained with both) to each other."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]
