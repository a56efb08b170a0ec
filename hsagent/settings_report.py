"""`hsagent check`: the settings in force, each with where it came from."""

from __future__ import annotations

import dataclasses

from .settings import Settings


def _value_text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or "(none)"
    if hasattr(value, "items"):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(none)"
    return str(value)


def report(settings: Settings) -> str:
    rows = [(f.name, _value_text(getattr(settings, f.name)), settings.origin(f.name))
            for f in dataclasses.fields(settings) if f.name != "origins"]
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}  [{origin}]" for name, value, origin in rows)
