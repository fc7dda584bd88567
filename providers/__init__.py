"""Provider drivers, looked up by the name a pool's ``provider`` field gives."""

from __future__ import annotations

from pathlib import Path

from providers.base import Provider

KNOWN_PROVIDERS = ("local",)


def make_provider(name: str, *, state_dir: str | Path, cluster: str) -> Provider:
    if name == "local":
        from providers.local import LocalProvider

        return LocalProvider(state_dir, cluster)
    raise ValueError(f"unknown provider {name!r}; known: {', '.join(KNOWN_PROVIDERS)}")
