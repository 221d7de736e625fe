"""Users' private data: which task each user (partition id 0..N-1) holds and which of its rows.

Shards are cut from a task's user-side rows only (see `server_user_partition`) with flwr-datasets
partitioners, so the provider's domain-training rows never reach a user. Modes:

- "iid": one task, rows shuffled with the seed and split into N equal contiguous shards (`IidPartitioner`);
- "dirichlet": one task, label skew: each label's rows are divided among users by Dirichlet(alpha)
  proportions (`DirichletPartitioner`; smaller alpha, more skew);
- "task-per-user": users of one domain hold different tasks; user i holds `tasks[i % len(tasks)]` and an
  IID shard of it among the users that share that task.

Everything is a deterministic function of the frozen `PartitionConfig` (and the partition id), so every
ClientApp process computes the same shards; partitioners are cached per config because a ClientApp asks
for its data on every message.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from .core import Example, Task
from .custom import is_spec_file, load_task_spec
from .registry import task_names
from .splits import UserSplit, server_user_partition, split_quotas, stratified_draw

if TYPE_CHECKING:
    from ..config import RunConfig

MODES = ("iid", "dirichlet", "task-per-user")

MIN_DIRICHLET_ROWS = 2
"""The fewest rows a Dirichlet shard may get: what `user_data` needs (one train row and one dev row)."""

MIN_TEST_TEXTS = 20
"""The fewest test texts, over all users, that a run may report an accuracy from (at 20 texts a 95%
interval is already about +-20 points wide)."""


@dataclass(frozen=True)
class PartitionConfig:
    """How users' shards are cut: the mode, its task(s), the number of users, Dirichlet alpha and seed."""

    mode: str = "iid"
    tasks: tuple[str, ...] = ("sst2",)
    num_partitions: int = 2
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown partition mode {self.mode!r}; known modes: {', '.join(MODES)}")
        if not isinstance(self.tasks, tuple) or not self.tasks:
            raise ValueError(f"tasks must be a non-empty tuple of task names, got {self.tasks!r}")
        unknown = [name for name in self.tasks if name not in task_names() and not is_spec_file(name)]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(map(repr, unknown))}; known tasks: {', '.join(task_names())}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct, got {self.tasks!r}")
        if self.mode != "task-per-user" and len(self.tasks) != 1:
            raise ValueError(f"mode {self.mode!r} partitions exactly one task, got {len(self.tasks)}: {self.tasks!r}")
        if self.num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {self.num_partitions}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")


@functools.cache
def _user_rows(task_name: str) -> tuple[Example, ...]:
    """The user-side rows of a registered task, in task order."""
    return server_user_partition(load_task_spec(task_name))[1]


def _locate(config: PartitionConfig, partition_id: int) -> tuple[str, int, int]:
    """(task name, shard index, number of shards of that task) of user `partition_id`."""
    if not 0 <= partition_id < config.num_partitions:
        raise ValueError(f"partition_id must be in [0, {config.num_partitions}), got {partition_id}")
    if config.mode != "task-per-user":
        return config.tasks[0], partition_id, config.num_partitions
    n_tasks = len(config.tasks)
    task_index = partition_id % n_tasks
    return config.tasks[task_index], partition_id // n_tasks, len(range(task_index, config.num_partitions, n_tasks))


@functools.cache
def _partitioner(config: PartitionConfig, task_name: str, num_shards: int) -> Partitioner:
    """A partitioner over `task_name`'s user-side rows, shuffled by the seed; column "row" indexes them.

    Rows are assigned here, so a failed assignment is not cached and fails the same way on every call.
    """
    rows = _user_rows(task_name)
    order = list(range(len(rows)))
    random.Random(f"partition/{task_name}/{config.seed}").shuffle(order)
    dataset = Dataset.from_dict(
        {"uid": [rows[i].uid for i in order], "label": [rows[i].label for i in order], "row": order}
    )
    if config.mode == "dirichlet":
        partitioner: Partitioner = DirichletPartitioner(
            num_partitions=num_shards,
            partition_by="label",
            alpha=config.alpha,
            min_partition_size=MIN_DIRICHLET_ROWS,
            seed=config.seed,
        )
    else:
        partitioner = IidPartitioner(num_partitions=num_shards)
    partitioner.dataset = dataset
    try:
        partitioner.load_partition(0)  # a Dirichlet partitioner assigns every row on its first load
    except ValueError as error:  # too many partitions, or Dirichlet shards below the minimum after 10 draws
        raise ValueError(
            f"cannot cut {len(rows)} user-side rows of {task_name!r} into {num_shards} {config.mode} shards "
            f"(alpha={config.alpha}, dirichlet shards need >= {MIN_DIRICHLET_ROWS} rows): {error}"
        ) from error
    return partitioner


def user_task(config: PartitionConfig, partition_id: int) -> tuple[Task, tuple[Example, ...]]:
    """User `partition_id`'s task and its private rows (user-side rows only), the same in every process."""
    task_name, shard, num_shards = _locate(config, partition_id)
    row_indices = _partitioner(config, task_name, num_shards).load_partition(shard)["row"]
    rows = _user_rows(task_name)
    return load_task_spec(task_name), tuple(rows[i] for i in row_indices)


# Each message rebuilds its User: split once per process and user. Actors take any user's message, so an
# actor sees every user in turn; a cache smaller than the users (it was 4,096) missed on every message.
@functools.lru_cache(maxsize=1 << 16)
def user_data(
    config: PartitionConfig,
    partition_id: int,
    shots_per_class: int = 8,
    n_test: int = 64,
    seed: int = 0,
    class_balanced: bool = False,
    dev_shots_per_class: int = 0,
) -> tuple[Task, UserSplit]:
    """A user's disjoint train/dev/test drawn from its own shard, the same for the same arguments.

    By default train is a stratified sample with the shard's own class proportions (a Dirichlet
    user's few shots are as skewed as its data; every class present appears at least once when the
    size allows): `shots_per_class` x C rows, or half the shard if that is fewer, so that dev can
    match. dev: as many rows (or `dev_shots_per_class` x C when set, within the rows train leaves), the
    same way, from the rest. `class_balanced=True` instead takes per
    class up to `shots_per_class` rows and at most half that class's rows, and as many for dev (one
    train and one dev row if every class has a single row). test: up to `n_test` of the remaining
    rows, a plain random sample. Raises ValueError naming the partition when its shard has < 2 rows.
    """
    if shots_per_class < 1 or n_test < 0:
        raise ValueError(f"need shots_per_class >= 1 and n_test >= 0, got {shots_per_class} and {n_test}")
    task, rows = user_task(config, partition_id)
    if len(rows) < 2:
        raise ValueError(
            f"partition {partition_id} holds {len(rows)} row(s) of {task.name!r}; a user needs at least 2 "
            f"(one train, one dev): use fewer partitions than {config.num_partitions}"
        )
    rng = random.Random(f"user_data/{task.name}/{partition_id}/{seed}")
    by_class = [[row for row in rows if row.label == label] for label in range(len(task.label_words))]
    counts = [len(class_rows) for class_rows in by_class]
    if class_balanced:
        quotas = [min(shots_per_class, count // 2) for count in counts]
        dev_quotas = [min(dev_shots_per_class, n - q) for n, q in zip(counts, quotas)]
        dev_quotas = dev_quotas if dev_shots_per_class else quotas
        train, dev = stratified_draw(by_class, [quotas, dev_quotas], rng)
        if not train:  # every class has one row
            first, second = rng.sample(rows, 2)
            train, dev = [first], [second]
    else:
        size = min(shots_per_class * len(by_class), len(rows) // 2)
        dev_size = min(dev_shots_per_class * len(by_class), len(rows) - size) if dev_shots_per_class else size
        quotas = split_quotas(counts, size, dev_size, rng, class_balanced=False)
        train, dev = stratified_draw(by_class, list(quotas), rng)
    taken = {row.uid for row in train + dev}
    remaining = [row for row in rows if row.uid not in taken]
    test = rng.sample(remaining, min(n_test, len(remaining)))
    return task, UserSplit(tuple(train), tuple(dev), tuple(test))


def check_user_splits(
    config: PartitionConfig,
    shots_per_class: int,
    n_test: int,
    seed: int = 0,
    class_balanced: bool = False,
    dev_shots_per_class: int = 0,
) -> dict:
    """Refuse, before any user is trained, a run whose users cannot all train and test.

    Builds every user's split exactly as its ClientApp will (``user_data``) and raises ValueError with the
    numbers when a user would get no test row or the users' test texts together number fewer than
    ``MIN_TEST_TEXTS``. Returns the sizes: train/dev/test rows per user (min and max) and test texts in all.
    """
    splits = [
        user_data(config, pid, shots_per_class, n_test, seed, class_balanced, dev_shots_per_class)[1]
        for pid in range(config.num_partitions)
    ]
    untestable = [pid for pid, split in enumerate(splits) if not split.test]
    total_test = sum(len(split.test) for split in splits)
    sizes = {
        name: (min(len(getattr(s, name)) for s in splits), max(len(getattr(s, name)) for s in splits))
        for name in ("train", "dev", "test")
    }
    described = (
        f"{config.num_partitions} users of {', '.join(config.tasks)} get {sizes['train'][0]}-{sizes['train'][1]} "
        f"train, {sizes['dev'][0]}-{sizes['dev'][1]} dev and {sizes['test'][0]}-{sizes['test'][1]} test rows each "
        f"(shots-per-class {shots_per_class}, n-test {n_test})"
    )
    if untestable:
        raise ValueError(
            f"{described}: users {untestable[:5]}{' ...' if len(untestable) > 5 else ''} have no test row left; "
            "lower shots-per-class or the number of users"
        )
    if total_test < MIN_TEST_TEXTS:
        raise ValueError(
            f"{described}: {total_test} test texts in all, fewer than the {MIN_TEST_TEXTS} an accuracy is reported "
            "from; raise n-test, or use more users or a task with more rows"
        )
    return {"per_user": sizes, "test_texts": total_test}


def check_run_splits(config: RunConfig, num_users: int) -> dict:
    """`check_user_splits` for a federated run's settings with ``num_users`` users (the wrapper checks them
    before Flower starts, the ServerApp once its users connect)."""
    partition = PartitionConfig(config.partition, config.task_list, num_users, config.dirichlet_alpha, config.seed)
    return check_user_splits(
        partition, config.shots_per_class, config.n_test, config.seed, config.class_balanced, config.dev_shots_per_class
    )
