"""The user: a Flower ClientApp that tunes one task vector z with CMA-ES on its private data.

It never sees the model: it sends candidates and its texts, receives label-word scores, and scores
them with its private labels. Its optimiser lives in ``context.state`` (bytes of a pickled pycma
object it wrote itself) and never goes on the wire. With ``user-state-dir`` set it also keeps a copy
of that state on its own disk after each finished round, so a provider that crashes and resumes
(``resume-from``) finds every user exactly where the interrupted run left it.

Every server message is checked before the state is touched (shapes against what this user asked,
finite values, the round): a bad message becomes an error reply and the state stays as it was.
Light imports only (numpy, cma, flwr, the task loader): no torch, no transformers.
"""

from __future__ import annotations

import pickle
import re
import secrets
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import protocol as wire
from .calibration import (
    CONTENT_FREE,
    content_free,
    content_free_prior,
    fit_offsets,
    held_out_options,
    label_prior,
    own_options,
    protect,
)
from .config import RunConfig
from .faults import inject, parse_faults
from .privacy.defences import decoy_positions, gaussian_release, noisy_fitness
from .search import CMASearch, SearchConfig, SubspaceSearch, best_on_dev, dev_accuracy_and_loss
from .tasks import user_data
from .tasks.core import Example
from .tasks.partition import PartitionConfig

app = ClientApp()

KEPT_ACROSS_ROUNDS = ("own", "choice", "plain-test")
"""The records of a protecting user's own options and choice (``protect``): on its disk beside its optimiser."""


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
            partition,
            self.partition_id,
            self.config.shots_per_class,
            self.config.n_test,
            self.config.seed,
            class_balanced=self.config.class_balanced,
            dev_shots_per_class=self.config.dev_shots_per_class,
        )
        self.labels = np.array([ex.label for ex in self.split.train])
        self.selects = self.config.select_on_dev and self.config.method != "fedbpt" and bool(self.split.dev)
        # under selection-noise the choice is the label mechanism's; a clean dev comparison would bypass it
        self.protects = self.selects and self.config.protect and not self.config.selection_noise
        self.sigma_sq = 0.0  # sigma^2 summed over the populations asked this round (kept with the optimiser)
        self.real_candidates: list[int] = []  # wire positions of the real candidates of the population out

    def seed(self, *more: int) -> list[int]:
        """Seed of one of this user's random draws: (run seed, partition id, *more)."""
        return [self.config.seed, self.partition_id, *more]

    def private_seed(self, *more: int) -> list[int]:
        """Seed of a draw the provider must not repeat (the defences' noise and decoy positions): the
        run seed is in the public run config, so these draws use the user's secret instead, from node
        config ``secret`` when the operator sets one (reproducible runs), else drawn once from the OS's
        entropy and kept in the user's state (and on its disk with ``user-state-dir``)."""
        record = self.context.state.config_records.get("secret")
        if record is None:
            secret = int(self.context.node_config.get("secret", secrets.randbits(62)))
            record = self.context.state["secret"] = ConfigRecord({"secret": secret})
        return [int(record["secret"]), self.partition_id, *more]

    def inject_faults(self, msg: Message, round: int) -> None:
        """Act out this run's planned failures (``inject-faults``) for this user and message."""
        faults = parse_faults(self.config.inject_faults)
        inject(faults, self.partition_id, round, msg.metadata.message_type, self.config.round_timeout)

    # ------------------------------------------------------------ state: context.state (+ own disk)
    def load_search(self, round: int, z_start: np.ndarray, run_key: str, basis: np.ndarray | None) -> CMASearch:
        """The optimiser as the last finished round left it: from context.state, else from this
        user's disk (a resumed run), else a new one at ``z_start``, over all r coordinates or, given the
        provider's ``basis (K, r)``, over u in z = z_start + u @ basis. A population asked in a round that
        was cut short was never scored: it is discarded."""
        saved = self.context.state.config_records.get("search")
        if saved is None and self.config.user_state_dir:
            self.restore_from_disk(round, run_key)
            saved = self.context.state.config_records.get("search")
        if saved is not None:
            search = CMASearch.from_bytes(saved["blob"])
            search.discard_pending()
            return search
        c = self.config
        settings = SearchConfig(c.popsize, c.sigma0, c.num_rounds * c.calls_per_round, c.diagonal, loss=c.loss)
        seed = c.seed * 100_003 + self.partition_id
        if basis is not None:
            return SubspaceSearch(z_start, basis, settings, seed)
        return CMASearch(z_start, settings, seed)

    def round_search(self, round: int, z_start: np.ndarray, sigma: float) -> CMASearch:
        """FedBPT: a fresh optimiser for this round only, at the global mean ``z_start (r,)`` with the
        global ``sigma``, seeded by (seed, partition id, round): nothing of it outlives the round."""
        c = self.config
        seed = int(np.random.SeedSequence([c.seed, self.partition_id, round]).generate_state(1)[0])
        return CMASearch(z_start, SearchConfig(c.popsize, sigma, c.calls_per_round, c.diagonal, loss=c.loss), seed)

    def save(self, search: CMASearch, batch: list[int], round: int, run_key: str) -> None:
        """The optimiser into context.state; a population just asked adds its sigma^2 to ``sigma-sq``."""
        if search.pending:
            self.sigma_sq += float(search.es.sigma) ** 2
        record = {"blob": search.to_bytes(), "batch": batch, "round": round, "run-key": run_key}
        record["real-candidates"] = self.real_candidates
        record["sigma-sq"] = self.sigma_sq
        self.context.state["search"] = ConfigRecord(record)

    def state_dir(self, run_key: str) -> Path:
        return Path(self.config.user_state_dir) / run_key / f"user-{self.partition_id}"

    def save_to_disk(self, round: int, run_key: str) -> None:
        """Keep this round's finished state (optimiser + z) on the user's own disk; two rounds kept."""
        folder = self.state_dir(run_key)
        folder.mkdir(parents=True, exist_ok=True)
        search = self.context.state.config_records["search"]
        saved = {"search": bytes(search["blob"]), "z": self.z, "secret": self.private_seed()[0]}
        saved["kept"] = {k: self.context.state[k] for k in KEPT_ACROSS_ROUNDS if k in self.context.state}
        blob = pickle.dumps(saved)
        tmp = folder / f"round-{round}.tmp"
        tmp.write_bytes(blob)
        tmp.replace(folder / f"round-{round}.bin")
        (folder / f"round-{round - 2}.bin").unlink(missing_ok=True)

    def restore_from_disk(self, round: int, run_key: str) -> None:
        """Load the newest state this user saved before ``round`` into context.state (if any)."""
        rounds = [int(p.stem.split("-")[1]) for p in self.state_dir(run_key).glob("round-*.bin")]
        earlier = [r for r in rounds if r < round]
        if not earlier:
            return
        last = max(earlier)
        saved = pickle.loads((self.state_dir(run_key) / f"round-{last}.bin").read_bytes())  # our own file
        record = {"blob": saved["search"], "batch": [], "round": last, "run-key": run_key}
        self.context.state["search"] = ConfigRecord(record)
        self.context.state["secret"] = ConfigRecord({"secret": saved["secret"]})
        if saved["z"] is not None:
            self.context.state["z"] = wire.arrays(z=saved["z"])
        for key, record in saved.get("kept", {}).items():
            self.context.state[key] = record

    def saved_search(self, round: int, pending: bool = True) -> tuple[CMASearch, list[int], str]:
        """The optimiser mid-round, refusing a step that belongs to no round this user began, and scores
        for a population that was already told (``pending``) or for a selection never asked for."""
        saved = self.context.state.config_records.get("search")
        if saved is None or saved.get("round") != round:
            raise wire.ProtocolError(f"a step of round {round} without a train.begin of that round")
        search = CMASearch.from_bytes(saved["blob"])
        if pending and not search.pending:
            raise wire.ProtocolError(f"round {round}: scores for a population that was already told")
        if not pending and (search.pending or "select" not in self.context.state.array_records):
            raise wire.ProtocolError(f"round {round}: a train.finish before this user's train.select")
        self.sigma_sq = float(saved["sigma-sq"])
        self.real_candidates = list(saved.get("real-candidates", [])) or list(range(search.config.popsize))
        return search, list(saved["batch"]), saved["run-key"]

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

    def text_layout(self, round: int) -> tuple[list, np.ndarray, np.ndarray]:
        """The round's texts as sent: the training rows with ``decoy-texts`` of this user's dev rows per
        training row mixed in at seeded positions (none: the training rows in order), then, when it
        selects on dev, the dev rows not already sent, then, when it protects itself and its task has label
        words, content-free versions of its template (``content_free_rows``). Returns (rows in wire order,
        ``source (n_wire,)``: the training index of each, -1 for a decoy, -2 for a dev row sent only for
        the selection, -3 for a content-free row, ``real (n_train,)``: the wire position of each training row)."""
        train, dev = self.split.train, self.split.dev
        n_decoy = min(int(np.floor(self.config.decoy_texts * len(train) + 0.5)), len(dev))
        order, real = decoy_positions(len(train), n_decoy, self.private_seed(round, 1))
        rows = [train[i] if i < len(train) else dev[i - len(train)] for i in order]
        source = np.where(order < len(train), order, -1)
        if self.selects:
            rows += dev[n_decoy:]
            source = np.concatenate([source, np.full(len(dev) - n_decoy, -2)])
        blank = self.content_free_rows()
        return rows + blank, np.concatenate([source, np.full(len(blank), -3)]), real

    def content_free_rows(self) -> list[Example]:
        """The user's first training row with its content replaced by each ``CONTENT_FREE`` filler: its
        template's prior over the answers (label-word tasks; an option-scored row has its own prior, so none)."""
        if not self.protects or self.task.scoring == "options":
            return []
        first = self.split.train[0]
        return [Example(*content_free(first.passage, first.query, f), -1, f"content-free/{f}") for f in CONTENT_FREE]

    def plain_positions(self, source: np.ndarray, real: np.ndarray, rows: list) -> list[int]:
        """Wire positions of the texts whose no-prompt scores the user's own options need, in the order
        ``own_record`` reads them: its training rows, its dev rows, its content-free rows."""
        return [*real.tolist(), *self.dev_positions(rows), *np.flatnonzero(source == -3).tolist()]

    def own_record(self, plain: np.ndarray) -> None:
        """From the no-prompt scores ``(p, C)`` of ``plain_positions``, what the user's own options need,
        kept in its state: the offsets fitted on its train rows, its template's content-free prior, its
        train labels' prior (the majority answer) and its train and dev rows' zero-shot scores."""
        n_train, n_dev, c = len(self.split.train), len(self.split.dev), len(self.task.label_words)
        train, dev, blank = plain[:n_train], plain[n_train : n_train + n_dev], plain[n_train + n_dev :]
        prior = content_free_prior(blank[:, None]) if len(blank) else np.zeros((0, c))
        self.context.state["own"] = wire.arrays(
            offsets=fit_offsets(train, self.labels),
            prior=prior.reshape(-1, c),
            labels=label_prior(self.labels, c),
            train=train,
            dev=dev,
        )

    def own_options(self, zero_shot: np.ndarray) -> dict[str, np.ndarray]:
        """The user's own options' scores (``calibration.own_options``) from zero-shot scores ``(n, C)``."""
        own = self.context.state.array_records["own"]
        prior = own["prior"].numpy()
        return own_options(zero_shot, own["offsets"].numpy(), prior if len(prior) else None, own["labels"].numpy())

    def dev_positions(self, rows: list) -> list[int]:
        """Wire positions of the dev rows (in dev order) in the round's texts ``rows``."""
        position = {ex.uid: i for i, ex in enumerate(rows)}
        return [position[ex.uid] for ex in self.split.dev]

    def wire_batch(self, round: int, step: int, source: np.ndarray, real: np.ndarray) -> list[int]:
        """Wire positions to score the next population on: the training batch (``next_batch``) and the
        decoys (all of them with the whole training set, else ``decoy-texts`` per batch row, seeded)."""
        batch = self.next_batch(round, step)
        decoys = np.flatnonzero(source == -1)
        if len(decoys) and len(batch) < len(real):
            n = min(int(np.floor(self.config.decoy_texts * len(batch) + 0.5)), len(decoys))
            decoys = np.random.default_rng(self.private_seed(round, step, 2)).choice(decoys, n, replace=False)
        return sorted(real[batch].tolist() + decoys.tolist())

    def ask(self, search: CMASearch, round: int) -> np.ndarray:
        """The next population as sent ``(wire_popsize, r)``: CMA-ES's popsize candidates with
        ``decoy-candidates`` draws of the same distribution mixed in at seeded positions; the real ones'
        positions are kept (``real_candidates``) to pick their scores out at the tell."""
        z = search.ask()
        n_decoy = self.config.decoy_candidate_count
        order, real = decoy_positions(len(z), n_decoy, self.private_seed(round, search.calls, 3))
        self.real_candidates = real.tolist()
        if n_decoy:
            decoys = search.sample_like(n_decoy, np.random.default_rng(self.private_seed(round, search.calls, 4)))
            z = np.concatenate([z, decoys])[order]
        return z

    def texts(self, rows) -> ConfigRecord:
        options = [list(ex.options) for ex in rows] if self.task.scoring == "options" else None
        return wire.texts(
            [ex.passage for ex in rows],
            [ex.query for ex in rows],
            list(self.task.label_words),
            self.task.name,
            self.task.domain,
            self.partition_id,
            options,
            self.task.length_norm,
        )


RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _read_start(msg: Message, r: int) -> tuple[int, np.ndarray, str]:
    """train.begin / evaluate.query: the round (>= 1), the start vector ``(r,)`` and the run key (a
    folder name this user may use on its own disk, so it is checked)."""
    round = wire.read_config(msg.content, "round", "round", int)
    if round < 1:
        raise wire.ProtocolError(f"round/round must be >= 1, got {round}")
    run_key = wire.read_config(msg.content, "round", "run-key", str)
    if not RUN_KEY.match(run_key) or ".." in run_key:
        raise wire.ProtocolError(f"round/run-key {run_key[:40]!r} is not a plain folder name")
    return round, wire.read_shaped(msg.content, "start", "z-start", (r,)), run_key


def _round_of(msg: Message) -> int:
    try:
        return int(msg.metadata.group_id)
    except ValueError as err:
        raise wire.ProtocolError(f"group id {msg.metadata.group_id!r} is not a round number") from err


@app.train("begin")
def begin(msg: Message, context: Context) -> Message:
    """Restore or create the optimiser, send the round's texts and the first population."""
    user = User(context)
    round, z_start, run_key = _read_start(msg, user.config.r)
    user.inject_faults(msg, round)
    if user.config.method == "fedbpt":
        search = user.round_search(round, z_start, wire.read_sigma(msg.content))
    else:
        c = user.config
        basis = wire.read_shaped(msg.content, "start", "basis", (c.subspace, c.r)) if c.subspace else None
        search = user.load_search(round, z_start, run_key, basis)
    rows, source, real = user.text_layout(round)
    batch = user.wire_batch(round, 0, source, real)
    content = wire.population(user.ask(search, round), batch)
    content["texts"] = user.texts(rows)
    context.state["anchor"] = wire.arrays(z=z_start)  # the public point dp-clip measures the release from
    user.save(search, batch, round, run_key)
    return Message(content, reply_to=msg)


def _tell(msg: Message, user: User, round: int) -> tuple[CMASearch, np.ndarray, str]:
    """Fitness of the scored population with the private labels, told to CMA-ES (state not saved yet);
    returns the search, the losses told ``(popsize,)`` and the round's run key. Decoy candidates' and
    decoy texts' scores are dropped. The label mechanism (``privacy/accounting.py``): each text's loss
    capped at ``loss-clip``, then ``selection-noise`` added; everything the user reports of its search
    derives from what it told, never from the clean losses."""
    search, batch, run_key = user.saved_search(round)
    c = user.config
    shape = (search.config.popsize + c.decoy_candidate_count, len(batch), len(user.task.label_words))
    scores = wire.read_shaped(msg.content, "scores", "scores", shape)[user.real_candidates]
    source = user.text_layout(round)[1][batch]
    real = source >= 0
    rng = np.random.default_rng(user.private_seed(round, search.calls, 5)) if c.selection_noise else None
    losses = noisy_fitness(scores[:, real], user.labels[source[real]], c.loss, c.loss_clip, c.selection_noise, rng)
    search.tell(losses)
    return search, losses, run_key


@app.train("step")
def step(msg: Message, context: Context) -> Message:
    """Tell CMA-ES the scored population's fitness; reply with the next population."""
    user, round = User(context), _round_of(msg)
    user.inject_faults(msg, round)
    search, _, run_key = _tell(msg, user, round)
    _, source, real = user.text_layout(round)
    batch = user.wire_batch(round, search.calls, source, real)
    reply = wire.population(user.ask(search, round), batch)
    user.save(search, batch, round, run_key)
    return Message(reply, reply_to=msg)


@app.train("select")
def select(msg: Message, context: Context) -> Message:
    """Tell CMA-ES the round's last population; reply with the points to choose this round's z from
    (the z kept so far, at first the start vector; the search mean; its best candidate) on the dev texts."""
    user, round = User(context), _round_of(msg)
    user.inject_faults(msg, round)
    if not user.selects:
        raise wire.ProtocolError("train.select for a user that does not select on dev (select-on-dev = false)")
    search, losses, run_key = _tell(msg, user, round)
    kept = user.z if user.z is not None else context.state.array_records["anchor"]["z"].numpy()
    points = np.stack([kept, search.mean, search.best])
    rows, source, real = user.text_layout(round)
    batch = user.dev_positions(rows)
    asks = (
        user.plain_positions(source, real, rows) if user.protects and "own" not in context.state.array_records else []
    )
    context.state["select"] = wire.arrays(
        points=points, train_loss=np.array([losses.mean()]), asks=np.array([len(asks)])
    )
    user.save(search, batch, round, run_key)
    reply = wire.population(points, batch)
    if asks:  # the no-prompt scores its own options need, once
        reply["plain"] = wire.plain(asks)
    return Message(reply, reply_to=msg)


def _choose(msg: Message, user: User, round: int) -> tuple[np.ndarray, dict[str, float]]:
    """The point kept this round: the best on dev of the ones sent at train.select (accuracy, then
    cross-entropy; the z kept before wins ties), and the selection metrics. Under ``selection-noise``
    the choice is the label mechanism's: the lowest clipped dev cross-entropy plus the same noise, and
    the dev accuracies, which carry no noise, stay with the user."""
    record = user.context.state.array_records["select"]
    points = record["points"].numpy()
    labels = np.array([ex.label for ex in user.split.dev])
    shape = (len(points), len(labels), len(user.task.label_words))
    scores = wire.read_shaped(msg.content, "scores", "scores", shape)
    train_loss = {"train-loss": float(record["train-loss"].numpy()[0])}
    c = user.config
    if c.selection_noise:
        rng = np.random.default_rng(user.private_seed(round, 7))
        kept = int(np.argmin(noisy_fitness(scores, labels, "ce", c.loss_clip, c.selection_noise, rng)))
        return points[kept], {**train_loss, "kept": kept}
    accuracy, loss = dev_accuracy_and_loss(scores, labels)
    kept = best_on_dev(accuracy, loss)
    metrics = {"kept": kept, "dev-accuracy": float(accuracy[kept]), "dev-accuracy-before": float(accuracy[0])}
    if user.protects:
        _protect(msg, user, scores[kept], int(record["asks"].numpy()[0]))
    return points[kept], {**train_loss, **metrics}


def _protect(msg: Message, user: User, kept_dev: np.ndarray, asked: int) -> None:
    """The user's protected choice (``calibration.protect``) between its own options and the point it kept
    (``kept_dev``: its dev scores ``(n_dev, C)``), kept in its state for its evaluations; the no-prompt
    scores of the ``asked`` texts it asked for at train.select become its own options' record first."""
    if asked:
        shape = (1, asked, len(user.task.label_words))
        user.own_record(wire.read_shaped(msg.content, "scores", "plain", shape)[0])
    record = user.context.state.array_records["own"]
    labels = np.array([ex.label for ex in user.split.dev])
    prior = record["prior"].numpy()
    held_out = held_out_options(record["train"].numpy(), user.labels, prior if len(prior) else None)
    options = {**user.own_options(record["dev"].numpy()), "prompt": kept_dev}
    choice = protect(labels, options, {"prompt"}, user.config.protect_alpha, (user.labels, held_out))
    user.context.state["choice"] = ConfigRecord({"option": choice.kept})


def _local_search(search: CMASearch, losses: np.ndarray, sigma_sq: float) -> dict[str, float]:
    """What a FedBPT user reports of its round beside its local mean, without another model call.

    local-loss: the last population's losses ``(k,)`` of its mu best, averaged with CMA-ES's
    recombination weights: the candidates the returned mean is the weighted average of, so an
    estimate of the loss at that mean (the reference code spends an extra evaluation on it).
    local-sigma: sqrt(sum_t sigma_t^2 / mu) over the round's K populations: the spread the mean's
    displacement from the global mean would have under random selection (the reference's formula),
    from which the provider calibrates the global step size.
    """
    weights = search.es.sp.weights
    parents = np.sort(losses)[: weights.mu]
    return {
        "local-loss": float(parents @ np.asarray(weights.positive_weights)),
        "local-sigma": float(np.sqrt(sigma_sq / weights.mu)),
    }


@app.train("finish")
def finish(msg: Message, context: Context) -> Message:
    """Keep and reply with the single customised vector: the point chosen on dev (``_choose``), or
    without dev selection the last population told and the search's result (with ``dp-clip``: its
    Gaussian release, the only z the provider ever gets, also at evaluation). A FedBPT user keeps
    nothing (its evaluation uses the global mean) and adds its ``_local_search`` metrics."""
    user, round = User(context), _round_of(msg)
    user.inject_faults(msg, round)
    if user.selects:
        search, _, run_key = user.saved_search(round, pending=False)
        z, selection = _choose(msg, user, round)
        del context.state["select"]
    else:
        search, losses, run_key = _tell(msg, user, round)
        z, selection = search.result, {"train-loss": float(losses.mean())}
    if user.config.dp_clip:
        anchor = context.state.array_records["anchor"]["z"].numpy()
        z = gaussian_release(z, anchor, user.config.dp_clip, user.config.dp_noise, user.private_seed(round, 6))
    metrics = {
        **selection,
        "best-loss": search.best_fitness,
        "calls": search.calls,
        "examples": len(user.split.train),
        "partition-id": user.partition_id,
    }
    if user.config.method == "fedbpt":
        del context.state["search"]
        metrics.update(_local_search(search, losses, user.sigma_sq))
        return Message(wire.result(z, metrics), reply_to=msg)
    user.save(search, [], round, run_key)
    context.state["z"] = wire.arrays(z=z)
    if user.config.user_state_dir:
        user.save_to_disk(round, run_key)
    return Message(wire.result(z, metrics), reply_to=msg)


@app.evaluate("query")
def evaluate_query(msg: Message, context: Context) -> Message:
    """Send the test texts and the user's own z (or the start vector if it has none yet: always for
    FedBPT, whose product is the one global mean)."""
    user = User(context)
    round, z_start, _ = _read_start(msg, user.config.r)
    user.inject_faults(msg, round)
    z = user.z if user.z is not None else z_start
    content = RecordDict({"query": wire.arrays(z=z[None]), "texts": user.texts(user.split.test)})
    if "choice" in context.state.config_records and "plain-test" not in context.state.array_records:
        content["plain"] = wire.plain(list(range(len(user.split.test))))
    return Message(content, reply_to=msg)


@app.evaluate("score")
def evaluate_score(msg: Message, context: Context) -> Message:
    """Accuracy of the scores against the private test labels; only the numbers go back: the accuracy of
    the user's z and, once it has made its protected choice, that of the option it ends on and that of its
    best own option on these rows (known only in hindsight; reported so a run shows who ended below it)."""
    user = User(context)
    labels = np.array([ex.label for ex in user.split.test])
    shape = (1, len(labels), len(user.task.label_words))
    scores = wire.read_shaped(msg.content, "scores", "scores", shape)[0]
    accuracy = float((scores.argmax(1) == labels).mean())
    metrics = {"accuracy": accuracy, "examples": len(labels), "partition-id": user.partition_id}
    choice = context.state.config_records.get("choice")
    if choice is not None:
        if "plain-test" not in context.state.array_records:
            context.state["plain-test"] = wire.arrays(scores=wire.read_shaped(msg.content, "scores", "plain", shape)[0])
        own = user.own_options(context.state.array_records["plain-test"]["scores"].numpy())
        option = str(choice["option"])
        ends = own[option] if option in own else scores
        metrics.update(
            {
                "protected-accuracy": float((ends.argmax(1) == labels).mean()),
                "protected-own": float(option in own),
                "own-best-accuracy": max(float((s.argmax(1) == labels).mean()) for s in own.values()),
                **{f"own-accuracy-{name}": float((s.argmax(1) == labels).mean()) for name, s in own.items()},
            }
        )
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
