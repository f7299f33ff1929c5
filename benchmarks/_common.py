"""Shared helpers for benchmarks: every figure is one ``metric: value unit`` line."""

from __future__ import annotations

import os
import platform


def cores() -> int:
    return os.cpu_count() or 1


def header(name: str) -> None:
    print(f"benchmark: {name}")
    print(f"cores: {cores()} cpu")
    print(f"python: {platform.python_version()} version")


def report(metric: str, value: float, unit: str) -> None:
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    print(f"{metric}: {text} {unit}", flush=True)
