"""Wall time of a tiny sweep (popularity + 1-epoch sasrec, 2 seeds) on the local executor vs a local Ray cluster."""

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import torch

torch.set_num_threads(1)
from conftest import synthetic_rows, write_atomic, write_benchmark  # noqa: E402 (tests/ on the path first)

from genrec_bench.config import load_benchmark  # noqa: E402
from genrec_bench.runner import Runner  # noqa: E402

logging.basicConfig(level=logging.WARNING)
root = Path(sys.argv[1])
root.mkdir(parents=True, exist_ok=True)
data = write_atomic(root / "tiny", "tiny", synthetic_rows(n_users=400, n_items=200, length=20))
methods = """
  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking, resources: {cpus: 1}}
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 32, layers: 1, epochs: 3, batch_size: 64}
    retriever: full_ranking
    resources: {cpus: 1}
"""
bench = write_benchmark(root / "b.yaml", data, methods)
bench.write_text(bench.read_text().replace("seeds: [0]", "seeds: [0, 1, 2]"))
import ray  # noqa: E402 (imported after the local run, which must not see it)

t = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
t_init = time.perf_counter() - t
for ex in ("local", "ray", "ray-resume"):
    t = time.perf_counter()
    out = Runner(
        load_benchmark(bench),
        root / ("r-" + ex.split("-")[0]),
        root / "cache",
        "cpu",
        show_progress=False,
        executor=ex.split("-")[0],
    ).run()
    print(
        f"{ex:11s} {len(out)} cells {[o.status for o in out].count('ok')} ok: {time.perf_counter() - t:.2f}s "
        f"(sum of cell times {sum(o.seconds for o in out):.2f}s)"
    )
print(f"ray.init (local 2-CPU cluster): {t_init:.2f}s")
