"""The multi-step round shared by the black-box strategies: begin -> K ask/tell hops -> finish.

A ClientApp can only reply, so one CMA-ES iteration of a user spans one Flower round trip: the
user's reply carries its population (the query), the next message carries the scores (the answer).
Per round, for the sampled users:

    train.begin        users reply: texts (once per round) + first population      (configure_train)
    K x score          the BlackBox scores every waiting user's population in ONE batched call;
                       train.step (K-1 times) replies: next population
                       train.select (the K-th) replies: the points the user chooses from, on its dev texts
    score              the points on dev; train.finish replies: the user's customised z (aggregate_train)
    evaluate (every N rounds): evaluate.query -> scores -> evaluate.score replies accuracy

Without dev selection (``select-on-dev = false``, and always for FedBPT, whose users keep no z of their
own) the K-th hop is train.finish. With ``eval-start`` round 1 first evaluates every user's start vector.
A user whose reply is an error, is missing at the timeout, or is malformed is dropped from the rest of
that round with the reason recorded; the others go on. Its optimiser state stays on its side. Every
reply is validated before use: shapes against what was asked (popsize x r candidates, an r-vector),
finite values, texts and label words within the BlackBox's limits, batch indices in range, and a
partition id no other node holds (a user cannot overwrite another user's z).
Subclasses choose the start vector and what to learn across users (``start_vector``, ``aggregate``);
``checkpoint``/``restore`` carry the strategy's state across a provider crash (``resume-from``).
With ``transcript`` set (``record-transcript``), every validated query, every score array returned
and every final z is also handed to it: the provider's view, which the privacy attacks read.
"""

from __future__ import annotations

import ast
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from cbp_fed import protocol as wire
from cbp_fed.config import RunConfig
from cbp_fed.service import BlackBox, Query, QueryError

log = logging.getLogger(__name__)


@dataclass
class Waiting:
    """A user between hops: its round's texts and its latest query."""

    partition_id: int
    texts: dict
    query: Query
    minimum_up_bytes: int = 0  # what this user had to send so far this round: texts once, candidates, batches


@dataclass
class RoundLog:
    """What happened to whom in one round (becomes a line of rounds.jsonl)."""

    round: int
    sampled: int = 0
    failures: list[dict] = field(default_factory=list)

    def fail(self, node_id: int, stage: str, reason: str) -> None:
        log.warning("round %s: user %s dropped at %s: %s", self.round, node_id, stage, reason)
        self.failures.append({"node_id": node_id, "stage": stage, "reason": reason})


def _query(z: np.ndarray, texts: dict, batch) -> Query:
    """The BlackBox query of points ``z: (k, r)`` on the texts at ``batch`` of a user's texts record."""
    options = [texts["options"][i] for i in batch] if texts["options"] else None
    passages, queries = [texts["passages"][i] for i in batch], [texts["queries"][i] for i in batch]
    return Query(z, passages, queries, texts["label-words"], options=options, length_norm=texts["length-norm"])


class MultiStepStrategy(Strategy):
    """Per-user CMA-ES through the provider's BlackBox, one hop per CMA-ES generation.

    Args:
        config: the run's ``RunConfig`` (steps per round, sampling, evaluation cadence, seed).
        blackbox: the provider's scoring endpoint (model + prompt source).
        z_start: ``(r,)`` start vector for users without a state.
        on_round: called with each round's record (the server app logs and writes it).
    """

    def __init__(self, config: RunConfig, blackbox: BlackBox, z_start: np.ndarray, on_round=None, run_key="run"):
        self.config, self.blackbox, self.run_key = config, blackbox, run_key
        self.z_start = np.asarray(z_start, dtype=np.float32)
        self.user_z: dict[int, np.ndarray] = {}  # partition id -> its last customised vector
        self.partition_of: dict[int, int] = {}  # node id -> partition id (as users declare it)
        self.rng = random.Random(config.seed)
        self.rounds_done = 0
        self.on_round = on_round or (lambda record: None)
        self.transcript = None  # a cbp_fed.privacy.TranscriptWriter when the run records what the provider sees
        self.selects_on_dev = config.select_on_dev

    def hops(self) -> list[str]:
        """The message types of a round's scoring hops, in order."""
        last = [wire.SELECT, wire.FINISH] if self.selects_on_dev else [wire.FINISH]
        return [wire.STEP] * (self.config.steps_per_round - 1) + last

    # ------------------------------------------------------------------ what subclasses decide
    def start_vector(self) -> np.ndarray:
        """``(r,)`` sent to users that have no optimiser state yet."""
        return self.z_start

    def aggregate(self, server_round: int) -> None:
        """Learn across users after a round (e.g. a prior); default: nothing."""

    def checkpoint(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to continue after ``rounds_done``: arrays and JSON-able state."""
        arrays = {f"user-{p}": z for p, z in self.user_z.items()}
        meter = self.blackbox.meter
        state = {
            "rounds_done": self.rounds_done,
            "rng": repr(self.rng.getstate()),
            "meter": {k: getattr(meter, k) for k in ("calls", "pairs", "tokens", "forwards", "seconds")},
        }
        return arrays, state

    def restore(self, arrays: dict[str, np.ndarray], state: dict) -> None:
        """Inverse of ``checkpoint``."""
        self.user_z = {int(k.split("-", 1)[1]): v for k, v in arrays.items() if k.startswith("user-")}
        self.rounds_done = int(state["rounds_done"])
        self.rng.setstate(ast.literal_eval(state["rng"]))
        for key, value in state["meter"].items():
            setattr(self.blackbox.meter, key, value)

    # ------------------------------------------------------------------ Flower's Strategy interface
    def summary(self) -> None:
        c = self.config
        log.info(
            "%s: %s rounds x %s steps, popsize %s, r %s, users per round %s",
            type(self).__name__,
            c.num_rounds,
            c.steps_per_round,
            c.popsize,
            self.z_start.shape[0],
            c.users_per_round or "all",
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = sorted(grid.get_node_ids())
        if self.config.users_per_round and self.config.users_per_round < len(nodes):
            nodes = sorted(self.rng.sample(nodes, self.config.users_per_round))
        start = wire.start(server_round, self.start_vector(), self.run_key)
        return [self._message(start, n, wire.BEGIN, server_round) for n in nodes]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord, MetricRecord]:
        """Keep each finishing user's z under the partition its node declared this round; returns the
        start vector and the mean of the users' metrics."""
        metrics = []
        for reply in replies:
            z, record = wire.read_result(reply.content, self.z_start.size)
            self.user_z[self.partition_of[reply.metadata.src_node_id]] = z
            metrics.append(record)
        self.aggregate(server_round)
        keys = ("train-loss", "best-loss", "calls")
        if metrics and all("kept" in m for m in metrics):  # dev selection: how often the earlier z stayed
            keys += ("dev-accuracy", "dev-accuracy-before")
        mean = {k: float(np.mean([m[k] for m in metrics])) for k in keys} if metrics else {}
        if metrics and "dev-accuracy" in mean:
            mean["kept-earlier-share"] = float(np.mean([m["kept"] == 0 for m in metrics]))
        return wire.arrays(z_start=self.start_vector()), MetricRecord(mean)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        start = wire.start(server_round, self.start_vector(), self.run_key)
        return [self._message(start, n, wire.EVAL_QUERY, server_round) for n in sorted(grid.get_node_ids())]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord:
        accs = [wire.read_accuracy(r.content) for r in replies]
        examples = sum(int(r.content.metric_records["metrics"].get("examples", 0)) for r in replies)
        spread = {"accuracy": float(np.mean(accs)), "accuracy-std": float(np.std(accs))}
        return MetricRecord({**spread, "users": len(accs), "examples": examples})

    # ------------------------------------------------------------------ the round loop
    def start(
        self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 3, timeout: float = 3600, **_
    ) -> Result:
        """Run rounds ``rounds_done + 1 .. num_rounds`` (all of them unless restored from a checkpoint);
        returns Flower's ``Result`` (start vector, metrics)."""
        self.summary()
        result = Result(arrays=wire.arrays(z_start=self.start_vector()))
        for server_round in range(self.rounds_done + 1, num_rounds + 1):
            started = time.time()
            meter_before = (self.blackbox.meter.calls, self.blackbox.meter.tokens, self.blackbox.meter.seconds)
            round_log = RoundLog(server_round)
            if self.transcript:
                self.transcript.begin_round(server_round, self.start_vector())
            start_evaluation = None
            if server_round == 1 and self.config.eval_start:  # the users' start, to compare every round with
                start_evaluation = self._evaluate(grid, server_round, timeout, round_log)
            begin = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
            round_log.sampled = len(begin)
            waiting = self._populations(
                self._replies(grid, begin, timeout, round_log, wire.BEGIN), {}, round_log, wire.BEGIN
            )
            finished, minimum_up = [], {}
            for kind in self.hops():
                messages = [
                    self._message(wire.scores(s), node, kind, server_round) for node, s in self._score(waiting).items()
                ]
                replies = self._replies(grid, messages, timeout, round_log, kind)
                minimum_up = {node: w.minimum_up_bytes for node, w in waiting.items()}
                if kind == wire.FINISH:
                    finished = self._valid(replies, round_log, kind, self._check_result)
                else:
                    waiting = self._populations(replies, waiting, round_log, kind)
            if self.transcript:
                for r in finished:
                    z = wire.read_array(r.content, "result", "z", 1)
                    self.transcript.final(self.partition_of[r.metadata.src_node_id], z)
            _, train_metrics = self.aggregate_train(server_round, finished)
            result.train_metrics_clientapp[server_round] = train_metrics
            record = {
                "round": server_round,
                "users_sampled": round_log.sampled,
                "users_ok": len(finished),
                "users_failed": round_log.sampled - len(finished),
                "users_finished": sorted(self.partition_of[r.metadata.src_node_id] for r in finished),
                "failures": round_log.failures,
                **{k.replace("-", "_"): v for k, v in train_metrics.items()},
            }
            if start_evaluation is not None:
                record.update(
                    start_test_accuracy=start_evaluation.get("accuracy"), start_users=start_evaluation["users"]
                )
            if finished:  # texts + K populations + batches + the final z (r float32): the payload floor
                floor = [minimum_up[r.metadata.src_node_id] + 4 * self.z_start.size for r in finished]
                record["bytes_up_minimum_per_user"] = float(np.mean(floor))
            if server_round % self.config.eval_every == 0 or server_round == num_rounds:
                evaluation = self._evaluate(grid, server_round, timeout, round_log)
                result.evaluate_metrics_clientapp[server_round] = evaluation
                record.update(
                    test_accuracy=evaluation.get("accuracy"),
                    test_accuracy_std=evaluation.get("accuracy-std"),
                    users_evaluated=evaluation["users"],
                    test_examples=evaluation.get("examples", 0),
                )
            self.rounds_done = server_round
            self._end_transcript_round(grid, server_round)
            meter = self.blackbox.meter
            record.update(
                calls=meter.calls - meter_before[0],
                tokens=meter.tokens - meter_before[1],
                forward_seconds=round(meter.seconds - meter_before[2], 3),
                seconds=round(time.time() - started, 3),
            )
            self.on_round(record)
        result.arrays = wire.arrays(z_start=self.start_vector())
        return result

    # ------------------------------------------------------------------ helpers of the loop
    def _message(self, content, node: int, kind: str, server_round: int) -> Message:
        return Message(content, dst_node_id=node, message_type=kind, group_id=str(server_round))

    def _replies(
        self, grid: Grid, messages: list[Message], timeout: float, round_log: RoundLog, stage: str
    ) -> list[Message]:
        """Send, wait, and drop (with the reason) users that errored or did not answer in time."""
        if not messages:
            return []
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        answered = {r.metadata.src_node_id for r in replies}
        for m in messages:
            if m.metadata.dst_node_id not in answered:
                round_log.fail(m.metadata.dst_node_id, stage, f"no reply within {timeout:.0f} s")
        ok = []
        for r in replies:
            if r.has_error():
                round_log.fail(r.metadata.src_node_id, stage, f"user error: {r.error.reason}")
            else:
                ok.append(r)
        return sorted(ok, key=lambda r: r.metadata.src_node_id)

    def _valid(self, replies: list[Message], round_log: RoundLog, stage: str, check) -> list[Message]:
        """Replies whose content passes ``check``; the others are dropped with the error."""
        ok = []
        for r in replies:
            try:
                check(r)
                ok.append(r)
            except (wire.ProtocolError, KeyError, ValueError, TypeError) as err:
                round_log.fail(r.metadata.src_node_id, stage, f"malformed reply: {err}")
        return ok

    def _check_result(self, reply: Message) -> None:
        """A finish reply: an r-vector, finite metrics, and the partition id its node declared."""
        _, metrics = wire.read_result(reply.content, self.z_start.size)
        declared = self.partition_of[reply.metadata.src_node_id]
        if metrics["partition-id"] != declared:
            raise wire.ProtocolError(f"result for partition {metrics['partition-id']:.0f}; this node is {declared}")

    def _read_query(self, reply: Message, texts: dict | None, k: int, use_batch: bool = True) -> tuple[dict, Query]:
        """The validated BlackBox query in a reply: its ``k`` points over a batch of ``texts`` (the
        texts of this round's begin reply, or those it carries itself when ``texts`` is None: then
        all of them are validated and encoded, so none can fail later inside a batch)."""
        z = wire.read_shaped(reply.content, "query", "z", (k, self.z_start.size))
        if texts is None:
            texts = wire.read_texts(reply.content)
            whole = _query(z, texts, range(len(texts["queries"])))
            self.blackbox.validate(whole)
            self.blackbox.encode(whole)  # a text that cannot fit is refused here, not in the batch
        batch = wire.read_batch(reply.content, len(texts["queries"])) if use_batch else range(len(texts["queries"]))
        return texts, _query(z, texts, batch)

    def _claim(self, node: int, partition: int) -> None:
        """Bind ``node`` to ``partition`` for this run; a partition already held by another node is refused."""
        holder = next((n for n, p in self.partition_of.items() if p == partition and n != node), None)
        if holder is not None:
            raise wire.ProtocolError(f"partition {partition} is already held by node {holder}")
        if self.partition_of.get(node, partition) != partition:
            raise wire.ProtocolError(f"node declared partition {self.partition_of[node]} before, now {partition}")
        self.partition_of[node] = partition

    def _populations(
        self, replies: list[Message], waiting: dict[int, Waiting], round_log: RoundLog, stage: str
    ) -> dict[int, Waiting]:
        """Read each reply's query (the population, the selection points on dev, or at evaluate.query
        the user's z on all its test texts); users whose reply is malformed or refused are dropped."""
        whole_texts = stage == wire.EVAL_QUERY
        k = {wire.EVAL_QUERY: 1, wire.SELECT: wire.SELECT_POINTS}.get(stage, self.config.wire_popsize)
        out = {}
        for r in replies:
            node = r.metadata.src_node_id
            try:
                texts, query = self._read_query(r, waiting[node].texts if node in waiting else None, k, not whole_texts)
                self._claim(node, texts["partition-id"])
            except (wire.ProtocolError, QueryError) as err:
                round_log.fail(node, stage, str(err))
                continue
            if self.transcript:
                kind = {wire.EVAL_QUERY: "evaluate", wire.SELECT: "select"}.get(stage, "train")
                n = len(texts["queries"])
                batch = list(range(n)) if whole_texts else wire.read_batch(r.content, n)
                self.transcript.query(texts["partition-id"], kind, None if node in waiting else texts, query.z, batch)
            sent = query.z.nbytes + (4 * len(query.queries) if not whole_texts else 0)
            if node in waiting:
                sent += waiting[node].minimum_up_bytes
            else:
                sent += sum(len(t.encode()) for key in ("passages", "queries", "label-words") for t in texts[key])
                sent += sum(len(o.encode()) for row in texts["options"] or [] for o in row)
            out[node] = Waiting(texts["partition-id"], texts, query, sent)
        return out

    def _end_transcript_round(self, grid: Grid, server_round: int) -> None:
        """Write the round's transcript files (with its metered bytes where the grid meters them)."""
        if self.transcript:
            self.transcript.end_round(grid.round_summary(server_round) if hasattr(grid, "round_summary") else None)

    def _score(self, waiting: dict[int, Waiting]) -> dict[int, np.ndarray]:
        """All waiting users' populations through the BlackBox in one batched computation."""
        nodes = sorted(waiting)
        queries = [waiting[n].query for n in nodes]
        started = time.monotonic()
        scores = self.blackbox.score(queries)
        pairs = sum(len(q.z) * len(q.queries) for q in queries)
        log.info(
            "scored %d users' candidates: %d prompt x text pairs in %.1f s",
            len(nodes),
            pairs,
            time.monotonic() - started,
        )
        if self.transcript:
            for n, s in zip(nodes, scores):
                self.transcript.scores(waiting[n].partition_id, s)
        return dict(zip(nodes, scores))

    def _evaluate(self, grid: Grid, server_round: int, timeout: float, round_log: RoundLog) -> MetricRecord:
        """Each user's test accuracy with its own z; labels stay with the user."""
        queries = list(self.configure_evaluate(server_round, ArrayRecord(), ConfigRecord(), grid))
        replies = self._replies(grid, queries, timeout, round_log, wire.EVAL_QUERY)
        waiting = self._populations(replies, {}, round_log, wire.EVAL_QUERY)
        messages = [
            self._message(wire.scores(s), node, wire.EVAL_SCORE, server_round)
            for node, s in self._score(waiting).items()
        ]
        replies = self._valid(
            self._replies(grid, messages, timeout, round_log, wire.EVAL_SCORE),
            round_log,
            wire.EVAL_SCORE,
            lambda r: wire.read_accuracy(r.content),
        )
        return self.aggregate_evaluate(server_round, replies) if replies else MetricRecord({"users": 0})
