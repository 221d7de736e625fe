"""Stage 2 in one process: one user customises z for one task through the BlackBox (no Flower).

The loop is the whole method seen from the user's side:

    split = the user's private train / dev / test rows (its natural label distribution)
    kept  = the start vector, scored on dev
    repeat until the call budget is spent:
        Z = search.ask()                                    (k, r) candidates
        scores = blackbox.score(Z, a mini-batch of train)   (k, b, C)  <- the provider's only answer
        search.tell(fitness(scores, private batch labels))  (k,)
        at each selection point: score the search mean and its best candidate on dev; keep the
        best of them and the z kept so far (never worse than the start on the user's own dev rows)
    report the kept z's test accuracy (and which z it is, and why)

``eval_split="dev"`` reports the dev split instead and never scores a test row: hyperparameter
search (``tune.py``) selects on dev and touches test once, at the end (it then turns the dev
selection off, since dev is its own yardstick).

The same code runs the baselines: what a user can do without the provider's generator (the
majority answer, zero-shot, zero-shot calibrated on content-free inputs or with offsets fitted on its
train rows, in-context demonstrations from its train rows), SDT-only (generator with z0, no search)
and BBT (a projected prompt without generator). The federated strategies reuse the BlackBox,
CMASearch and fitness pieces.

A user with a prompt also ends on its protected choice (``final``, see ``calibration.protect``): the
no-provider options are scored on its dev rows too, and it keeps the prompt only when its dev rows say
the prompt is better. The search's own result stays in ``test_accuracy``.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from functools import partial

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .backbone import FrozenLM
from .calibration import (
    CONTENT_FREE,
    PROTECT_ALPHA,
    content_free,
    content_free_prior,
    fit_offsets,
    held_out_options,
    label_prior,
    own_options,
    protect,
)
from .calibration import calibrated as divide_prior
from .domain_training import load_generator
from .prompts import NoPrompt, ProjectedPrompt
from .search import (
    CMASearch,
    SearchConfig,
    SubspaceSearch,
    best_on_dev,
    dev_accuracy_and_loss,
    fitness,
    task_subspace,
)
from .service import BlackBox, Limits, Query, QueryError, accuracy
from .tasks import UserSplit, load_task_spec, task_names, user_split
from .tasks.custom import CustomTask, is_spec_file

OWN = ("majority", "zero-shot", "calibrated", "calibrated-fit")
"""What a user can do with no prompt from the provider, in the order a tie prefers (simplest first)."""
METHODS = (*OWN, "icl", "sdt-only", "bbt", "cbp")
PROMPTED = ("sdt-only", "bbt", "cbp")
SEARCHING = ("bbt", "cbp")
EVAL_SPLITS = ("test", "dev")
BBT_SIGMA0 = 1.0


@dataclass(frozen=True)
class CustomizeConfig:
    """One user-side run. ``generator`` (an SDT checkpoint folder) is required by sdt-only and cbp.

    Data: ``shots_per_class`` x C train rows drawn with the user's natural label distribution
    (``class_balanced`` for BBT's balanced k-shot sets), as many dev rows (or ``n_dev`` rows, or
    ``dev_shots_per_class`` x C), ``n_test`` test rows. ``batch_size``: train texts scored per call (0 =
    all of them). ``sigma0``: None takes the method's default, CBP the generator's SDT noise scale (where
    its task vectors were trained), BBT 1.
    ``select_on_dev``: at every checkpoint and at the end, keep the best of {the z kept so far (at first
    the start vector), the search mean, its best candidate} on dev: the user never keeps a z that is
    worse than its start on its own held-out rows. ``eval_split``: the split the summary's accuracies
    are measured on; with ``"dev"`` no test row is ever scored (and dev selection must be off).
    ``subspace``: CBP searches K = ``subspace`` coordinates along the generator's SDT task vectors
    instead of all r (``search.SubspaceSearch``; 0: all r). ``protect_alpha``: the level of the dev sign
    test that moves a user with a prompt from its best no-provider option to the prompt
    (``calibration.protect``).
    """

    task: str
    method: str = "cbp"
    seed: int = 0
    budget: int = 200
    popsize: int = 10
    sigma0: float | None = None
    diagonal: bool = False
    loss: str = "ce"
    backbone: str = "smollm2-135m"
    dtype: str = "auto"
    device: str = "auto"
    generator: str | None = None
    bbt_r: int = 500
    bbt_t: int = 10
    shots_per_class: int = 16
    n_test: int = 300
    max_tokens: int = 128
    checkpoints: tuple[int, ...] = ()
    eval_split: str = "test"
    n_dev: int | None = None
    dev_shots_per_class: int | None = None
    batch_size: int = 8
    class_balanced: bool = False
    select_on_dev: bool = True
    protect_alpha: float = PROTECT_ALPHA
    subspace: int = 0

    def __post_init__(self):
        if self.subspace < 0 or (self.subspace and self.method != "cbp"):
            raise ValueError(f"subspace must be >= 0 and set only for cbp (its SDT task vectors), got {self.subspace}")
        if not 0 < self.protect_alpha < 1:
            raise ValueError(f"protect_alpha must be in (0, 1), got {self.protect_alpha}")
        if self.eval_split not in EVAL_SPLITS:
            raise ValueError(f"unknown eval_split {self.eval_split!r}; choose from {EVAL_SPLITS}")
        if self.eval_split == "dev" and self.select_on_dev and self.method in SEARCHING:
            raise ValueError("eval_split='dev' reports dev, so it cannot also select on dev: set select_on_dev=False")
        if self.n_dev is not None and self.n_dev < 1:
            raise ValueError(f"n_dev must be >= 1 (or None: as many as train), got {self.n_dev}")
        if self.dev_shots_per_class is not None and (self.dev_shots_per_class < 1 or self.n_dev is not None):
            raise ValueError(
                f"dev_shots_per_class must be >= 1 and not set beside n_dev, got {self.dev_shots_per_class} "
                f"(n_dev {self.n_dev})"
            )
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be >= 0 (0 = the whole train split), got {self.batch_size}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {METHODS}")
        if self.task not in task_names() and not is_spec_file(self.task):
            raise ValueError(
                f"unknown task {self.task!r}; known: {', '.join(task_names())}, or a custom task spec file "
                "(.json or .toml)"
            )
        if self.method in SEARCHING and self.shots_per_class < 1:
            raise ValueError(
                f"method {self.method!r} searches on train rows: shots must be >= 1, got {self.shots_per_class}"
            )
        if self.eval_split == "test" and self.n_test < 1:
            raise ValueError(f"n_test must be >= 1 to report test accuracy, got {self.n_test}")
        if self.method in ("sdt-only", "cbp") and not self.generator:
            raise ValueError(f"method {self.method!r} needs a generator checkpoint (run `cbp-fed sdt` first)")
        if self.method in SEARCHING:
            SearchConfig(self.popsize, self.sigma0 or 1.0, self.budget, self.diagonal, loss=self.loss)  # validates
        bad = [c for c in self.checkpoints if not 0 < c <= self.budget]
        if bad:
            raise ValueError(f"checkpoints {bad} are outside 1..budget ({self.budget})")


def build_source(config: CustomizeConfig, lm: FrozenLM) -> tuple[torch.nn.Module, np.ndarray, float, dict]:
    """The method's prompt source, its start vector ``(r,)``, its search sigma0 and what to record."""
    if config.method not in PROMPTED:
        return NoPrompt(lm.d), np.zeros((0,), np.float32), 0.0, {}
    if config.method == "bbt":
        source = ProjectedPrompt.for_backbone(lm, config.bbt_t, config.bbt_r, config.seed)
        info = {"bbt_r": config.bbt_r, "bbt_t": config.bbt_t}
        return source, np.zeros(config.bbt_r, np.float32), config.sigma0 or BBT_SIGMA0, info
    gen, meta = load_generator(config.generator, lm)
    info = {
        "generator": config.generator,
        "generator_domain": meta["domain"],
        "generator_data": meta["data"]["fingerprint"],
    }
    sigma0 = config.sigma0 or meta["training"]["z_noise"]
    return gen, gen.z0.detach().cpu().numpy(), sigma0, info


def check_rows(box: BlackBox, task, split: UserSplit, start: np.ndarray) -> None:
    """Refuse now, before any model call, a row that the BlackBox would refuse when scoring it (too many
    characters, or a query that with its longest option exceeds ``max_tokens``), naming its split, uid
    (the row's index in its file) and size: not after the search has spent its budget."""
    fit = (
        "the query (`template`) is never cut: move long text into the spec's `passage_template`, which is cut "
        "to fit, or raise --max-tokens"
        if isinstance(task, CustomTask)
        else "raise --max-tokens"
    )
    for name, rows in zip(("train", "dev", "test"), (split.train, split.dev, split.test), strict=True):
        for row in rows:
            query = task_query(start[None], [row], task)
            for check, advice in ((box.validate, "; shorten it in its file"), (box.encode, f"; {fit}")):
                try:
                    check(query)
                except QueryError as err:
                    words = re.sub(r"^text 0: ", "", str(err)).replace("text 0", "the row")
                    raise ValueError(f"{name} row {row.uid}: {words}{advice}") from err


def pieces(rows: list, limits: Limits) -> list[list]:
    """``rows`` cut into consecutive pieces one query may carry (at most ``max_texts`` rows and
    ``max_total_chars`` characters), so that a large dev or test split needs no smaller ``--n-test``."""
    cut, chars = [[]], 0
    for row in rows:
        size = len(row.text) + sum(map(len, row.options))
        if cut[-1] and (len(cut[-1]) == limits.max_texts or chars + size > limits.max_total_chars):
            cut, chars = [*cut, []], 0
        cut[-1].append(row)
        chars += size
    return cut


def task_query(z: np.ndarray, rows, task) -> Query:
    """The BlackBox query that scores candidates ``z: (k, r)`` on ``rows`` of ``task`` (label words or options)."""
    options = [list(ex.options) for ex in rows] if task.scoring == "options" else None
    passages, queries = [ex.passage for ex in rows], [ex.query for ex in rows]
    return Query(z, passages, queries, task.label_words, options=options, length_norm=task.length_norm)


def blank_query(z: np.ndarray, rows, task, filler: str) -> Query:
    """``task_query`` with each row's content replaced by ``filler`` and its template kept
    (``calibration.content_free``): the prompt's prior over the answers, which calibration divides out
    (content-free input, Zhao et al. 2021; for options, domain-conditional PMI, Holtzman et al. 2021)."""
    blanked = [content_free(ex.passage, ex.query, filler) for ex in rows]
    return replace(task_query(z, rows, task), passages=[p for p, _ in blanked], queries=[q for _, q in blanked])


def answer_text(ex, task) -> str:
    """The gold answer as it would follow the row's text: its label word or its gold option."""
    return ex.options[ex.label] if task.scoring == "options" else task.label_words[ex.label]


def with_demonstrations(rows, demos, task, lm: FrozenLM, max_tokens: int) -> tuple[list, list[int]]:
    """In-context learning: each row with as many of ``demos`` (labelled train rows, in the given order)
    in front of its passage as fit ``max_tokens`` with its own text and longest option, so the BlackBox
    never cuts one. Returns the rows and how many demonstrations each got."""
    shots = [f"{d.passage}{d.query}{answer_text(d, task)}\n\n" for d in demos]
    out, counts = [], []
    for ex in rows:
        room = max_tokens - len(lm.tokenize(ex.query)) - max((len(lm.option_ids(o)) for o in ex.options), default=0)
        k = 0
        while k < len(shots) and len(lm.tokenize("".join(shots[: k + 1]) + ex.passage)) <= room:
            k += 1
        out.append(replace(ex, passage="".join(shots[:k]) + ex.passage))
        counts.append(k)
    return out, counts


def as_bits(right) -> str:
    """Per-row correctness (bools, in row order) as a string of 0/1: what paired comparisons between methods
    on the same rows need, at one character per row."""
    return "".join("1" if r else "0" for r in right)


def correct_bits(scores: np.ndarray, labels: np.ndarray) -> str:
    """``as_bits`` of which rows scores ``(n, C)`` answer right."""
    return as_bits(scores.argmax(1) == labels)


@dataclass(frozen=True)
class Kept:
    """The z a user would ship now: which point it is (``start``, ``mean@100``, ``best@100``) and its dev score."""

    z: np.ndarray
    name: str
    dev_accuracy: float
    dev_loss: float


def customize(config: CustomizeConfig, lm: FrozenLM | None = None, progress: bool = True) -> dict:
    """Run one user-side customisation and return its summary (see ``cbp-fed customize``)."""
    started = time.time()
    task = load_task_spec(config.task)
    split = user_split(
        task,
        config.seed,
        config.shots_per_class,
        n_dev=config.n_dev
        if config.dev_shots_per_class is None
        else config.dev_shots_per_class * len(task.label_words),
        n_test=config.n_test,
        class_balanced=config.class_balanced,
    )
    on = config.eval_split
    eval_rows = split.dev if on == "dev" else split.test
    if not eval_rows:
        raise ValueError(
            f"task {config.task}: no {on} rows are left after {len(split.train)} train and {len(split.dev)} dev rows: "
            "give more rows (or a custom task's own test file) or lower --shots"
        )
    lm = lm or FrozenLM.load(config.backbone, config.dtype, config.device)
    source, start, sigma0, source_info = build_source(config, lm)
    box = BlackBox(lm, source, max_tokens=config.max_tokens)
    plain = box if isinstance(source, NoPrompt) else BlackBox(lm, NoPrompt(lm.d), max_tokens=config.max_tokens)
    check_rows(box, task, split, start)
    n_answers = len(task.label_words)
    train_labels = np.array([ex.label for ex in split.train], dtype=int)
    dev_labels = np.array([ex.label for ex in split.dev])
    eval_labels = np.array([ex.label for ex in eval_rows])

    def scores_of(z_batch: np.ndarray, rows, query=task_query, through: BlackBox = box) -> np.ndarray:
        """Scores ``(k, n, C)`` of candidates ``z_batch`` on ``rows``, in as many queries as the service needs."""
        queries = [query(z_batch, piece, task) for piece in pieces(rows, through.limits)]
        return np.concatenate(through.score(queries), axis=1)

    def log_prior(z: np.ndarray, rows, through: BlackBox = box) -> np.ndarray:
        """The prompt ``z``'s content-free log prior: ``(1, C)`` from the task's template for label words (one
        row stands for all), ``(n, C)`` per row for options (each row has its own)."""
        blanked = rows if task.scoring == "options" else rows[:1]
        per_filler = [
            scores_of(z[None], blanked, partial(blank_query, filler=filler), through)[0] for filler in CONTENT_FREE
        ]
        return content_free_prior(np.stack(per_filler))

    nothing = np.zeros((1, 0), np.float32)
    train_zero = scores_of(nothing, split.train, through=plain)[0] if split.train else np.zeros((0, n_answers))
    # with no train rows (zero-shot at --shots 0) there is nothing to fit: offsets 0, majority the first answer
    own_offsets = fit_offsets(train_zero, train_labels) if split.train else np.zeros(n_answers)

    # a label-word task's content-free prior is its template's, the same for every row: scored once
    template_prior = log_prior(nothing[0], eval_rows, plain) if task.scoring != "options" else None

    def no_prompt_prior(rows) -> np.ndarray:
        """The content-free prior of the no-prompt options on ``rows``: ``(1, C)`` or ``(n, C)`` (``log_prior``)."""
        return template_prior if template_prior is not None else log_prior(nothing[0], rows, plain)

    def own(rows) -> dict[str, np.ndarray]:
        """Scores ``(n, C)`` on ``rows`` of each option the user has without the provider's generator (``OWN``)."""
        zero = scores_of(nothing, rows, through=plain)[0]
        return own_options(zero, own_offsets, no_prompt_prior(rows), label_prior(train_labels, n_answers))

    def evaluate(z_final: np.ndarray) -> tuple[dict, np.ndarray]:
        """The summary fields of prompt ``z_final`` on the evaluated rows, and its scores there ``(n, C)``."""
        scores = scores_of(z_final[None], eval_rows)[0]
        return {
            f"{on}_accuracy": accuracy(scores, eval_labels),
            f"{on}_correct": correct_bits(scores, eval_labels),
            f"{on}_accuracy_calibrated": accuracy(divide_prior(scores, log_prior(z_final, eval_rows)), eval_labels),
            f"{on}_predicted_share": np.bincount(scores.argmax(1), minlength=n_answers).tolist(),
        }, scores

    own_eval = own(eval_rows)
    protects = config.method in PROMPTED and bool(split.dev) and on == "test"  # dev is no yardstick for itself
    own_dev = own(split.dev) if protects else {}
    own_train = (
        (train_labels, held_out_options(train_zero, train_labels, no_prompt_prior(split.train))) if protects else None
    )

    def protected(z: np.ndarray, z_eval: np.ndarray, start_scores: tuple | None = None) -> dict:
        """The user's protected choice (``calibration.protect``) between its own options (judged on its train
        rows, left out one at a time, and its dev rows), the prompt ``z`` (``z_eval``: its scores on the
        evaluated rows), the prompt with offsets fitted on its train scores, and the start vector when it
        differs (``start_scores``: its eval and dev scores); the prompts are judged on dev rows only."""
        z_dev = scores_of(z[None], split.dev)[0]
        offsets = fit_offsets(scores_of(z[None], split.train)[0], train_labels)
        options = {name: (own_eval[name], own_dev[name]) for name in OWN}
        options["prompt"] = (z_eval, z_dev)
        if start_scores is not None:
            options["start"] = start_scores
        options["prompt+fit"] = (z_eval + offsets, z_dev + offsets)
        choice = protect(
            dev_labels,
            {name: dev for name, (_, dev) in options.items()},
            provider={"prompt", "start", "prompt+fit"},
            alpha=config.protect_alpha,
            held_out=own_train,
        )
        accuracies = {name: accuracy(scores, eval_labels) for name, (scores, _) in options.items()}
        correct = {name: correct_bits(scores, eval_labels) for name, (scores, _) in options.items()}
        return {
            "option": choice.kept,
            f"{on}_accuracy": accuracies[choice.kept],
            f"{on}_correct": correct[choice.kept],
            "dev_accuracy": choice.dev_accuracy[choice.kept],
            "protection": {**choice.as_record(), f"{on}_accuracy": accuracies, f"{on}_correct": correct},
        }

    def dev_scores(z_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dev accuracy and cross-entropy ``(k,)`` of candidates ``(k, r)``."""
        return dev_accuracy_and_loss(scores_of(z_batch, split.dev), dev_labels)

    searching = config.method in SEARCHING
    select = searching and config.select_on_dev and len(split.dev) > 0
    kept, selection_calls, history = None, 0, []
    if select:
        accuracy0, loss0 = dev_scores(start[None])
        kept, selection_calls = Kept(start, "start", float(accuracy0[0]), float(loss0[0])), 1
        history.append({"calls": 0, "point": "start", "dev_accuracy": kept.dev_accuracy, "dev_loss": kept.dev_loss})

    def choose(search: CMASearch) -> Kept:
        """Score the search mean and its best candidate on dev; keep the best of them and ``kept``."""
        nonlocal kept, selection_calls
        calls = search.calls
        contenders = {f"mean@{calls}": search.mean, f"best@{calls}": search.best}
        accuracies, losses = dev_scores(np.stack(list(contenders.values())))
        selection_calls += len(contenders)
        for name, acc, loss in zip(contenders, accuracies, losses):
            history.append({"calls": calls, "point": name, "dev_accuracy": float(acc), "dev_loss": float(loss)})
        chosen = best_on_dev(np.r_[kept.dev_accuracy, accuracies], np.r_[kept.dev_loss, losses]) - 1
        if chosen >= 0:  # index 0 is the z kept so far
            name = list(contenders)[chosen]
            kept = Kept(contenders[name], name, float(accuracies[chosen]), float(losses[chosen]))
        return kept

    start_fields, start_eval = evaluate(start) if searching else (None, None)
    start_scores = (start_eval, scores_of(start[None], split.dev)[0]) if searching and protects else None

    def point(z_point: np.ndarray) -> dict:
        """Summary fields of the prompt ``z_point``: its accuracies and, with dev rows, the protected choice."""
        fields, z_eval = evaluate(z_point)
        moved = start_scores if start_scores is not None and not np.array_equal(z_point, start) else None
        return {**fields, "protected": protected(z_point, z_eval, moved)} if protects else fields

    curve, search = [], None
    if searching:
        settings = SearchConfig(config.popsize, sigma0, config.budget, config.diagonal, loss=config.loss)
        if config.subspace:  # u in the span of the generator's SDT task vectors, z = start + u @ basis
            basis = task_subspace(source.task_offsets.detach().cpu().numpy(), config.subspace)
            search = SubspaceSearch(start, basis, settings, config.seed)
        else:
            search = CMASearch(start, settings, config.seed)
        batches = np.random.default_rng([config.seed, 7])
        size = config.batch_size if 0 < config.batch_size < len(split.train) else len(split.train)
        pending = sorted(set(config.checkpoints) | {search.final_calls})
        columns = (
            TextColumn(f"{config.method} {config.task} seed {config.seed}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} calls, best batch loss {task.fields[best]:.3f}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not progress) as bar:
            job = bar.add_task("search", total=config.budget, best=float("nan"))
            while not search.done:
                batch = np.sort(batches.choice(len(split.train), size, replace=False))
                candidates = search.ask()
                scores = scores_of(candidates, [split.train[i] for i in batch])
                search.tell(fitness(scores, train_labels[batch], config.loss))
                bar.update(job, completed=search.calls, best=search.best_fitness)
                while pending and search.calls >= pending[0]:
                    calls = pending.pop(0)
                    z_point = choose(search).z if select else search.result
                    kept_name = kept.name if select else "mean"  # calls_used: whole populations, >= calls
                    curve.append({"calls": calls, "calls_used": search.calls, "kept": kept_name, **point(z_point)})
        z = kept.z if select else search.result
        final = {k: v for k, v in curve[-1].items() if k not in ("calls", "calls_used", "kept")}
    elif config.method in PROMPTED or config.method == "zero-shot":
        z = start
        final = point(z)
    elif config.method == "icl":
        z = start
        demos = [split.train[i] for i in np.random.default_rng([config.seed, 11]).permutation(len(split.train))]
        shown, counts = with_demonstrations(eval_rows, demos, task, lm, config.max_tokens)
        scores = scores_of(nothing, shown)[0]
        final = {
            f"{on}_accuracy": accuracy(scores, eval_labels),
            f"{on}_correct": correct_bits(scores, eval_labels),
            f"{on}_predicted_share": np.bincount(scores.argmax(1), minlength=n_answers).tolist(),
            "demonstrations": {"mean": float(np.mean(counts)), "min": min(counts), "max": max(counts)},
        }
    else:  # an option of the user's own: its scores are already computed
        z = start
        scores = own_eval[config.method]
        final = {
            f"{on}_accuracy": accuracy(scores, eval_labels),
            f"{on}_correct": correct_bits(scores, eval_labels),
            f"{on}_predicted_share": np.bincount(scores.argmax(1), minlength=n_answers).tolist(),
        }
    if on == "test" and split.dev and config.method in (*PROMPTED, "zero-shot"):
        final["dev_accuracy"] = accuracy(scores_of(z[None], split.dev)[0], dev_labels)
    train_share = np.bincount(train_labels, minlength=n_answers)
    return {
        "task": config.task,
        "domain": task.domain,
        "method": config.method,
        "seed": config.seed,
        "scoring": task.scoring + (" (length-normalised)" if task.length_norm else ""),
        "budget": config.budget if search else 0,
        "calls_used": search.calls if search else 0,
        "sigma0": sigma0 if search else None,
        "backbone": lm.name,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "train_size": len(split.train),
        "train_label_share": (train_share / max(train_share.sum(), 1)).round(3).tolist(),
        "batch_size": size if search else None,
        "dev_size": len(split.dev),
        "test_size": len(split.test),
        "eval_split": on,
        **final,
        f"start_{on}_accuracy": (start_fields or final)[f"{on}_accuracy"],
        "majority_rate": max(Counter(eval_labels.tolist()).values()) / len(eval_labels),
        "baselines": {name: accuracy(scores, eval_labels) for name, scores in own_eval.items()},
        "baselines_correct": {name: correct_bits(scores, eval_labels) for name, scores in own_eval.items()},
        "kept": {"point": kept.name, "dev_accuracy": kept.dev_accuracy, "dev_loss": kept.dev_loss} if select else None,
        "selection": history,
        "selection_calls": selection_calls,
        "best_train_loss": search.best_fitness if search else None,
        "curve": curve,
        "calls_total": box.meter.calls + (plain.meter.calls if plain is not box else 0),
        "eval_calls": box.meter.calls - (search.calls if search else 0) - selection_calls,
        "own_calls": plain.meter.calls if plain is not box else None,
        "tokens_scored": box.meter.tokens + (plain.meter.tokens if plain is not box else 0),
        "forward_seconds": round(box.meter.seconds + (plain.meter.seconds if plain is not box else 0), 2),
        "wall_seconds": round(time.time() - started, 2),
        "z_norm": float(np.linalg.norm(z)) if searching else 0.0,
        "z_distance_from_start": float(np.linalg.norm(z - start)) if searching else 0.0,
        "search_dimensions": (config.subspace or len(start)) if searching else 0,
        "config": asdict(config),
        **source_info,
    }
