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
Flower's hooks do their usual jobs: ``configure_train`` samples the round's users and sends the start
vector it is given, ``aggregate_train`` keeps the users' z and returns the next start vector,
``configure_evaluate`` / ``aggregate_evaluate`` open and close an evaluation; ``start`` runs the hops
in between. Users' metrics are averaged with their ``examples`` as weights (Flower's
``aggregate_metricrecords``). Replies are read into typed records (``Texts``, ``Waiting``), one
function per job: parse the points, read and check the texts, claim the partition, record the
transcript, count the payload floor.
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from cbp_fed import protocol as wire
from cbp_fed.config import RunConfig
from cbp_fed.prompts import NoPrompt
from cbp_fed.service import BlackBox, Query, QueryError
from cbp_fed.stats import paired

log = logging.getLogger(__name__)

WEIGHT = "examples"
"""The reply metric that weights users' metrics: their training texts (train.finish) or test texts
(evaluate.score), as Flower's strategies weight by ``num-examples``."""

WEIGHTED_TRAIN_METRICS = ("train-loss", "best-loss")
"""Train metrics averaged with the users' ``examples`` as weights (the dev accuracies too, when every
user reported them); ``calls`` (a cost per user) and ``kept-earlier-share`` (a share of users) are
per-user means."""


@dataclass(frozen=True)
class Texts:
    """A user's texts for one round, as its train.begin / evaluate.query reply carried them
    (``protocol.read_texts``): n passages and queries, C label words, and for an option-scored task n
    rows of C answer options (else None), scored per character when ``length_norm``."""

    partition_id: int
    task: str
    domain: str
    passages: tuple[str, ...]
    queries: tuple[str, ...]
    label_words: tuple[str, ...]
    options: tuple[tuple[str, ...], ...] | None
    length_norm: bool

    @classmethod
    def read(cls, content: RecordDict) -> Texts:
        """The validated texts record of a reply (raises ``ProtocolError``)."""
        t = wire.read_texts(content)
        options = None if t["options"] is None else tuple(tuple(row) for row in t["options"])
        return cls(
            t["partition-id"],
            t["task"],
            t["domain"],
            tuple(t["passages"]),
            tuple(t["queries"]),
            tuple(t["label-words"]),
            options,
            t["length-norm"],
        )

    def __len__(self) -> int:
        return len(self.queries)

    def query(self, z: np.ndarray, batch: Sequence[int]) -> Query:
        """The BlackBox query of points ``z: (k, r)`` on the texts at ``batch``."""
        return Query(
            z,
            [self.passages[i] for i in batch],
            [self.queries[i] for i in batch],
            list(self.label_words),
            options=[list(self.options[i]) for i in batch] if self.options else None,
            length_norm=self.length_norm,
        )

    def payload_bytes(self) -> int:
        """UTF-8 bytes of the strings a user must send to be scored: passages, queries, label words, options."""
        strings = (*self.passages, *self.queries, *self.label_words, *(o for row in self.options or () for o in row))
        return sum(len(t.encode()) for t in strings)

    def as_record(self) -> dict:
        """The protocol's form (keys as on the wire), which the privacy transcript stores."""
        options = None if self.options is None else [list(row) for row in self.options]
        return {
            "passages": list(self.passages),
            "queries": list(self.queries),
            "label-words": list(self.label_words),
            "task": self.task,
            "domain": self.domain,
            "partition-id": self.partition_id,
            "options": options,
            "length-norm": self.length_norm,
        }


@dataclass(frozen=True)
class Waiting:
    """A user between hops: its round's texts, its latest query and ``minimum_up_bytes``, what it had to
    send so far this round (texts once, then every query's points and batch indices); ``plain``: the texts
    it asked to have scored without a prompt too (its own options, ``protect``), if it asked."""

    texts: Texts
    query: Query
    minimum_up_bytes: int
    plain: Query | None = None
    plain_batch: list[int] | None = None


@dataclass
class RoundLog:
    """What happened to whom in one round (becomes a line of rounds.jsonl)."""

    round: int
    sampled: int = 0
    failures: list[dict] = field(default_factory=list)

    def fail(self, node_id: int, stage: str, reason: str) -> None:
        log.warning("round %s: user %s dropped at %s: %s", self.round, node_id, stage, reason)
        self.failures.append({"node_id": node_id, "stage": stage, "reason": reason})


def weighted_means(metrics: list[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """``keys`` of the users' metrics averaged with their ``examples`` as weights, by Flower's
    ``aggregate_metricrecords`` (as FedAvg aggregates its replies' metrics); ``{}`` for no users."""
    if not metrics:
        return {}
    records = [RecordDict({"metrics": MetricRecord({k: m[k] for k in (*keys, WEIGHT)})}) for m in metrics]
    return {k: float(v) for k, v in aggregate_metricrecords(records, WEIGHT).items()}


def read_evaluation(content: RecordDict) -> tuple[float, int]:
    """An evaluate.score reply: its accuracy in [0, 1] and the test texts it was taken on (an integer >= 1:
    the accuracy's weight); its protected choice's metrics, when it reports them, are checked too."""
    accuracy, examples = wire.read_accuracy(content), wire.read_metric(content, "metrics", WEIGHT)
    if examples < 1 or examples != int(examples):
        raise wire.ProtocolError(f"metric metrics/{WEIGHT} must be an integer >= 1, got {examples}")
    wire.read_protected(content)  # a malformed protected choice drops the reply here, not the round's aggregation
    return accuracy, int(examples)


class MultiStepStrategy(Strategy):
    """Per-user CMA-ES through the provider's BlackBox, one hop per CMA-ES generation.

    Args:
        blackbox: the provider's scoring endpoint (model + prompt source).
        z_start: ``(r,)`` start vector for users without a state.
        steps_per_round: K, the scoring hops of a training round (CMA-ES generations per user).
        population_size: candidates per population on the wire (the user's popsize plus its decoys);
            a train.begin / train.step reply must carry exactly ``(population_size, r)``.
        users_per_round: users sampled per training round (0: every connected user); evaluation
            always asks every connected user.
        evaluate_every: evaluate every this many rounds (and after the last).
        evaluate_start: in round 1, first evaluate every user's start vector.
        select_on_dev: the K-th hop is train.select (each user keeps the best of 3 points on its dev
            texts) instead of train.finish.
        seed: seeds the node sampling (its state is checkpointed, so a resumed run samples alike).
        run_key: the run's name, sent in every start record (a user keeps its own state under it).
        on_round: called with each round's record (the server app logs and writes it).
    """

    def __init__(
        self,
        blackbox: BlackBox,
        z_start: np.ndarray,
        *,
        steps_per_round: int = 3,
        population_size: int = 6,
        users_per_round: int = 0,
        evaluate_every: int = 1,
        evaluate_start: bool = True,
        select_on_dev: bool = True,
        seed: int = 0,
        run_key: str = "run",
        on_round: Callable[[dict], None] | None = None,
    ):
        self.blackbox, self.run_key = blackbox, run_key
        self.z_start = np.asarray(z_start, dtype=np.float32)
        self.steps_per_round, self.population_size = steps_per_round, population_size
        self.users_per_round, self.evaluate_every, self.evaluate_start = users_per_round, evaluate_every, evaluate_start
        self.selects_on_dev = select_on_dev
        self.rng = random.Random(seed)
        self.on_round = on_round or (lambda record: None)
        self.user_z: dict[int, np.ndarray] = {}  # partition id -> its last customised vector
        self.user_start: dict[int, float] = {}  # partition id -> its start vector's test accuracy (round 1)
        self.user_evaluation: dict[int, dict] = {}  # partition id -> its last evaluate.score reply, read
        self.partition_of: dict[int, int] = {}  # node id -> partition id (as users declare it)
        self.rounds_done = 0
        self.transcript = None  # a cbp_fed.privacy.TranscriptWriter when the run records what the provider sees
        self.plain_blackbox: BlackBox | None = None  # the backbone without a prompt, built when a user asks

    @classmethod
    def options(cls, config: RunConfig) -> dict:
        """The constructor arguments a run config sets (subclasses add theirs)."""
        return {
            "steps_per_round": config.steps_per_round,
            "population_size": config.wire_popsize,
            "users_per_round": config.users_per_round,
            "evaluate_every": config.eval_every,
            "evaluate_start": config.eval_start,
            "select_on_dev": config.select_on_dev,
            "seed": config.seed,
        }

    @classmethod
    def from_config(cls, config: RunConfig, blackbox: BlackBox, z_start: np.ndarray, **extra) -> MultiStepStrategy:
        """The strategy ``config`` describes: ``options(config)`` plus ``extra`` (e.g. ``on_round``, ``run_key``)."""
        return cls(blackbox, z_start, **cls.options(config), **extra)

    def hops(self) -> list[str]:
        """The message types of a round's scoring hops, in order."""
        last = [wire.SELECT, wire.FINISH] if self.selects_on_dev else [wire.FINISH]
        return [wire.STEP] * (self.steps_per_round - 1) + last

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
            "user_start": {str(p): a for p, a in self.user_start.items()},
            "rng": repr(self.rng.getstate()),
            "meter": {k: getattr(meter, k) for k in ("calls", "pairs", "tokens", "forwards", "seconds")},
        }
        return arrays, state

    def restore(self, arrays: dict[str, np.ndarray], state: dict) -> None:
        """Inverse of ``checkpoint``."""
        self.user_z = {int(k.split("-", 1)[1]): v for k, v in arrays.items() if k.startswith("user-")}
        self.rounds_done = int(state["rounds_done"])
        self.user_start = {int(p): float(a) for p, a in state.get("user_start", {}).items()}
        self.rng.setstate(ast.literal_eval(state["rng"]))
        for key, value in state["meter"].items():
            setattr(self.blackbox.meter, key, value)

    # ------------------------------------------------------------------ Flower's Strategy interface
    def summary(self) -> None:
        log.info(
            "%s: %s steps per round, %s candidates per population, r %s, users per round %s",
            type(self).__name__,
            self.steps_per_round,
            self.population_size,
            self.z_start.shape[0],
            self.users_per_round or "all",
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """train.begin to the round's users (``users_per_round`` of the connected ones, drawn with the
        strategy's seeded RNG; all when 0) with the start vector ``arrays["z-start"]`` ``(r,)``.
        ``config`` is not sent: what a user needs is in the protocol's start record."""
        nodes = sorted(grid.get_node_ids())
        if self.users_per_round and self.users_per_round < len(nodes):
            nodes = sorted(self.rng.sample(nodes, self.users_per_round))
        start = self.begin_content(server_round, arrays["z-start"].numpy())
        return [self._message(start, n, wire.BEGIN, server_round) for n in nodes]

    def begin_content(self, server_round: int, z_start: np.ndarray) -> RecordDict:
        """train.begin's body: the round, the start vector ``(r,)`` and the run key (``wire.start``)."""
        return wire.start(server_round, z_start, self.run_key)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord, MetricRecord]:
        """Keep each finished user's z ``(r,)`` under the partition its node declared, learn across
        users (``aggregate``); returns the next start vector and the users' metrics: losses and dev
        accuracies weighted by their ``examples``, ``calls`` and ``kept-earlier-share`` per user."""
        metrics = []
        for reply in replies:
            z, record = wire.read_result(reply.content, self.z_start.size)
            self.user_z[self.partition_of[reply.metadata.src_node_id]] = z
            metrics.append(record)
        self.aggregate(server_round)
        selected = bool(metrics) and all("kept" in m for m in metrics)  # dev selection
        dev = tuple(k for k in wire.DEV_ACCURACY_METRICS if metrics and all(k in m for m in metrics))
        means = weighted_means(metrics, WEIGHTED_TRAIN_METRICS + dev)
        if metrics:
            means["calls"] = float(np.mean([m["calls"] for m in metrics]))
        if selected:  # how often the earlier z stayed
            means["kept-earlier-share"] = float(np.mean([m["kept"] == 0 for m in metrics]))
        return wire.arrays(z_start=self.start_vector()), MetricRecord(means)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """evaluate.query to every connected user with the start vector ``arrays["z-start"]`` ``(r,)``
        (for users with no z of their own); ``config`` is not sent."""
        start = wire.start(server_round, arrays["z-start"].numpy(), self.run_key)
        return [self._message(start, n, wire.EVAL_QUERY, server_round) for n in sorted(grid.get_node_ids())]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord:
        """The users' test accuracy weighted by their test texts (``examples``: all users' texts pooled),
        its spread over users (``accuracy-std``, unweighted), ``users`` and ``examples`` in all; for the
        users that report a protected choice, the accuracy of the option they end on (``protected-accuracy``,
        weighted alike), the share of them that end on an option of their own (``protected-own-share``), their
        count (``protected-users``), their best own option on test in hindsight (``own-best-accuracy``), and
        the per-user gap of the option they end on to it (``protected-vs-own-best``: mean over users with a
        normal 95% interval, and ``protected-below-own-best``: users strictly below), and each own option's
        accuracy had every user kept it (``own-accuracy-<option>``, texts pooled)."""
        replies = list(replies)
        evaluations = [read_evaluation(r.content) for r in replies]
        self.user_evaluation = {  # by partition, for against_start; a node that never declared one is left out
            self.partition_of[r.metadata.src_node_id]: {"accuracy": a, **wire.read_protected(r.content)}
            for r, (a, _) in zip(replies, evaluations)
            if r.metadata.src_node_id in self.partition_of
        }
        if not evaluations:
            return MetricRecord({"users": 0})
        accuracy = weighted_means([{"accuracy": a, WEIGHT: n} for a, n in evaluations], ["accuracy"])["accuracy"]
        spread = float(np.std([a for a, _ in evaluations]))
        examples = sum(n for _, n in evaluations)
        metrics = {"accuracy": accuracy, "accuracy-std": spread, "users": len(evaluations), "examples": examples}
        finals = [{**f, WEIGHT: n} for r, (_, n) in zip(replies, evaluations) if (f := wire.read_protected(r.content))]
        if finals:
            metrics.update(weighted_means(finals, ["protected-accuracy", "own-best-accuracy"]))
            metrics["protected-own-share"] = float(np.mean([f["protected-own"] for f in finals]))
            metrics["protected-users"] = len(finals)
            gaps = np.array([f["protected-accuracy"] - f["own-best-accuracy"] for f in finals])
            gap = paired(gaps)
            metrics["protected-vs-own-best"] = gap["mean"]
            metrics["protected-vs-own-best-ci95"] = gap["ci95"] if len(gaps) > 1 else 0.0
            metrics["protected-below-own-best"] = int((gaps < 0).sum())
            options = sorted({key for f in finals for key in f if key.startswith(wire.OWN_ACCURACY)})
            for key in options:  # each own option over the users that have it, texts pooled
                metrics.update(weighted_means([f for f in finals if key in f], [key]))
        return MetricRecord(metrics)

    def remember_start(self) -> None:
        """Keep each user's accuracy in the last evaluation (round 1's, before any training) as its own start."""
        self.user_start = {p: e["accuracy"] for p, e in self.user_evaluation.items()}

    def against_start(self) -> dict:
        """Each user's end (the option it ends on when it protects, else its prompt) against its own start
        (its start vector's accuracy in round 1), over the users evaluated both times: the mean gap with a
        normal 95% interval (``end_vs_start``, ``end_vs_start_ci95``, fractions) and the users strictly
        below their start (``end_below_start``, partition ids); ``{}`` without a start evaluation."""
        ends = {p: e.get("protected-accuracy", e["accuracy"]) for p, e in self.user_evaluation.items()}
        users = sorted(set(ends) & set(self.user_start))
        if not users:
            return {}
        gap = paired(np.array([ends[p] - self.user_start[p] for p in users]))
        return {
            "end_vs_start": gap["mean"],
            "end_vs_start_ci95": gap["ci95"] if len(users) > 1 else 0.0,
            "end_below_start": [p for p in users if ends[p] < self.user_start[p]],
        }

    # ------------------------------------------------------------------ the round loop
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run rounds ``rounds_done + 1 .. num_rounds`` (all of them unless restored from a checkpoint).

        Overridden because a round is several hops (Flower's loop sends one message per node and
        phase): ``configure_train`` -> K scoring hops -> ``aggregate_train``, whose start vector goes to
        the next round's ``configure_train`` / ``configure_evaluate``, and every ``evaluate_every``
        rounds ``configure_evaluate`` -> one scoring hop -> ``aggregate_evaluate``. The start vector is
        the strategy's own (``z_start``, a prior, a restored checkpoint) and the provider holds no
        labelled data, so ``initial_arrays``, ``train_config``, ``evaluate_config`` and ``evaluate_fn``
        are refused rather than ignored. Returns Flower's ``Result`` (the last start vector, metrics).
        """
        self._refuse_flower_options(initial_arrays, train_config, evaluate_config, evaluate_fn)
        self.summary()
        result = Result(arrays=wire.arrays(z_start=self.start_vector()))
        self._run_rounds(grid, result, num_rounds, timeout)
        return result

    def _run_rounds(self, grid: Grid, result: Result, num_rounds: int, timeout: float) -> None:
        """Rounds ``rounds_done + 1 .. num_rounds``, each recorded into ``result`` and ``on_round``."""
        log.info("%s: rounds %s..%s", type(self).__name__, self.rounds_done + 1, num_rounds)
        arrays = result.arrays
        for server_round in range(self.rounds_done + 1, num_rounds + 1):
            started = time.time()
            meter_before = (self.blackbox.meter.calls, self.blackbox.meter.tokens, self.blackbox.meter.seconds)
            plain = self.plain_blackbox  # built in the round a user first asks for it
            own_before = (plain.meter.calls, plain.meter.seconds) if plain is not None else (0, 0.0)
            round_log = RoundLog(server_round)
            if self.transcript:
                self.transcript.begin_round(server_round, self.start_vector())
            start_evaluation = None
            if server_round == 1 and self.evaluate_start:  # the users' start, to compare every round with
                start_evaluation = self._evaluate(grid, server_round, arrays, timeout, round_log)
                self.remember_start()
            finished, minimum_up = self._train(grid, server_round, arrays, timeout, round_log)
            arrays, train_metrics = self.aggregate_train(server_round, finished)
            result.arrays = arrays
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
            if server_round % self.evaluate_every == 0 or server_round == num_rounds:
                evaluation = self._evaluate(grid, server_round, arrays, timeout, round_log)
                result.evaluate_metrics_clientapp[server_round] = evaluation
                record.update(
                    test_accuracy=evaluation.get("accuracy"),
                    test_accuracy_std=evaluation.get("accuracy-std"),
                    users_evaluated=evaluation["users"],
                    test_examples=evaluation.get("examples", 0),
                )
                record["user_test_accuracy"] = {str(p): e["accuracy"] for p, e in sorted(self.user_evaluation.items())}
                record.update(self.against_start())
                if "protected-users" in evaluation:
                    record.update(
                        protected_test_accuracy=evaluation["protected-accuracy"],
                        protected_own_share=evaluation["protected-own-share"],
                        protected_users=int(evaluation["protected-users"]),
                        own_best_test_accuracy=evaluation["own-best-accuracy"],
                        protected_vs_own_best=evaluation["protected-vs-own-best"],
                        protected_vs_own_best_ci95=evaluation["protected-vs-own-best-ci95"],
                        protected_below_own_best=int(evaluation["protected-below-own-best"]),
                        own_test_accuracy={
                            key.removeprefix(wire.OWN_ACCURACY): value
                            for key, value in evaluation.items()
                            if key.startswith(wire.OWN_ACCURACY)
                        },
                    )
            self.rounds_done = server_round
            self._end_transcript_round(grid, server_round)
            meter, own_seconds = self.blackbox.meter, 0.0
            if self.plain_blackbox is not None:  # the users' own options, scored without a prompt: the same model
                record["own_calls"] = self.plain_blackbox.meter.calls - own_before[0]
                own_seconds = self.plain_blackbox.meter.seconds - own_before[1]
            record.update(
                calls=meter.calls - meter_before[0],
                tokens=meter.tokens - meter_before[1],
                forward_seconds=round(meter.seconds - meter_before[2] + own_seconds, 3),
                seconds=round(time.time() - started, 3),
            )
            self.on_round(record)

    def _refuse_flower_options(self, initial_arrays, train_config, evaluate_config, evaluate_fn) -> None:
        """Flower's ``start`` arguments this strategy has no use for raise instead of being ignored."""
        given = {
            "initial_arrays": initial_arrays,
            "train_config": train_config,
            "evaluate_config": evaluate_config,
            "evaluate_fn": evaluate_fn,
        }
        if names := [name for name, value in given.items() if value is not None]:
            raise ValueError(
                f"{type(self).__name__}.start takes no {', '.join(names)}: the start vector is the strategy's "
                "own, users are configured by the protocol's records, and the provider has no labels to evaluate"
            )

    # ------------------------------------------------------------------ the hops of a round
    def _train(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, timeout: float, round_log: RoundLog
    ) -> tuple[list[Message], dict[int, int]]:
        """begin -> K scoring hops; returns the valid train.finish replies and, per node that reached
        the last hop, the payload it had to send before its final z."""
        begin = list(self.configure_train(server_round, arrays, ConfigRecord(), grid))
        round_log.sampled = len(begin)
        replies = self._replies(grid, begin, timeout, round_log, wire.BEGIN)
        waiting = self._read_all(replies, round_log, wire.BEGIN, self._first_query)
        finished, minimum_up = [], {}
        for kind in self.hops():
            plain = self._score_plain(waiting)
            messages = [
                self._message(wire.scores(s, plain.get(node)), node, kind, server_round)
                for node, s in self._score(waiting).items()
            ]
            replies = self._replies(grid, messages, timeout, round_log, kind)
            minimum_up = {node: w.minimum_up_bytes for node, w in waiting.items()}
            if kind == wire.FINISH:
                finished = self._valid(replies, round_log, kind, self._check_result)
            else:
                waiting = self._read_all(
                    replies, round_log, kind, partial(self._next_query, waiting=waiting, stage=kind)
                )
        if self.transcript:
            for r in finished:
                z = wire.read_array(r.content, "result", "z", 1)
                self.transcript.final(self.partition_of[r.metadata.src_node_id], z)
        return finished, minimum_up

    def _evaluate(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, timeout: float, round_log: RoundLog
    ) -> MetricRecord:
        """Each user's test accuracy with its own z (or ``arrays["z-start"]``); labels stay with the user."""
        queries = list(self.configure_evaluate(server_round, arrays, ConfigRecord(), grid))
        replies = self._replies(grid, queries, timeout, round_log, wire.EVAL_QUERY)
        waiting = self._read_all(replies, round_log, wire.EVAL_QUERY, self._evaluation_query)
        plain = self._score_plain(waiting)
        messages = [
            self._message(wire.scores(s, plain.get(node)), node, wire.EVAL_SCORE, server_round)
            for node, s in self._score(waiting).items()
        ]
        replies = self._replies(grid, messages, timeout, round_log, wire.EVAL_SCORE)
        return self.aggregate_evaluate(
            server_round, self._valid(replies, round_log, wire.EVAL_SCORE, lambda r: read_evaluation(r.content))
        )

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

    # ------------------------------------------------------------------ the reply path: one job per function
    def _read_all(
        self, replies: list[Message], round_log: RoundLog, stage: str, read: Callable[[Message], Waiting]
    ) -> dict[int, Waiting]:
        """``read`` every reply's query, by node; users whose reply is malformed or refused are dropped."""
        out = {}
        for r in replies:
            try:
                out[r.metadata.src_node_id] = read(r)
            except (wire.ProtocolError, QueryError) as err:
                round_log.fail(r.metadata.src_node_id, stage, str(err))
        return out

    def _first_query(self, reply: Message) -> Waiting:
        """A train.begin reply: the user's texts (checked whole, so none can fail later inside a
        batch), the partition they claim, and its first population ``(population_size, r)`` on a batch."""
        z = self._points(reply, self.population_size)
        texts = self._new_texts(reply, z)
        batch = wire.read_batch(reply.content, len(texts))
        self._claim(reply.metadata.src_node_id, texts.partition_id)
        query = texts.query(z, batch)
        self._record("train", texts, query, batch, texts_sent=True)
        return Waiting(texts, query, texts.payload_bytes() + z.nbytes + 4 * len(batch))

    def _next_query(self, reply: Message, waiting: dict[int, Waiting], stage: str) -> Waiting:
        """A train.step reply (the next population) or train.select reply (the ``SELECT_POINTS`` the user
        chooses from, on a batch of its dev texts), on the texts of its begin reply."""
        before = waiting[reply.metadata.src_node_id]
        z = self._points(reply, wire.SELECT_POINTS if stage == wire.SELECT else self.population_size)
        batch = wire.read_batch(reply.content, len(before.texts))
        self._claim(reply.metadata.src_node_id, before.texts.partition_id)
        query = before.texts.query(z, batch)
        self._record("select" if stage == wire.SELECT else "train", before.texts, query, batch, texts_sent=False)
        plain = self._plain_query(reply, before.texts) if stage == wire.SELECT else (None, None)
        return Waiting(before.texts, query, before.minimum_up_bytes + z.nbytes + 4 * len(batch), *plain)

    def _evaluation_query(self, reply: Message) -> Waiting:
        """An evaluate.query reply: the user's z ``(1, r)`` on all its test texts (no batch)."""
        z = self._points(reply, 1)
        texts = self._new_texts(reply, z)
        self._claim(reply.metadata.src_node_id, texts.partition_id)
        batch = list(range(len(texts)))
        query = texts.query(z, batch)
        self._record("evaluate", texts, query, batch, texts_sent=True)
        return Waiting(texts, query, texts.payload_bytes() + z.nbytes, *self._plain_query(reply, texts))

    def _plain_query(self, reply: Message, texts: Texts) -> tuple[Query | None, list[int] | None]:
        """The no-prompt query of the texts a reply's ``plain`` record names, and their positions (None, None
        without one)."""
        indices = wire.read_plain(reply.content, len(texts))
        if indices is None:
            return None, None
        return texts.query(np.zeros((1, self.z_start.size), np.float32), indices), indices

    def _points(self, reply: Message, k: int) -> np.ndarray:
        """The ``(k, r)`` points of a reply's query."""
        return wire.read_shaped(reply.content, "query", "z", (k, self.z_start.size))

    def _new_texts(self, reply: Message, z: np.ndarray) -> Texts:
        """The texts a reply carries, validated and encoded whole with its points ``z: (k, r)`` by the
        BlackBox (a text that cannot fit is refused here, not later inside a batch of other users' texts)."""
        texts = Texts.read(reply.content)
        whole = texts.query(z, range(len(texts)))
        self.blackbox.validate(whole)
        self.blackbox.encode(whole)
        return texts

    def _claim(self, node: int, partition: int) -> None:
        """Bind ``node`` to ``partition`` for this run; a partition already held by another node is refused."""
        holder = next((n for n, p in self.partition_of.items() if p == partition and n != node), None)
        if holder is not None:
            raise wire.ProtocolError(f"partition {partition} is already held by node {holder}")
        if self.partition_of.get(node, partition) != partition:
            raise wire.ProtocolError(f"node declared partition {self.partition_of[node]} before, now {partition}")
        self.partition_of[node] = partition

    def _record(self, kind: str, texts: Texts, query: Query, batch: list[int], texts_sent: bool) -> None:
        """Hand a validated query to the transcript (with the texts when this reply carried them)."""
        if self.transcript:
            self.transcript.query(texts.partition_id, kind, texts.as_record() if texts_sent else None, query.z, batch)

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
                self.transcript.scores(waiting[n].texts.partition_id, s)
        return dict(zip(nodes, scores))

    def _score_plain(self, waiting: dict[int, Waiting]) -> dict[int, np.ndarray]:
        """The texts users asked to have scored without a prompt (``Waiting.plain``), in one batched call
        through the backbone with no prompt source (``plain_blackbox``, counted apart from the method's)."""
        nodes = [n for n in sorted(waiting) if waiting[n].plain is not None]
        if not nodes:
            return {}
        if self.plain_blackbox is None:
            box = self.blackbox
            self.plain_blackbox = BlackBox(
                box.lm, NoPrompt(box.lm.d, self.z_start.size), box.max_tokens, box.token_budget
            )
        scores = self.plain_blackbox.score([waiting[n].plain for n in nodes])
        if self.transcript:
            for n, s in zip(nodes, scores):
                self.transcript.plain(waiting[n].texts.partition_id, waiting[n].plain_batch, s)
        return dict(zip(nodes, scores))
