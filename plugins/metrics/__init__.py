"""The standard top-K metrics (definitions in genrec_bench.metrics)."""

from genrec_bench import hookimpl
from genrec_bench.metrics import BUILTIN


@hookimpl
def register_metrics(register):
    for name, fn in BUILTIN.items():
        register(name, fn)
