"""Users' partitions: coverage and disjointness, determinism, label skew, task-per-user, per-user splits."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest

from cbp_fed.tasks import (
    MIN_TEST_TEXTS,
    PartitionConfig,
    check_user_splits,
    load_task,
    server_user_partition,
    user_data,
    user_task,
)


def _shards(config: PartitionConfig) -> list[tuple[str, tuple]]:
    shards = []
    for partition_id in range(config.num_partitions):
        task, rows = user_task(config, partition_id)
        shards.append((task.name, rows))
    return shards


def _mean_majority_share(config: PartitionConfig) -> float:
    shares = [max(Counter(r.label for r in rows).values()) / len(rows) for _, rows in _shards(config)]
    return sum(shares) / len(shares)


def test_iid_shards_are_disjoint_cover_user_rows_and_have_equal_sizes():
    config = PartitionConfig(mode="iid", tasks=("rte",), num_partitions=7, seed=3)
    shards = _shards(config)
    uids = [row.uid for _, rows in shards for row in rows]
    _, user_rows = server_user_partition(load_task("rte"))
    assert len(uids) == len(set(uids)) and set(uids) == {row.uid for row in user_rows}
    sizes = [len(rows) for _, rows in shards]
    assert max(sizes) - min(sizes) <= 1
    assert {name for name, _ in shards} == {"rte"}


def test_partitions_are_deterministic_and_depend_on_the_seed():
    config = PartitionConfig(tasks=("rte",), num_partitions=3, seed=1)
    first = user_task(config, 1)[1]
    assert user_task(PartitionConfig(tasks=("rte",), num_partitions=3, seed=1), 1)[1] == first
    assert user_task(PartitionConfig(tasks=("rte",), num_partitions=3, seed=2), 1)[1] != first


def test_dirichlet_with_small_alpha_skews_labels_more_than_iid():
    iid = PartitionConfig(mode="iid", tasks=("sst2",), num_partitions=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flwr-datasets warns when it redraws a too-small shard
        skewed = PartitionConfig(mode="dirichlet", tasks=("sst2",), num_partitions=10, alpha=0.3)
        shards = _shards(skewed)
        skewed_share = _mean_majority_share(skewed)
    uids = [row.uid for _, rows in shards for row in rows]
    assert len(uids) == len(set(uids)) == len(server_user_partition(load_task("sst2"))[1])
    assert min(len(rows) for _, rows in shards) >= 2
    assert _mean_majority_share(iid) < 0.6 < 0.7 < skewed_share


def test_dirichlet_that_cannot_be_cut_names_the_problem():
    config = PartitionConfig(mode="dirichlet", tasks=("rte",), num_partitions=500)
    with pytest.raises(ValueError, match=r"cannot cut \d+ user-side rows of 'rte' into 500 dirichlet shards"):
        user_task(config, 0)


def test_task_per_user_assigns_tasks_round_robin_with_iid_shards_per_task():
    config = PartitionConfig(mode="task-per-user", tasks=("rte", "sst2", "mrpc"), num_partitions=7)
    shards = _shards(config)
    assert [name for name, _ in shards] == ["rte", "sst2", "mrpc", "rte", "sst2", "mrpc", "rte"]
    for task in config.tasks:
        uids = [row.uid for name, rows in shards if name == task for row in rows]
        assert len(uids) == len(set(uids)) == len(server_user_partition(load_task(task))[1])
        assert all(uid.startswith(f"{task}/") for uid in uids)
    assert len(shards[0][1]) < len(server_user_partition(load_task("rte"))[1]) / 2  # rte split 3 ways


def test_user_data_splits_are_disjoint_balanced_and_deterministic():
    config = PartitionConfig(tasks=("sst2",), num_partitions=4)
    task, split = user_data(config, 2, shots_per_class=8, n_test=64, seed=5, class_balanced=True)
    assert task.name == "sst2"
    train, dev, test = ({row.uid for row in part} for part in (split.train, split.dev, split.test))
    assert len(train) == 16 and len(dev) == 16 and len(test) == 64
    assert not (train & dev) and not (train & test) and not (dev & test)
    assert Counter(row.label for row in split.train) == {0: 8, 1: 8}
    assert train | dev | test <= {row.uid for row in user_task(config, 2)[1]}
    assert user_data(config, 2, shots_per_class=8, n_test=64, seed=5, class_balanced=True) == (task, split)
    assert user_data(config, 2, shots_per_class=8, n_test=64, seed=6, class_balanced=True)[1] != split


def test_user_data_follows_a_skewed_shards_own_label_distribution():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flwr-datasets warns when it redraws a too-small shard
        config = PartitionConfig(mode="dirichlet", tasks=("sst2",), num_partitions=6, alpha=0.3)
        shards = [user_task(config, pid)[1] for pid in range(6)]
    checked = 0
    for pid, rows in enumerate(shards):
        if len(rows) < 64:
            continue
        counts = Counter(row.label for row in rows)
        _, split = user_data(config, pid, shots_per_class=8, n_test=16, seed=1)
        assert len(split.train) == len(split.dev) == 16
        train = Counter(row.label for row in split.train)
        for label, count in counts.items():
            assert abs(train[label] - 16 * count / len(rows)) <= 1, (pid, label)
        uids = [row.uid for part in (split.train, split.dev, split.test) for row in part]
        assert len(uids) == len(set(uids))
        assert user_data(config, pid, shots_per_class=8, n_test=16, seed=1)[1] == split
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("class_balanced", [False, True])
def test_user_data_takes_fewer_rows_from_a_small_shard(class_balanced):
    config = PartitionConfig(tasks=("rte",), num_partitions=40)  # about 5 rows each
    _, rows = user_task(config, 0)
    _, split = user_data(config, 0, shots_per_class=8, n_test=64, class_balanced=class_balanced)
    assert 1 <= len(split.train) and len(split.dev) <= len(split.train) <= len(rows) // 2
    assert len(split.train) + len(split.dev) + len(split.test) == len(rows)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown partition mode 'shards'; known modes: iid, dirichlet, task-per-user"):
        PartitionConfig(mode="shards")
    with pytest.raises(ValueError, match=r"unknown task\(s\) 'imdb'; known tasks: .*sst2"):
        PartitionConfig(tasks=("imdb",))
    with pytest.raises(ValueError, match="partitions exactly one task"):
        PartitionConfig(mode="dirichlet", tasks=("sst2", "rte"))
    with pytest.raises(ValueError, match="tasks must be distinct"):
        PartitionConfig(mode="task-per-user", tasks=("sst2", "sst2"))
    with pytest.raises(ValueError, match="non-empty tuple"):
        PartitionConfig(tasks=["sst2"])
    with pytest.raises(ValueError, match="num_partitions must be >= 1"):
        PartitionConfig(num_partitions=0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        PartitionConfig(alpha=0.0)
    config = PartitionConfig(tasks=("rte",), num_partitions=150)  # 1 or 2 rows per shard
    with pytest.raises(ValueError, match=r"partition_id must be in \[0, 150\), got 150"):
        user_task(config, 150)
    tiny = next(i for i in range(150) if len(user_task(config, i)[1]) < 2)
    with pytest.raises(ValueError, match=rf"partition {tiny} holds 1 row\(s\) of 'rte'"):
        user_data(config, tiny)


@pytest.mark.parametrize("class_balanced", [False, True])
def test_user_data_keeps_one_train_row_when_every_class_has_one_row(class_balanced):
    config = PartitionConfig(tasks=("rte",), num_partitions=150)  # 1 or 2 rows per shard
    pid = next(i for i in range(150) if len({row.label for row in user_task(config, i)[1]}) == 2)
    _, split = user_data(config, pid, class_balanced=class_balanced)
    assert (len(split.train), len(split.dev), len(split.test)) == (1, 1, 0)
    assert split.train[0].uid != split.dev[0].uid


def test_a_users_own_data_through_a_toml_spec_is_partitioned_like_a_registered_task(tmp_path):
    rows = "\n".join(f"{'good' if i % 2 else 'bad'} quarter number {i},{i % 2}" for i in range(60))
    (tmp_path / "news.csv").write_text("sentence,label\n" + rows + "\n")
    spec = tmp_path / "news.toml"
    spec.write_text(
        f'source = "{tmp_path / "news.csv"}"\ntemplate = "Sentence: {{sentence}}\\nSentiment:"\n'
        'label_column = "label"\nlabel_values = ["0", "1"]\nlabel_words = [" negative", " positive"]\n'
        'name = "news"\ndomain = "finance"\n'
    )
    config = PartitionConfig("iid", (str(spec),), num_partitions=2, seed=0)
    task, split = user_data(config, 1, shots_per_class=2, n_test=4)
    assert task.name == "news" and task.label_words == (" negative", " positive")
    assert len(split.train) == 4 and len(split.test) == 4
    _, shard0 = user_task(config, 0)
    _, shard1 = user_task(config, 1)
    assert {e.uid for e in shard0}.isdisjoint(e.uid for e in shard1)
    with pytest.raises(FileNotFoundError, match="custom task spec"):
        PartitionConfig("iid", (str(tmp_path / "missing.toml"),)) and user_task(
            PartitionConfig("iid", (str(tmp_path / "missing.toml"),)), 0
        )


def test_a_run_whose_users_cannot_all_train_and_test_is_refused_with_the_numbers():
    config = PartitionConfig("iid", ("sst2",), num_partitions=2)
    sizes = check_user_splits(config, shots_per_class=3, n_test=12)
    assert sizes["per_user"]["train"] == (6, 6) and sizes["test_texts"] == 24
    with pytest.raises(ValueError, match=r"2 users of sst2 get \d+-\d+ train.*users \[0\] have no test row left"):
        check_user_splits(config, shots_per_class=5000, n_test=12)
    with pytest.raises(ValueError, match=rf"8 test texts in all, fewer than the {MIN_TEST_TEXTS}"):
        check_user_splits(config, shots_per_class=3, n_test=4)
