"""Measurement of information channels, and `open_runs`: finished runs in a notebook.

`from channels import open_runs` is the one entry point for reading finished runs in Python
(`channels.results`); it is imported on first use, so `import channels.<module>` stays light.
"""
from __future__ import annotations

__all__ = ["Runs", "open_runs"]


def __getattr__(name: str):
    if name in __all__:
        from channels import results

        return getattr(results, name)
    raise AttributeError(f"module 'channels' has no attribute {name!r}")
