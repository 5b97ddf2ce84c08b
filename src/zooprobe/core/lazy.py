"""Package names imported on first use (PEP 562), so ``import zooprobe`` and the torch-free config modules
load without torch: a package's ``__init__`` maps each public name to the module that defines it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for `package`: a name of `exports` is imported from its module on first
    access and stored in the package's `namespace` (later lookups skip the function)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__


def exports_by_module(groups: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The ``exports`` of `lazy_exports` (name -> module) from each module's public names, so that a
    package's ``__init__`` lists every module once."""
    exports: dict[str, str] = {}
    for module, names in groups.items():
        for name in names:
            if name in exports:
                raise ValueError(f"{name!r} is exported from both {exports[name]} and {module}")
            exports[name] = module
    return exports


__all__ = ["exports_by_module", "lazy_exports"]
