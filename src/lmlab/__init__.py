"""lmlab: the whole life of a small language model, on a laptop CPU first.

Every CLI command is also a function with the same keys (see `lmlab.api`).

`lmlab.train` and `lmlab.generate` are those functions, although subpackages / modules of the same
names exist (`lmlab.train.sft`, `lmlab.generate`): Python's import system sets a package's
attribute to each submodule it imports, which would turn `lmlab.train` into the subpackage after
the first training call and break a re-run notebook cell with "'module' object is not callable".
The package's module class below keeps the API functions in place.
"""
import sys as _sys
import types as _types

from lmlab.api import call, evaluate, generate, quickstart, run, train

__all__ = ["call", "evaluate", "generate", "quickstart", "run", "train"]
__version__ = "0.1.0"

_API = {"call": call, "evaluate": evaluate, "generate": generate, "quickstart": quickstart, "run": run, "train": train}


class _Package(_types.ModuleType):
    """`lmlab`'s module type: importing a submodule never replaces an API function of the same name."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _API and isinstance(value, _types.ModuleType):
            return  # the submodule stays reachable in sys.modules and by `import lmlab.<name>.…`
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
