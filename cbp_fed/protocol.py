"""What crosses the wire between the provider (ServerApp) and a user (ClientApp), in one place.

One round, by message type (down = provider -> user, up = user -> provider):

    train.begin   down: round, run key, start vector z_start (r,)  up: training texts + label words (once
                                                                       per round), population z (k, r), batch
    train.step    down: scores (k, b, C) of the last population   up: next population z (k, r), batch
    train.select  down: scores (k, b, C) of the last population   up: the points to choose from (s, r) on
                                                                       the user's dev texts (batch)
    train.finish  down: scores (s, n_dev, C) of those points      up: the customised z (r,) + metrics
                  (without dev selection, FedBPT: scores (k, b, C) of the last population)
    evaluate.query  down: z_start (r,)                            up: test texts + label words, the user's z (1, r)
    evaluate.score  down: scores (1, n, C)                        up: accuracy (labels never leave the user)

A user that protects itself (``protect``, see ``calibration.protect``) also asks, once, for the scores
of its own texts without any prompt: at train.select a ``plain`` record names the texts (its train and
dev rows and content-free versions of its template), and train.finish carries their scores (1, p, C)
as ``scores/plain`` beside the points' scores; at evaluate.query the same for its test texts, answered
in evaluate.score. Its choice stays with it; evaluate.score reports ``protected-accuracy`` (the option it
ends on), ``protected-own`` (1 when that option needs no prompt) and ``own-best-accuracy`` (its best own
option on its test rows, in hindsight: the bar it should not end below) beside ``accuracy`` (its z).

CBP with ``subspace = K`` adds the provider's search basis (K, r) to train.begin's start record: a user
without a state searches z = z_start + u @ basis over u (K,) (``search.SubspaceSearch``).
FedBPT adds one float each way: the global sigma in train.begin's round record, and in train.finish
the user's local loss and local sigma beside its local mean (sent as z).
No optimiser state ever travels: it lives in the user's ``context.state``. Readers validate what
they read and raise ``ProtocolError`` naming the record, key and problem.
Imports only numpy and flwr (the ClientApp uses this module).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

BEGIN, STEP, SELECT, FINISH = "train.begin", "train.step", "train.select", "train.finish"
SELECT_POINTS = 3
"""Points a user scores on dev at train.select: the z it kept so far (the start at first), the search
mean and its best candidate."""
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
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused below
        value = value.astype(np.float32, copy=False)
    if not np.isfinite(value).all():
        raise ProtocolError(f"array {record}/{key} contains NaN or infinite values (in float32)")
    return value


def read_config(content: RecordDict, record: str, key: str, kind: type, many: bool = False):
    """A value of type ``kind`` from ``content[record][key]``, or a list of them when ``many``."""
    if record not in content.config_records or key not in content.config_records[record]:
        raise ProtocolError(f"message lacks config {record}/{key}")
    value = content.config_records[record][key]
    if isinstance(value, list) != many:
        raise ProtocolError(f"config {record}/{key} must be {'a list of' if many else 'one'} {kind.__name__}")
    items = value if many else [value]
    if not all(isinstance(v, kind) and not (kind is int and isinstance(v, bool)) for v in items):
        raise ProtocolError(f"config {record}/{key} must hold {kind.__name__} values")
    return value


def read_shaped(content: RecordDict, record: str, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``read_array`` that also demands an exact shape (the receiver knows what it asked for)."""
    value = read_array(content, record, key, len(shape))
    if value.shape != tuple(shape):
        raise ProtocolError(f"array {record}/{key} must have shape {tuple(shape)}, got {value.shape}")
    return value


def read_metric(content: RecordDict, record: str, key: str) -> float:
    if record not in content.metric_records or key not in content.metric_records[record]:
        raise ProtocolError(f"message lacks metric {record}/{key}")
    value = content.metric_records[record][key]
    if not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ProtocolError(f"metric {record}/{key} must be a finite number, got {value!r}")
    return float(value)


# ----------------------------------------------------------------- builders (one per message body)
def start(
    round: int, z_start: np.ndarray, run_key: str, sigma: float | None = None, basis: np.ndarray | None = None
) -> RecordDict:
    """Down, train.begin / evaluate.query: the round, the start vector for a user without a state,
    and the run's key (the name under which a user may keep its own state on disk across a resume).
    FedBPT's train.begin adds ``sigma``, the global CMA-ES step size every user starts its round from;
    CBP's with ``subspace`` adds ``basis (K, r)``, the directions a new user's search moves z along."""
    config = {"round": round, "run-key": run_key}
    if sigma is not None:
        config["sigma"] = float(sigma)
    start = arrays(z_start=z_start) if basis is None else arrays(z_start=z_start, basis=basis)
    return RecordDict({"start": start, "round": ConfigRecord(config)})


def texts(
    passages: list[str],
    queries: list[str],
    label_words: list[str],
    task: str,
    domain: str,
    partition_id: int,
    options: list[list[str]] | None = None,
    length_norm: bool = False,
) -> ConfigRecord:
    """The user's texts (sent once per round) and the public facts the provider needs to score them:
    label words, or for an option-scored task every text's C answer options (flattened, n x C) and
    whether their log-likelihoods are length-normalised."""
    record = {
        "passages": list(passages),
        "queries": list(queries),
        "label-words": list(label_words),
        "task": task,
        "domain": domain,
        "partition-id": partition_id,
    }
    if options is not None:
        record["options"] = [option for row in options for option in row]
        record["length-norm"] = bool(length_norm)
    return ConfigRecord(record)


def population(z: np.ndarray, batch: list[int]) -> RecordDict:
    """Up, train.begin / train.step: candidates (k, r) and the indices of the texts to score them on."""
    return RecordDict({"query": arrays(z=z), "batch": ConfigRecord({"indices": [int(i) for i in batch]})})


def scores(values: np.ndarray, plain: np.ndarray | None = None) -> RecordDict:
    """Down, train.step / train.finish / evaluate.score: label-word scores (k, n, C), and the scores
    (1, p, C) of the texts the user asked to have scored without a prompt, if it asked."""
    return RecordDict({"scores": arrays(scores=values) if plain is None else arrays(scores=values, plain=plain)})


def plain(indices: list[int]) -> ConfigRecord:
    """Up, train.select / evaluate.query: the texts (positions in the round's texts) to score without a prompt."""
    return ConfigRecord({"indices": [int(i) for i in indices]})


def read_plain(content: RecordDict, n_texts: int) -> list[int] | None:
    """The ``plain`` record of a reply (None when absent): distinct indices in [0, n_texts)."""
    if "plain" not in content.config_records:
        return None
    indices = read_config(content, "plain", "indices", int, many=True)
    if not indices or min(indices) < 0 or max(indices) >= n_texts or len(set(indices)) != len(indices):
        raise ProtocolError(f"plain/indices must be a non-empty list of distinct indices in [0, {n_texts})")
    return indices


def result(z: np.ndarray, metrics: dict[str, float]) -> RecordDict:
    """Up, train.finish: the customised vector (r,) and the round's metrics."""
    return RecordDict({"result": arrays(z=z), "metrics": MetricRecord(metrics)})


def read_texts(content: RecordDict) -> dict:
    """The texts record of a train.begin / evaluate.query reply, checked for consistency (sizes and
    label words are the BlackBox's to judge: ``BlackBox.validate``)."""
    out = {}
    for key in ("passages", "queries", "label-words"):
        out[key] = read_config(content, "texts", key, str, many=True)
    for key in ("task", "domain"):
        out[key] = read_config(content, "texts", key, str)
    out["partition-id"] = read_config(content, "texts", "partition-id", int)
    if len(out["passages"]) != len(out["queries"]):
        raise ProtocolError("texts/passages and texts/queries must be lists of equal length")
    if out["partition-id"] < 0:
        raise ProtocolError(f"texts/partition-id must be >= 0, got {out['partition-id']}")
    out["options"], out["length-norm"] = None, False
    if "options" in content.config_records["texts"]:
        flat, n, c = (
            read_config(content, "texts", "options", str, many=True),
            len(out["queries"]),
            len(out["label-words"]),
        )
        if len(flat) != n * c:
            raise ProtocolError(f"texts/options must hold {n} texts x {c} options = {n * c} strings, got {len(flat)}")
        out["options"] = [flat[i * c : (i + 1) * c] for i in range(n)]
        out["length-norm"] = read_config(content, "texts", "length-norm", bool)
    return out


def read_batch(content: RecordDict, n_texts: int) -> list[int]:
    """Batch indices of a population reply: distinct, each in [0, n_texts)."""
    batch = read_config(content, "batch", "indices", int, many=True)
    if not batch or min(batch) < 0 or max(batch) >= n_texts or len(set(batch)) != len(batch):
        raise ProtocolError(f"batch/indices must be a non-empty list of distinct indices in [0, {n_texts})")
    return batch


RESULT_METRICS = ("train-loss", "best-loss", "calls", "examples", "partition-id")
DEV_ACCURACY_METRICS = ("dev-accuracy", "dev-accuracy-before")
"""With dev selection: ``kept``, which point was kept (0 the z kept before, 1 the mean, 2 the best
candidate), and unless the user's labels are behind the selection noise, the kept point's dev
accuracy and that of the z kept before this round (the start vector in round 1)."""


def read_result(content: RecordDict, r: int) -> tuple[np.ndarray, dict[str, float]]:
    """A train.finish reply: the customised vector ``(r,)`` and its finite metrics (the selection ones
    when the user selected on dev)."""
    z = read_shaped(content, "result", "z", (r,))
    metrics = {key: read_metric(content, "metrics", key) for key in RESULT_METRICS}
    sent = content.metric_records.get("metrics", {})
    if "kept" in sent:
        metrics["kept"] = read_metric(content, "metrics", "kept")
        if metrics["kept"] not in range(SELECT_POINTS):
            raise ProtocolError(f"metrics/kept must be a point index in [0, {SELECT_POINTS}), got {metrics['kept']}")
    if any(key in sent for key in DEV_ACCURACY_METRICS):
        if "kept" not in sent:
            raise ProtocolError("metrics dev-accuracy / dev-accuracy-before without metrics/kept")
        for key in DEV_ACCURACY_METRICS:
            metrics[key] = read_metric(content, "metrics", key)
            if not 0 <= metrics[key] <= 1:
                raise ProtocolError(f"metrics/{key} must be in [0, 1], got {metrics[key]}")
    return z, metrics


def read_sigma(content: RecordDict) -> float:
    """FedBPT's train.begin: the global step size, a finite float > 0."""
    sigma = read_config(content, "round", "sigma", float)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ProtocolError(f"config round/sigma must be finite and > 0, got {sigma}")
    return sigma


LOCAL_SEARCH_METRICS = ("local-loss", "local-sigma")


def read_local_search(content: RecordDict) -> dict[str, float]:
    """A FedBPT train.finish reply's account of its round's search: ``local-loss`` (finite) and
    ``local-sigma`` (finite, > 0); see ``strategies/fedbpt.py`` for what they mean."""
    metrics = {key: read_metric(content, "metrics", key) for key in LOCAL_SEARCH_METRICS}
    if metrics["local-sigma"] <= 0:
        raise ProtocolError(f"metric metrics/local-sigma must be > 0, got {metrics['local-sigma']}")
    return metrics


PROTECTED_METRICS = ("protected-accuracy", "protected-own", "own-best-accuracy")
OWN_ACCURACY = "own-accuracy-"
"""Prefix of the optional per-option metrics: ``own-accuracy-<option>``, each own option's test accuracy."""


def read_protected(content: RecordDict) -> dict[str, float]:
    """An evaluate.score reply's protected choice, if it reports one: ``protected-accuracy``,
    ``own-best-accuracy`` (its best own option on its test rows, in hindsight) and each
    ``own-accuracy-<option>`` it sends in [0, 1], ``protected-own`` (0 or 1); ``{}`` when it reports none."""
    sent = content.metric_records.get("metrics", {})
    if not any(key in sent for key in PROTECTED_METRICS):
        return {}
    final = {key: read_metric(content, "metrics", key) for key in PROTECTED_METRICS}
    final.update({key: read_metric(content, "metrics", key) for key in sent if key.startswith(OWN_ACCURACY)})
    accuracies = [value for key, value in final.items() if key != "protected-own"]
    if not all(0 <= a <= 1 for a in accuracies) or final["protected-own"] not in (0, 1):
        raise ProtocolError(
            f"metrics protected-accuracy, own-best-accuracy and {OWN_ACCURACY}* must be in [0, 1] and "
            f"protected-own 0 or 1, got {final}"
        )
    return final


def read_accuracy(content: RecordDict) -> float:
    """An evaluate.score reply's accuracy, in [0, 1]."""
    accuracy = read_metric(content, "metrics", "accuracy")
    if not 0.0 <= accuracy <= 1.0:
        raise ProtocolError(f"metric metrics/accuracy must be in [0, 1], got {accuracy}")
    return accuracy
