"""What crosses the wire between the provider (ServerApp) and a user (ClientApp), in one place.

One round, by message type (down = provider -> user, up = user -> provider):

    train.begin   down: round, start vector z_start (r,)          up: training texts + label words (once
                                                                       per round), population z (k, r), batch
    train.step    down: scores (k, b, C) of the last population   up: next population z (k, r), batch
    train.finish  down: scores (k, b, C) of the last population   up: the customised z (r,) + metrics
    evaluate.query  down: z_start (r,)                            up: test texts + label words, the user's z (1, r)
    evaluate.score  down: scores (1, n, C)                        up: accuracy (labels never leave the user)

No optimiser state ever travels: it lives in the user's ``context.state``. Readers validate what
they read and raise ``ProtocolError`` naming the record, key and problem.
Imports only numpy and flwr (the ClientApp uses this module).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

BEGIN, STEP, FINISH = "train.begin", "train.step", "train.finish"
EVAL_QUERY, EVAL_SCORE = "evaluate.query", "evaluate.score"


class ProtocolError(ValueError):
    """A message whose content is missing, mistyped or malformed."""


def arrays(**named: np.ndarray) -> ArrayRecord:
    """ArrayRecord of float32 arrays (keys with '_' become '-')."""
    return ArrayRecord(
        {k.replace("_", "-"): Array(np.ascontiguousarray(v, dtype=np.float32)) for k, v in named.items()}
    )


def read_array(content: RecordDict, record: str, key: str, ndim: int) -> np.ndarray:
    """A finite float32 array of ``ndim`` dimensions from ``content[record][key]``."""
    if record not in content.array_records or key not in content.array_records[record]:
        raise ProtocolError(f"message lacks array {record}/{key}")
    try:
        value = content.array_records[record][key].numpy()
    except Exception as err:  # a corrupt buffer or dtype string
        raise ProtocolError(f"array {record}/{key} cannot be decoded: {err}") from err
    if value.ndim != ndim or not np.issubdtype(value.dtype, np.floating):
        raise ProtocolError(f"array {record}/{key} must be a {ndim}-D float array, got {value.dtype} {value.shape}")
    if not np.isfinite(value).all():
        raise ProtocolError(f"array {record}/{key} contains NaN or infinite values")
    return value.astype(np.float32, copy=False)


def read_config(content: RecordDict, record: str, key: str, kind: type):
    """A value (or a list of values) of type ``kind`` from ``content[record][key]``."""
    if record not in content.config_records or key not in content.config_records[record]:
        raise ProtocolError(f"message lacks config {record}/{key}")
    value = content.config_records[record][key]
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, kind) and not (kind is int and isinstance(v, bool)) for v in items):
        raise ProtocolError(f"config {record}/{key} must hold {kind.__name__} values")
    return value


def read_metric(content: RecordDict, record: str, key: str) -> float:
    if record not in content.metric_records or key not in content.metric_records[record]:
        raise ProtocolError(f"message lacks metric {record}/{key}")
    value = content.metric_records[record][key]
    if not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ProtocolError(f"metric {record}/{key} must be a finite number, got {value!r}")
    return float(value)


# ----------------------------------------------------------------- builders (one per message body)
def start(round: int, z_start: np.ndarray) -> RecordDict:
    """Down, train.begin / evaluate.query: the start vector for a user without a state."""
    return RecordDict({"start": arrays(z_start=z_start), "round": ConfigRecord({"round": round})})


def texts(
    passages: list[str], queries: list[str], label_words: list[str], task: str, domain: str, partition_id: int
) -> ConfigRecord:
    """The user's texts (sent once per round) and the public facts the provider needs to score them."""
    return ConfigRecord(
        {
            "passages": list(passages),
            "queries": list(queries),
            "label-words": list(label_words),
            "task": task,
            "domain": domain,
            "partition-id": partition_id,
        }
    )


def population(z: np.ndarray, batch: list[int]) -> RecordDict:
    """Up, train.begin / train.step: candidates (k, r) and the indices of the texts to score them on."""
    return RecordDict({"query": arrays(z=z), "batch": ConfigRecord({"indices": [int(i) for i in batch]})})


def scores(values: np.ndarray) -> RecordDict:
    """Down, train.step / train.finish / evaluate.score: label-word scores (k, n, C)."""
    return RecordDict({"scores": arrays(scores=values)})


def result(z: np.ndarray, metrics: dict[str, float]) -> RecordDict:
    """Up, train.finish: the customised vector (r,) and the round's metrics."""
    return RecordDict({"result": arrays(z=z), "metrics": MetricRecord(metrics)})


def read_texts(content: RecordDict) -> dict:
    """The texts record of a train.begin / evaluate.query reply, checked for consistency."""
    out = {key: read_config(content, "texts", key, str) for key in ("passages", "queries", "label-words")}
    out["task"] = read_config(content, "texts", "task", str)
    out["domain"] = read_config(content, "texts", "domain", str)
    out["partition-id"] = read_config(content, "texts", "partition-id", int)
    if isinstance(out["passages"], str) or len(out["passages"]) != len(out["queries"]):
        raise ProtocolError("texts/passages and texts/queries must be lists of equal length")
    return out


def read_batch(content: RecordDict, n_texts: int) -> list[int]:
    """Batch indices of a population reply, each in [0, n_texts)."""
    batch = read_config(content, "batch", "indices", int)
    batch = batch if isinstance(batch, list) else [batch]
    if not batch or min(batch) < 0 or max(batch) >= n_texts:
        raise ProtocolError(f"batch/indices must be a non-empty list of indices in [0, {n_texts})")
    return batch
