"""Lazy package exports (PEP 562), so importing a package does not import all of its modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``name`` from ``exports[name]`` on first use.

    Keeps ``import elmsearch`` and ``import indexer`` cheap: a text query never pays for
    scipy or MNE, which only reading and preprocessing EEG need.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


class _LazyModule:
    """Stands in for a module in one namespace until its first attribute is read (``lazy_module``)."""

    def __init__(self, name: str, namespace: dict, alias: str):
        self._where = (name, namespace, alias)

    def __getattr__(self, attr: str):
        name, namespace, alias = self._where
        module = importlib.import_module(name)
        namespace[alias] = module  # later reads of ``alias`` in that module get the module itself
        return getattr(module, attr)


def lazy_module(name: str, namespace: dict, alias: str):
    """A stand-in for ``import name as alias`` in ``namespace`` that imports on first use.

    The first attribute read (``np.zeros``) imports the module and puts it in ``namespace``
    under ``alias``, so every later read is the module's own. Keeps numpy off the path of a
    command that never computes (``elmsearch show``: 50 ms of a cold start). Annotations must
    be strings (``from __future__ import annotations``); type checkers see the real import
    under ``TYPE_CHECKING``.
    """
    return _LazyModule(name, namespace, alias)
