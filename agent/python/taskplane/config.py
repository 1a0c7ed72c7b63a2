"""Which domains and task types an agent serves, read from the environment
as the Rust agent reads it.

- ``TASK_ENABLED_DOMAINS``: comma-separated domains to serve (unset: every
  domain the registry has).
- ``TASK_DISABLED_TYPES``: comma-separated task types to leave out.
- ``TASK_FEATURE_FLAGS``: ``name:true,other:false``; handlers read them with
  ``ctx.feature_enabled(name)`` and operators see them on the agent.
- ``TASK_STRICT_CONFIG``: ``true`` refuses to start when an enabled domain
  has no handlers (otherwise a warning).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from .errors import ConfigError


def _split(value: Optional[str]) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _flags(value: Optional[str]) -> dict[str, bool]:
    flags = {}
    for pair in _split(value):
        name, sep, setting = pair.partition(":")
        if not sep or setting.strip() not in ("true", "false") or not name.strip():
            raise ConfigError(
                f"TASK_FEATURE_FLAGS: '{pair}' is not a flag: write name:true or name:false, comma-separated"
            )
        flags[name.strip()] = setting.strip() == "true"
    return flags


@dataclass
class RegistryConfig:
    """Which handlers a registry keeps, and the agent's feature flags."""

    #: Domains to serve; ``None``: every domain registered.
    enabled_domains: Optional[list[str]] = None
    #: Task types to leave out.
    disabled_task_types: list[str] = field(default_factory=list)
    #: Feature flags, sent with the registration and read by handlers.
    feature_flags: dict[str, bool] = field(default_factory=dict)
    #: Refuse to start on an enabled domain without handlers.
    strict: bool = False

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "RegistryConfig":
        """The configuration in ``environ`` (default: the process environment)."""
        env: Callable[[str], Optional[str]] = (environ if environ is not None else os.environ).get
        strict = (env("TASK_STRICT_CONFIG") or "false").strip()
        if strict not in ("true", "false", ""):
            raise ConfigError(f"TASK_STRICT_CONFIG: '{strict}' is not a boolean: write true or false")
        domains = env("TASK_ENABLED_DOMAINS")
        return cls(
            enabled_domains=_split(domains) if domains is not None else None,
            disabled_task_types=_split(env("TASK_DISABLED_TYPES")),
            feature_flags=_flags(env("TASK_FEATURE_FLAGS")),
            strict=strict == "true",
        )

    def serves(self, domain: str, task_type: str) -> bool:
        """Whether a handler of ``task_type`` in ``domain`` is kept."""
        enabled = self.enabled_domains is None or domain in self.enabled_domains
        return enabled and task_type not in self.disabled_task_types

    def feature_enabled(self, flag: str) -> bool:
        """Whether a feature flag is on (unset flags are off)."""
        return self.feature_flags.get(flag, False)
