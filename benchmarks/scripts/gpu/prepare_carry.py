"""Prepare the folder the GPU machine needs for the TIGER Beauty run (it has no ../shared and no MiniLM model).

    python benchmarks/scripts/gpu/prepare_carry.py                      # -> .gpu_carry/ (ignored by git)
    python benchmarks/scripts/gpu/prepare_carry.py --data ../shared/data/beauty --out .gpu_carry

Copies the data set's files into ``OUT/beauty/`` and writes the MiniLM item text features (the ``text``
features plugin, all-MiniLM-L6-v2, computed on the CPU here) as ``OUT/beauty_minilm.npy`` in float16, the
format the ``file`` features plugin reads. Prints the folder's size: a ``run`` call carries at most 64 MiB.
``--users N`` keeps the first N users only (the CPU rehearsal of the GPU script: a small Beauty).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from genrec_bench.cli import default_cache_dir
from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset
from genrec_bench.features import item_features

FILES = ("train.txt", "test.txt", "item_list.txt", "user_list.txt")


def prepare(data: Path, out: Path, name: str = "beauty", threads: int = 2, users: int | None = None) -> Path:
    torch.set_num_threads(threads)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        if not (data / file).is_file():
            continue
        if users is None or file == "item_list.txt":
            shutil.copyfile(data / file, folder / file)
        else:  # sequence files: the first users' lines; user_list.txt has a header line
            keep = users + (file == "user_list.txt")
            lines = (data / file).read_text(encoding="utf-8").splitlines(keepends=True)[:keep]
            (folder / file).write_text("".join(lines), encoding="utf-8")
    split = SplitData(
        load_dataset(name, {"loader": "contrec", "path": str(folder)}, default_cache_dir()), max_history=20
    )
    ctx = RunContext(torch.device("cpu"), 0, default_cache_dir(), out, show_progress=False)
    x = item_features("text", split, ctx)
    target = out / f"{name}_minilm.npy"
    np.save(target, x.numpy().astype(np.float16))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/beauty")
    parser.add_argument("--out", default=".gpu_carry")
    parser.add_argument("--name", default="beauty")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, help="keep only the first N users (a small rehearsal copy)")
    args = parser.parse_args()
    out = Path(args.out)
    target = prepare(Path(args.data), out, args.name, args.threads, args.users)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {target} and {out / args.name}/; {out} holds {size / 2**20:.1f} MiB (limit 64 MiB with the tree)")


if __name__ == "__main__":
    main()
