"""Capacity providers, chosen by INFERENCEKEY_CLOUD_PROVIDER: `local` (default), `skypilot`,
`kubernetes`. See base.py for the interface."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import CapacityProvider

PROVIDERS = ("local", "skypilot", "kubernetes")
_override: CapacityProvider | None = None  # tests install a fake provider here


def use(provider: CapacityProvider | None) -> None:
    """Install `provider` for this process (None: back to the configured one)."""
    global _override
    _override = provider


def get_provider(name: str | None = None) -> CapacityProvider:
    if _override is not None and name is None:
        return _override
    name = name or settings.CLOUD_PROVIDER
    if name == "local":
        from .local import LocalProvider

        return LocalProvider(settings.DATA_DIR / "cloud-local", agent_path=settings.CLOUD_AGENT_PATH,
                             protect_dirs=str(settings.DATA_DIR))
    if name == "skypilot":
        from .skypilot import SkyPilotProvider

        return SkyPilotProvider()
    if name == "kubernetes":
        from .kubernetes import KubernetesProvider

        return KubernetesProvider.from_settings()
    raise ImproperlyConfigured(f"INFERENCEKEY_CLOUD_PROVIDER={name!r}: expected one of {', '.join(PROVIDERS)}")
