"""``st.from_type`` on generated classes, without importing their ``*_strategies`` module.

Generated bindings call :func:`register_bindings` when they are imported while hypothesis
already is; hypothesis calls :func:`hypothesis_setup_hook` when it is imported (tpwire's
``hypothesis`` entry point), which registers the bindings loaded before it, wherever they
live (``tpwire.generated``, a package of your own, ``tpwire.codegen.compile``). Either way
``st.from_type(Message)`` and ``st.from_type(Header)`` draw valid values, as if the
``*_strategies`` module had been imported.

The registration is lazy and cheap: a function per class, which imports the ``*_strategies``
module the first time hypothesis resolves one of its classes (that import registers the
drawn strategies for good). Nothing here runs in a process that never imports hypothesis: a
worker importing bindings pays one ``sys.modules`` lookup. With ``HYPOTHESIS_NO_PLUGINS`` set,
hypothesis runs no plugin: bindings imported before it are then registered by importing
their ``*_strategies`` module, as before. README, "A protocol of your own"; docs/testing.md.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

__all__ = ["companion", "hypothesis_setup_hook", "register_bindings"]


def companion(module: ModuleType) -> ModuleType:
    """The ``*_strategies`` module of generated bindings ``module``: the module of that name
    beside it, or (``tpwire.codegen.compile``) its ``strategies`` attribute."""
    found = vars(module).get("strategies")
    if isinstance(found, ModuleType):
        return found
    if "__getattr__" in vars(module):  # compile(): its strategies are compiled on first use
        strategies: ModuleType = module.strategies
        return strategies
    return importlib.import_module(f"{module.__name__}_strategies")


def register_bindings(module: ModuleType) -> None:
    """Make ``st.from_type`` draw valid values of the classes of bindings ``module`` (each
    message class: valid messages of that class; the header class: valid headers)."""
    bindings = module.BINDINGS

    def resolve(cls: type) -> st.SearchStrategy[Any]:
        from tpwire.testing import strategies as _s

        # importing it registers every class of the protocol with its drawn strategy
        return _s.type_strategy(companion(module).PROTOCOL, cls)

    for cls in (bindings.header, *bindings.messages.values()):
        st.register_type_strategy(cls, resolve)


def hypothesis_setup_hook() -> None:
    """Hypothesis's plugin hook (the ``hypothesis`` entry point group, run when hypothesis
    is imported): register every generated bindings module already imported."""
    runtime = sys.modules.get("tpwire.runtime.bindings")
    if runtime is None:  # no bindings imported yet; each registers itself on import
        return
    for module in list(sys.modules.values()):
        names = getattr(module, "__dict__", None)
        if (
            isinstance(module, ModuleType)
            and isinstance(names, dict)
            and isinstance(names.get("BINDINGS"), runtime.Bindings)
        ):
            register_bindings(module)
