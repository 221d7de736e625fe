"""The provider's transcript: exactly what it saw of each user, written by the strategy, read by attacks.

With ``record-transcript = true`` the round loop (``strategies/multistep.py``) hands every validated
query, every score array it returned and every final z to a ``TranscriptWriter``; at the end of each
round it writes, per user (partition id) and round, one ``.npz`` and updates that user's
``texts.json``. Layout (``SCHEMA`` is the machine-readable description, also written as
``transcript/schema.json``; ``VERSION`` changes with any incompatible change):

    transcript/schema.json
    transcript/user-00003/round-0001.npz   z_start (r,), candidates (S, k, r), batches (S, b),
                                           scores (S', k, b, C), select_z (s, r), select_batch (n_dev,),
                                           select_scores (s, n_dev, C), final_z (r,), eval_z (r,),
                                           eval_scores (n, C), plain_* (a user's own options:
                                           positions and scores with no prompt), bytes (4,)
                                           (absent keys: not seen)
    transcript/user-00003/texts.json       every distinct text once under its sha256, and per round
                                           the hashes in the order they were sent (batch indices
                                           point into that list), label words, task, domain

``k`` is the population as sent (real candidates and any decoys: the provider cannot tell them
apart), ``b`` the batch (positions in the round's training texts; -1 pads a shorter batch), ``S'``
<= ``S`` (a user dropped mid-round was asked for more than it was answered). ``Transcript`` reads it
back; attacks take nothing else but public knowledge (the run's config, the backbone, public data).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERSION = 1
SCHEMA = {
    "version": VERSION,
    "layout": "user-<partition id, 5 digits>/round-<round, 4 digits>.npz and user-<partition id>/texts.json",
    "npz": {
        "z_start": "(r,) float32: the start vector the provider sent in train.begin",
        "candidates": "(S, k, r) float32: the populations the user sent, step by step (k includes decoys)",
        "batches": "(S, b) int32: positions in the round's training texts each population was scored on; -1 pads",
        "scores": "(S', k, b, C) float32: the answer scores the provider returned; NaN pads; S' <= S",
        "select_z": "(s, r) float32: the points the user scored on its dev texts to choose the z it keeps",
        "select_batch": "(n_dev,) int32: positions of those dev texts in the round's texts",
        "select_scores": "(s, n_dev, C) float32: the scores returned for them",
        "final_z": "(r,) float32: the customised z of train.finish (absent: the user did not finish)",
        "eval_z": "(r,) float32: the z the user sent with its test texts (absent: no evaluation this round)",
        "eval_scores": "(n, C) float32: the scores returned for the test texts",
        "plain_train_batch": "(p,) int32: positions in the round's training texts the user asked to have scored "
        "with no prompt (its own options: train, dev and content-free texts)",
        "plain_train_scores": "(p, C) float32: the no-prompt scores returned for them",
        "plain_eval_batch": "(p,) int32: positions in the test texts the user asked to have scored with no prompt",
        "plain_eval_scores": "(p, C) float32: the no-prompt scores returned for them",
        "bytes": "(4,) float64: payload bytes of this user's train.* up, train.* down, evaluate.* up, "
        "evaluate.* down messages this round (MeteredGrid; NaN when not metered)",
    },
    "texts.json": {
        "texts": "{sha256: {passage, query[, options]}}: every distinct text once (with its answer options for an "
        "option-scored task); sha256 of passage + '\\x1f' + query",
        "rounds": "{round: {train: [sha256], evaluate: [sha256], label_words, task, domain}}",
    },
}


def text_hash(passage: str, query: str) -> str:
    """sha256 (hex) identifying one text: its passage and query."""
    return hashlib.sha256(f"{passage}\x1f{query}".encode()).hexdigest()


@dataclass
class _Seen:
    """One user's round as it accumulates in the writer."""

    candidates: list
    batches: list
    scores: list
    final_z: np.ndarray | None = None
    eval_z: np.ndarray | None = None
    eval_scores: np.ndarray | None = None
    select_z: np.ndarray | None = None
    select_batch: np.ndarray | None = None
    select_scores: np.ndarray | None = None
    plain: dict | None = None  # plain_{train,eval}_{batch,scores}
    answering: str = "train"  # which query the next scores answer


class TranscriptWriter:
    """Collects one round of what the provider saw, per partition id, and writes it at ``end_round``.

    Cost when recording: a few array copies per message; when off, the strategy holds ``None`` and
    pays one attribute test per hook."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "schema.json").write_text(json.dumps(SCHEMA, indent=2) + "\n")
        self.round = 0
        self.z_start: np.ndarray | None = None
        self.seen: dict[int, _Seen] = {}
        self.texts: dict[int, dict] = {}  # partition -> this round's text record (hashes, words, ...)
        self.corpus: dict[int, dict[str, dict]] = {}  # partition -> sha -> text, new this round

    def begin_round(self, round: int, z_start: np.ndarray) -> None:
        self.round, self.z_start = round, np.asarray(z_start, np.float32).copy()
        self.seen, self.texts, self.corpus = {}, {}, {}

    def _user(self, partition: int) -> _Seen:
        return self.seen.setdefault(partition, _Seen([], [], []))

    def query(self, partition: int, kind: str, texts: dict | None, z: np.ndarray, batch: list[int]) -> None:
        """A validated query: ``kind`` "train" (candidates ``(k, r)`` on ``batch``), "select" (the points
        ``(s, r)`` the user chooses its z from, on its dev ``batch``) or "evaluate" (the user's z ``(1, r)``
        on all of ``texts``); ``texts`` when they came with this message."""
        user = self._user(partition)
        if texts is not None:
            hashes = [text_hash(p, q) for p, q in zip(texts["passages"], texts["queries"])]
            corpus = self.corpus.setdefault(partition, {})
            options = texts.get("options") or [None] * len(hashes)
            for h, p, q, o in zip(hashes, texts["passages"], texts["queries"], options):
                corpus[h] = {"passage": p, "query": q} if o is None else {"passage": p, "query": q, "options": o}
            record = self.texts.setdefault(partition, {})
            record.update(label_words=texts["label-words"], task=texts["task"], domain=texts["domain"])
            record[kind] = hashes
        if kind == "train":
            user.candidates.append(np.array(z, np.float32))
            user.batches.append(np.array(batch, np.int32))
        elif kind == "select":
            user.select_z, user.select_batch = np.array(z, np.float32), np.array(batch, np.int32)
        else:
            user.eval_z = np.array(z[0], np.float32)
        user.answering = kind

    def scores(self, partition: int, scores: np.ndarray) -> None:
        """The scores ``(k, b, C)`` returned to ``partition`` for its last query."""
        user = self._user(partition)
        if user.answering == "train":
            user.scores.append(np.array(scores, np.float32))
        elif user.answering == "select":
            user.select_scores = np.array(scores, np.float32)
        else:
            user.eval_scores = np.array(scores[0], np.float32)

    def plain(self, partition: int, batch: list[int], scores: np.ndarray) -> None:
        """The no-prompt scores ``(p, C)`` returned for the texts at ``batch`` of the user's last query (its
        training texts at train.select, its test texts at evaluation)."""
        user = self._user(partition)
        kind = "eval" if user.answering == "evaluate" else "train"
        user.plain = {
            **(user.plain or {}),
            f"plain_{kind}_batch": np.array(batch, np.int32),
            f"plain_{kind}_scores": np.array(scores[0], np.float32),
        }

    def final(self, partition: int, z: np.ndarray) -> None:
        """The customised ``z (r,)`` the user uploaded at train.finish."""
        self._user(partition).final_z = np.array(z, np.float32)

    def end_round(self, bytes_summary: dict | None = None) -> None:
        """Write this round's files; ``bytes_summary``: ``MeteredGrid.round_summary`` keyed by partition."""
        for partition, user in self.seen.items():
            folder = self.folder / f"user-{partition:05d}"
            folder.mkdir(exist_ok=True)
            arrays = {"z_start": self.z_start, "bytes": _bytes_of(bytes_summary, partition)}
            if user.candidates:
                arrays["candidates"] = np.stack(user.candidates)
                arrays["batches"] = _pad(user.batches, -1, axis=0)
            if user.scores:
                arrays["scores"] = _pad(user.scores, np.nan, axis=1)
            for key in ("select_z", "select_batch", "select_scores", "final_z", "eval_z", "eval_scores"):
                if getattr(user, key) is not None:
                    arrays[key] = getattr(user, key)
            arrays.update(user.plain or {})
            np.savez_compressed(folder / f"round-{self.round:04d}.npz", **arrays)
            path = folder / "texts.json"
            saved = json.loads(path.read_text()) if path.exists() else {"texts": {}, "rounds": {}}
            saved["texts"].update(self.corpus.get(partition, {}))
            saved["rounds"][str(self.round)] = self.texts.get(partition, {})
            tmp = folder / "texts.json.tmp"
            tmp.write_text(json.dumps(saved))
            tmp.replace(path)


def _pad(arrays: list[np.ndarray], fill, axis: int) -> np.ndarray:
    """Stack arrays that may differ in length along ``axis`` (batch sizes), padding with ``fill``."""
    width = max(a.shape[axis] for a in arrays)
    shape = list(arrays[0].shape)
    shape[axis] = width
    out = np.full((len(arrays), *shape), fill, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        index = [i] + [slice(None)] * a.ndim
        index[axis + 1] = slice(0, a.shape[axis])
        out[tuple(index)] = a
    return out


def _bytes_of(summary: dict | None, partition: int) -> np.ndarray:
    """(train up, train down, evaluate up, evaluate down) payload bytes of one user in a round summary."""
    user = (summary or {}).get("users", {}).get(partition)
    if user is None:
        return np.full(4, np.nan)
    total = [
        sum(c["payload_bytes"] for t, c in user[direction].items() if t.startswith(prefix))
        for prefix in ("train.", "evaluate.")
        for direction in ("up", "down")
    ]
    return np.array([total[0], total[1], total[2], total[3]], dtype=np.float64)


@dataclass
class RoundView:
    """One user's round as the provider saw it (shapes as in ``SCHEMA``; None: not seen)."""

    partition: int
    round: int
    z_start: np.ndarray
    candidates: np.ndarray | None
    batches: np.ndarray | None
    scores: np.ndarray | None
    final_z: np.ndarray | None
    eval_z: np.ndarray | None
    eval_scores: np.ndarray | None
    select_z: np.ndarray | None
    select_batch: np.ndarray | None
    select_scores: np.ndarray | None
    bytes: np.ndarray
    train_hashes: list[str]
    eval_hashes: list[str]
    label_words: list[str]
    task: str
    domain: str
    plain: dict | None = None  # plain_{train,eval}_{batch,scores} as in SCHEMA, when the user asked

    def steps(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The answered steps: ``(candidates (k, r), batch positions (b,), scores (k, b, C))`` each."""
        if self.scores is None:
            return []
        out = []
        for z, batch, scores in zip(self.candidates, self.batches, self.scores):
            keep = batch >= 0
            out.append((z, batch[keep], scores[:, keep]))
        return out


class Transcript:
    """Reader of a run's ``transcript/`` folder (or a run folder holding one)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.folder = folder / "transcript" if (folder / "transcript").is_dir() else folder
        schema_path = self.folder / "schema.json"
        if not schema_path.exists():
            raise FileNotFoundError(f"{self.folder}: no transcript (run with record-transcript = true)")
        version = json.loads(schema_path.read_text())["version"]
        if version != VERSION:
            raise ValueError(f"{self.folder}: transcript version {version}, this reader reads version {VERSION}")
        self._texts: dict[int, dict] = {}

    @property
    def run_config(self) -> dict:
        """The run's config.json beside the transcript (public: the provider ran the run)."""
        path = self.folder.parent / "config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def users(self) -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in self.folder.glob("user-*") if p.is_dir())

    def text_record(self, partition: int) -> dict:
        if partition not in self._texts:
            self._texts[partition] = json.loads((self.folder / f"user-{partition:05d}" / "texts.json").read_text())
        return self._texts[partition]

    def text(self, partition: int, sha: str) -> tuple[str, str]:
        """(passage, query) of a text this user sent."""
        entry = self.text_record(partition)["texts"][sha]
        return entry["passage"], entry["query"]

    def rounds(self, partition: int) -> list[RoundView]:
        """The user's rounds in order."""
        folder = self.folder / f"user-{partition:05d}"
        record = self.text_record(partition)
        views = []
        for path in sorted(folder.glob("round-*.npz")):
            round = int(path.stem.split("-")[1])
            with np.load(path) as data:
                arrays = {key: data[key] for key in data.files}
            texts = record["rounds"].get(str(round), {})
            views.append(
                RoundView(
                    partition=partition,
                    round=round,
                    z_start=arrays["z_start"],
                    candidates=arrays.get("candidates"),
                    batches=arrays.get("batches"),
                    scores=arrays.get("scores"),
                    final_z=arrays.get("final_z"),
                    eval_z=arrays.get("eval_z"),
                    eval_scores=arrays.get("eval_scores"),
                    select_z=arrays.get("select_z"),
                    select_batch=arrays.get("select_batch"),
                    select_scores=arrays.get("select_scores"),
                    bytes=arrays["bytes"],
                    train_hashes=texts.get("train", []),
                    eval_hashes=texts.get("evaluate", []),
                    label_words=texts.get("label_words", []),
                    task=texts.get("task", ""),
                    domain=texts.get("domain", ""),
                    plain={key: value for key, value in arrays.items() if key.startswith("plain_")} or None,
                )
            )
        return views

    def final_z(self, partition: int) -> np.ndarray | None:
        """The last customised z the user uploaded, if any."""
        finals = [v.final_z for v in self.rounds(partition) if v.final_z is not None]
        return finals[-1] if finals else None
