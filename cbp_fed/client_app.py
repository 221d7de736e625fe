"""The user: a Flower ClientApp that tunes one task vector z with CMA-ES on its private data.

It never sees the model: it sends candidates and its texts, receives label-word scores, and scores
them with its private labels. Its optimiser lives in ``context.state`` (bytes of a pickled pycma
object it wrote itself) and never goes on the wire. Light imports only (numpy, cma, flwr, the task
loader): no torch, no transformers.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import protocol as wire
from .config import RunConfig
from .search import CMASearch, SearchConfig, fitness
from .tasks import user_data
from .tasks.partition import PartitionConfig

app = ClientApp()


class User:
    """One user's view of a message: its config, private split and saved optimiser state."""

    def __init__(self, context: Context):
        self.context = context
        self.config = RunConfig.from_run_config(context.run_config)
        self.partition_id = int(context.node_config.get("partition-id", 0))
        num_partitions = int(context.node_config.get("num-partitions", 1))
        partition = PartitionConfig(
            self.config.partition, self.config.task_list, num_partitions, self.config.dirichlet_alpha, self.config.seed
        )
        self.task, self.split = user_data(
            partition, self.partition_id, self.config.shots_per_class, self.config.n_test, self.config.seed
        )
        self.labels = np.array([ex.label for ex in self.split.train])

    # ------------------------------------------------------------ state in context.state only
    def load_search(self, z_start: np.ndarray) -> CMASearch:
        saved = self.context.state.config_records.get("search")
        if saved is not None:
            return CMASearch.from_bytes(saved["blob"])
        c = self.config
        budget = c.num_rounds * c.calls_per_round
        return CMASearch(
            z_start,
            SearchConfig(c.popsize, c.sigma0, budget, c.diagonal, loss=c.loss),
            seed=c.seed * 100_003 + self.partition_id,
        )

    def save(self, search: CMASearch, batch: list[int]) -> None:
        self.context.state["search"] = ConfigRecord({"blob": search.to_bytes(), "batch": batch})

    @property
    def batch(self) -> list[int]:
        return list(self.context.state.config_records["search"]["batch"])

    @property
    def z(self) -> np.ndarray | None:
        """The customised vector kept from the last finished round, if any."""
        record = self.context.state.array_records.get("z")
        return record["z"].numpy() if record is not None else None

    def next_batch(self, round: int, step: int) -> list[int]:
        """Indices of the training texts to score the next population on (all, or a seeded subset)."""
        n, size = len(self.split.train), self.config.batch_size
        if not size or size >= n:
            return list(range(n))
        rng = np.random.default_rng([self.config.seed, self.partition_id, round, step])
        return sorted(rng.choice(n, size, replace=False).tolist())

    def texts(self, rows) -> ConfigRecord:
        return wire.texts(
            [ex.passage for ex in rows],
            [ex.query for ex in rows],
            list(self.task.label_words),
            self.task.name,
            self.task.domain,
            self.partition_id,
        )


def _round_and_start(msg: Message) -> tuple[int, np.ndarray]:
    return int(wire.read_config(msg.content, "round", "round", int)), wire.read_array(
        msg.content, "start", "z-start", 1
    )


@app.train("begin")
def begin(msg: Message, context: Context) -> Message:
    """Restore or create the optimiser, send the round's texts and the first population."""
    user = User(context)
    round, z_start = _round_and_start(msg)
    search = user.load_search(z_start)
    batch = user.next_batch(round, 0)
    content = wire.population(search.ask(), batch)
    content["texts"] = user.texts(user.split.train)
    user.save(search, batch)
    return Message(content, reply_to=msg)


def _tell(msg: Message, context: Context) -> tuple[User, CMASearch, np.ndarray]:
    user = User(context)
    search = CMASearch.from_bytes(context.state.config_records["search"]["blob"])
    scores = wire.read_array(msg.content, "scores", "scores", 3)
    losses = fitness(scores, user.labels[user.batch], user.config.loss)
    search.tell(losses)
    return user, search, losses


@app.train("step")
def step(msg: Message, context: Context) -> Message:
    """Tell CMA-ES the scored population's fitness; reply with the next population."""
    user, search, _ = _tell(msg, context)
    batch = user.next_batch(int(msg.metadata.group_id or 0), search.calls)
    reply = wire.population(search.ask(), batch)
    user.save(search, batch)
    return Message(reply, reply_to=msg)


@app.train("finish")
def finish(msg: Message, context: Context) -> Message:
    """Tell the last population; keep and reply with the single customised vector."""
    user, search, losses = _tell(msg, context)
    user.save(search, user.batch)
    z = search.result
    context.state["z"] = wire.arrays(z=z)
    metrics = {
        "train-loss": float(losses.mean()),
        "best-loss": search.best_fitness,
        "calls": search.calls,
        "examples": len(user.split.train),
        "partition-id": user.partition_id,
    }
    return Message(wire.result(z, metrics), reply_to=msg)


@app.evaluate("query")
def evaluate_query(msg: Message, context: Context) -> Message:
    """Send the test texts and the user's own z (or the start vector if it has none yet)."""
    user = User(context)
    _, z_start = _round_and_start(msg)
    z = user.z if user.z is not None else z_start
    content = RecordDict({"query": wire.arrays(z=z[None]), "texts": user.texts(user.split.test)})
    return Message(content, reply_to=msg)


@app.evaluate("score")
def evaluate_score(msg: Message, context: Context) -> Message:
    """Accuracy of the scores against the private test labels; only the number goes back."""
    user = User(context)
    scores = wire.read_array(msg.content, "scores", "scores", 3)[0]
    labels = np.array([ex.label for ex in user.split.test])
    if scores.shape != (len(labels), len(user.task.label_words)):
        raise wire.ProtocolError(f"scores {scores.shape} do not match {len(labels)} test texts")
    accuracy = float((scores.argmax(1) == labels).mean())
    metrics = MetricRecord({"accuracy": accuracy, "examples": len(labels), "partition-id": user.partition_id})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
