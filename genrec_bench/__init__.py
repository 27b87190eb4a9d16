"""genrec-bench: a plugin-based benchmark framework for generative recommenders."""

import pluggy

__version__ = "0.2.0"

#: Decorator that marks a plugin's hook implementations (``@hookimpl def register_generators(register): ...``).
hookimpl = pluggy.HookimplMarker("genrec_bench")

__all__ = ["hookimpl", "__version__"]
