"""Bayesian hyperparameter search for CBP-Tuning on one task (Optuna, TPE), selected on dev only.

Searched: the user's CMA-ES ``sigma0`` and ``popsize``, the generator's bottleneck ``m`` and prompt
length ``t``, and the SDT learning rate ``lr``. Everything else (SDT steps, call budget, shots, dev
and test sizes, text length, seed, backbone) is fixed for a study. One trial:

    generator = SDT(domain, m, t, lr)         trained once per (m, t, lr), cached in the out folder
    summary   = customize(cbp, sigma0, popsize, generator, eval_split="dev")
    value     = summary["dev_accuracy"]       maximised

The objective is dev ACCURACY, not dev loss: accuracy is what the study reports on test, and the
dev split is class-balanced, so a prompt that collapses onto one label word cannot score above
chance on it; the CE loss would also reward confident calibration that does not change a single
prediction. The split, the CMA-ES seed and the SDT data are the same in every trial (``seed``), so
trials differ only by their hyperparameters.

The test split is scored once, at the end, by rerunning the best trial (earliest among equal dev
accuracies) with ``eval_split="test"``; a rerun of the study whose best trial has not changed
reuses that result instead of scoring test again, and every test evaluation is recorded.

The study lives in ``<out>/study.db`` (Optuna RDB storage on sqlite): rerunning the same command
continues it up to ``trials`` completed trials. The sampler is reseeded per trial number, so a
resumed study draws what an uninterrupted one would have. A study created with other fixed
settings is refused. Outputs: ``tune.json``, ``tune.md`` and ``tune.png`` in ``out``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .backbone import FrozenLM
from .console import make_console
from .customize import CustomizeConfig, customize
from .domain_training import SDTConfig, save_generator, train_generator
from .tasks import DOMAINS, task_names

STUDY_NAME = "cbp-tune"
OBJECTIVE = "dev_accuracy"
# Settings that may change between runs of one study: how many trials, where, on which device.
NOT_FIXED = ("trials", "out", "device")
console = make_console(stderr=True)


@dataclass(frozen=True)
class TuneConfig:
    """One study. Ranges are (low, high), inclusive; ``m``, ``t`` and ``lr`` are choices so that a
    generator trained for one (m, t, lr) is reused by every later trial that draws it.

    ``startup_trials`` random trials come before TPE starts modelling (Optuna's default of 10 would
    make a 10-trial study a random search). ``sdt_eval_size`` 0 skips SDT's own pool accuracy,
    which the search does not use.
    """

    task: str = "boolq"
    domain: str = "commonsense"
    out: str = "results/tune/boolq"
    trials: int = 10
    startup_trials: int = 4
    sigma0: tuple[float, float] = (0.2, 3.0)
    popsize: tuple[int, int] = (4, 20)
    m: tuple[int, ...] = (64, 128, 256, 512)
    t: tuple[int, ...] = (5, 10, 20)
    lr: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)
    r: int = 500
    sdt_steps: int = 40
    sdt_batch_size: int = 8
    sdt_pool_size: int = 1000
    sdt_eval_size: int = 0
    budget: int = 80
    shots: int = 8
    n_dev: int = 100
    n_test: int = 200
    max_tokens: int = 64
    seed: int = 0
    backbone: str = "smollm2-135m"
    dtype: str = "auto"
    device: str = "auto"

    def __post_init__(self):
        for name in ("sigma0", "popsize", "m", "t", "lr"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists from the CLI or JSON
        if self.task not in task_names() and not self.task.endswith(".json"):
            raise ValueError(f"unknown task {self.task!r}; known: {task_names()}, or a custom task spec (.json)")
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; known: {sorted(DOMAINS)}")
        for key in ("trials", "startup_trials", "r", "sdt_steps", "sdt_batch_size", "sdt_pool_size", "budget"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        for key in ("shots", "n_dev", "n_test", "max_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        if self.sdt_eval_size < 0:
            raise ValueError(f"--sdt-eval-size must be >= 0, got {self.sdt_eval_size}")
        if len(self.sigma0) != 2 or not 0 < self.sigma0[0] <= self.sigma0[1]:
            raise ValueError(f"--sigma0 takes LOW HIGH with 0 < LOW <= HIGH, got {self.sigma0}")
        if len(self.popsize) != 2 or not 2 <= self.popsize[0] <= self.popsize[1]:
            raise ValueError(f"--popsize takes LOW HIGH with 2 <= LOW <= HIGH, got {self.popsize}")
        if self.popsize[1] > self.budget:
            raise ValueError(
                f"the largest popsize ({self.popsize[1]}) exceeds the budget ({self.budget} calls): "
                "raise --budget or lower the popsize range"
            )
        for key in ("m", "t", "lr"):
            choices = getattr(self, key)
            if not choices or len(set(choices)) != len(choices) or min(choices) <= 0:
                raise ValueError(f"--{key} takes distinct positive choices, got {choices}")
        if any(int(v) != v for v in self.m + self.t):
            raise ValueError(f"--m and --t take whole numbers, got {self.m} and {self.t}")

    def fixed(self) -> dict:
        """What a study is bound to (JSON types): everything but the trial count, the folder and the device."""
        return json.loads(json.dumps({k: v for k, v in asdict(self).items() if k not in NOT_FIXED}))

    def sdt_config(self, m: int, t: int, lr: float) -> SDTConfig:
        return SDTConfig(
            domain=self.domain,
            r=self.r,
            m=m,
            t=t,
            steps=self.sdt_steps,
            batch_size=self.sdt_batch_size,
            lr=lr,
            pool_size=self.sdt_pool_size,
            eval_size=self.sdt_eval_size,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )

    def customize_config(self, params: dict, generator: Path, eval_split: str) -> CustomizeConfig:
        """A trial's run; dev is the trials' yardstick, so the run never selects its z on dev."""
        return CustomizeConfig(
            task=self.task,
            method="cbp",
            seed=self.seed,
            budget=self.budget,
            popsize=params["popsize"],
            sigma0=params["sigma0"],
            backbone=self.backbone,
            dtype=self.dtype,
            device=self.device,
            generator=str(generator),
            shots_per_class=self.shots,
            n_dev=self.n_dev,
            n_test=self.n_test,
            max_tokens=self.max_tokens,
            eval_split=eval_split,
            select_on_dev=False,
        )


def suggest(trial: optuna.Trial, config: TuneConfig) -> dict:
    """The trial's hyperparameters: sigma0 on a log scale, popsize an integer, m, t and lr choices."""
    return {
        "sigma0": trial.suggest_float("sigma0", *config.sigma0, log=True),
        "popsize": trial.suggest_int("popsize", *config.popsize),
        "m": trial.suggest_categorical("m", list(config.m)),
        "t": trial.suggest_categorical("t", list(config.t)),
        "lr": trial.suggest_categorical("lr", list(config.lr)),
    }


def generator_for(config: TuneConfig, lm: FrozenLM, params: dict, progress: bool) -> tuple[Path, float | None]:
    """The SDT checkpoint for the trial's (m, t, lr): reused from ``<out>/generators/`` when one was
    trained with exactly these settings, else trained and saved. Returns its folder and the seconds
    spent training (None when reused)."""
    sdt = config.sdt_config(params["m"], params["t"], params["lr"])
    folder = Path(config.out) / "generators" / f"m{sdt.m}-t{sdt.t}-lr{sdt.lr:g}"
    meta_path = folder / "generator.json"
    if meta_path.exists() and (folder / "generator.safetensors").exists():
        trained = json.loads(meta_path.read_text())["training"]
        if {k: trained.get(k) for k in asdict(sdt)} == asdict(sdt):
            return folder, None
    started = time.time()
    gen, meta = train_generator(lm, sdt, progress=progress)
    save_generator(gen, meta, folder)
    return folder, time.time() - started


def open_study(config: TuneConfig) -> optuna.Study:
    """Create or load ``<out>/study.db``; refuses a study bound to other fixed settings, and marks
    trials left running by an interrupted run as failed (one process runs a study at a time)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / 'study.db').resolve()}")
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True)
    fixed, stored = config.fixed(), study.user_attrs.get("fixed")
    if stored is None:
        study.set_user_attr("fixed", fixed)
    elif stored != fixed:
        changed = ", ".join(
            f"{k} {stored.get(k)!r} (study) vs {fixed.get(k)!r} (now)"
            for k in sorted(set(stored) | set(fixed))
            if stored.get(k) != fixed.get(k)
        )
        raise ValueError(
            f"the study in {out / 'study.db'} was created with other fixed settings: {changed}. "
            "Rerun with the study's settings to continue it, or pick another --out for a new study."
        )
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(
            storage.get_trial_id_from_study_id_trial_number(study_id, stale.number), TrialState.FAIL
        )
        console.print(f"trial {stale.number} was left running by an interrupted run: marked failed")
    return study


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The completed trial with the highest dev accuracy; the earliest of equals (deterministic)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda trial: (trial.value, -trial.number))


def run_trial(study: optuna.Study, config: TuneConfig, lm: FrozenLM, progress: bool) -> optuna.trial.FrozenTrial:
    """Run one trial: SDT (or the cached generator), CMA-ES on train, accuracy on dev."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, config)
        folder, sdt_seconds = generator_for(config, lm, params, progress)
        summary = customize(config.customize_config(params, folder, "dev"), lm, progress=progress)
        for key in ("dev_accuracy_calibrated", "dev_predicted_share", "majority_rate", "best_train_loss"):
            trial.set_user_attr(key, summary[key])
        trial.set_user_attr("calls_used", summary["calls_used"])
        trial.set_user_attr("generator", folder.name)
        trial.set_user_attr("sdt_seconds", None if sdt_seconds is None else round(sdt_seconds, 1))
        trial.set_user_attr("customize_seconds", summary["wall_seconds"])
        return summary[OBJECTIVE]

    # A fresh sampler seeded by the trial number: the draw depends only on the finished trials, so a
    # resumed study continues exactly as an uninterrupted one would.
    study.sampler = optuna.samplers.TPESampler(
        seed=config.seed + len(study.trials), n_startup_trials=config.startup_trials
    )
    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def evaluate_test(study: optuna.Study, config: TuneConfig, lm: FrozenLM, progress: bool) -> dict:
    """Test accuracy of the best trial's hyperparameters: a rerun of that trial with
    ``eval_split="test"``, unless the last test evaluation was already of this trial."""
    best = best_trial(study)
    history = study.user_attrs.get("test_evaluations", [])
    if history and history[-1]["trial"] == best.number:
        return history[-1]
    folder, _ = generator_for(config, lm, best.params, progress)
    summary = customize(config.customize_config(best.params, folder, "test"), lm, progress=progress)
    record = {
        "trial": best.number,
        "after_trials": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        **{k: summary[k] for k in ("test_accuracy", "test_accuracy_calibrated", "test_predicted_share")},
        "test_majority_rate": summary["majority_rate"],
        "test_size": summary["test_size"],
        "dev_accuracy_rerun": summary["dev_accuracy"],
        "rerun_seconds": summary["wall_seconds"],
    }
    study.set_user_attr("test_evaluations", [*history, record])
    return record


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        OBJECTIVE: trial.value,
        "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
        **trial.user_attrs,
    }


def write_outputs(study: optuna.Study, config: TuneConfig, test: dict, wall_seconds: float) -> dict:
    """Write ``tune.json``, ``tune.md`` and ``tune.png`` into the out folder; returns the JSON."""
    out = Path(config.out)
    best = best_trial(study)
    rows = [_trial_row(trial) for trial in study.trials]
    done = [row for row in rows if row["state"] == "COMPLETE"]
    report = {
        "task": config.task,
        "domain": config.domain,
        "objective": OBJECTIVE,
        "study": str(out / "study.db"),
        "fixed": config.fixed(),
        "completed_trials": len(done),
        "best": {
            "trial": best.number,
            "params": best.params,
            OBJECTIVE: best.value,
            **{k: v for k, v in test.items() if k not in ("trial", "after_trials")},
        },
        "test_evaluations": study.user_attrs.get("test_evaluations", []),
        "trials": rows,
        "trials_seconds": round(sum(row["seconds"] or 0 for row in done), 1),
        "wall_seconds": round(wall_seconds, 1),
    }
    (out / "tune.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "tune.md").write_text(_markdown(report))
    _plot(done, test, out / "tune.png")
    return report


def _markdown(report: dict) -> str:
    best, fixed = report["best"], report["fixed"]
    params = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best["params"].items())
    lines = [
        f"# CBP hyperparameter search: {report['task']} (SDT domain {report['domain']})",
        "",
        f"{report['completed_trials']} trials (Optuna TPE, {fixed['startup_trials']} random first), objective: dev "
        f"accuracy on {fixed['n_dev']} class-balanced dev rows; SDT {fixed['sdt_steps']} steps, {fixed['budget']} "
        f"calls on {fixed['shots']} shots per class, texts <= {fixed['max_tokens']} tokens, seed {fixed['seed']}, "
        f"backbone {fixed['backbone']}.",
        "",
        f"Best: trial {best['trial']} ({params}): dev {100 * best[OBJECTIVE]:.1f}%, test "
        f"{100 * best['test_accuracy']:.1f}% on {best['test_size']} rows (majority class "
        f"{100 * best['test_majority_rate']:.1f}%, calibrated {100 * best['test_accuracy_calibrated']:.1f}%).",
        "",
        "| trial | sigma0 | popsize | m | t | lr | dev acc % | dev calibrated % | train loss | generator | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["trials"]:
        if row["state"] != "COMPLETE":
            continue
        p = row["params"]
        mark = " (best)" if row["number"] == best["trial"] else ""
        reused = "reused" if row["sdt_seconds"] is None else f"trained {row['sdt_seconds']:.0f} s"
        lines.append(
            f"| {row['number']}{mark} | {p['sigma0']:.3f} | {p['popsize']} | {p['m']} | {p['t']} | {p['lr']:g} | "
            f"{100 * row[OBJECTIVE]:.1f} | {100 * row['dev_accuracy_calibrated']:.1f} | "
            f"{row['best_train_loss']:.3f} | {reused} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(done: list[dict], test: dict, path: Path) -> None:
    """Optimisation history: dev accuracy per trial, the best so far, and the test accuracy of the best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [row["number"] for row in done]
    values = [100 * row[OBJECTIVE] for row in done]
    best_so_far = [max(values[: i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(numbers, values, "o", label="dev accuracy (trial)")
    ax.step(numbers, best_so_far, where="post", label="best dev so far")
    ax.plot([test["trial"]], [100 * test["test_accuracy"]], "*", markersize=12, label="test accuracy (best, once)")
    ax.axhline(100 * done[0]["majority_rate"], linestyle=":", color="grey", label="dev majority class")
    ax.axhline(100 * test["test_majority_rate"], linestyle="--", color="grey", label="test majority class")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("CBP hyperparameter search: dev accuracy per trial")
    ax.set_xlabel("trial")
    ax.set_ylabel("accuracy %")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tune(config: TuneConfig, lm: FrozenLM | None = None, progress: bool = True) -> dict:
    """Run or resume the study up to ``config.trials`` completed trials, score the best
    hyperparameters on test once, and write the outputs (see the module docstring)."""
    started = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial below instead
    study = open_study(config)
    lm = lm or FrozenLM.load(config.backbone, config.dtype, config.device)
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if completed:
        console.print(f"resuming {Path(config.out) / 'study.db'}: {completed} of {config.trials} trials done")
    while completed < config.trials:
        trial = run_trial(study, config, lm, progress)
        completed += 1
        best = best_trial(study)
        p = trial.params
        console.print(
            f"trial {trial.number} ({completed}/{config.trials}): sigma0 {p['sigma0']:.3f}, popsize {p['popsize']}, "
            f"m {p['m']}, t {p['t']}, lr {p['lr']:g} -> dev acc {trial.value:.3f} "
            f"(best {best.value:.3f}, trial {best.number}) in {trial.duration.total_seconds():.0f} s"
        )
    test = evaluate_test(study, config, lm, progress)
    return write_outputs(study, config, test, time.time() - started)
