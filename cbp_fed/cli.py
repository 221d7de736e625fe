"""`cbp-fed`: prepare, tasks, sdt, customize, tune, report, attack.

cbp-fed prepare                          convert the bundled models, check every task loads
cbp-fed tasks                            the registered tasks: domain, role, rows, scoring
cbp-fed sdt --domain commonsense --out runs/gen-commonsense
cbp-fed customize --task arc-easy --method cbp --generator runs/gen-commonsense --budget 200 --seed 0 --out runs/x
cbp-fed tune --task boolq --domain commonsense --trials 10 --out results/tune/boolq
cbp-fed report runs/*/summary.json results/<run> --out table.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from .console import keep_lines_whole, make_console

console = make_console(stderr=True)


def _prepare(args) -> None:
    from .backbone import FrozenLM

    for name in args.backbone:
        lm = FrozenLM.load(name)
        console.print(
            f"backbone {name}: {lm.dtype}, hidden {lm.d}, loss on plain English "
            f"{lm.lm_loss('The cat sat on the mat and looked out of the window at the rain.'):.2f} nats/token"
        )
    _tasks(args)


def _tasks(args) -> None:
    """The registered tasks: domain, role in it (the provider's SDT pool or a user task), rows (all, and
    the users' share), how answers are scored."""
    from .tasks import DOMAINS, load_task, server_user_partition, task_names

    roles = {task: "SDT" for domain in DOMAINS.values() for task in domain.sdt_tasks}
    roles |= {task: "user" for domain in DOMAINS.values() for task in domain.user_tasks}
    table = Table("task", "domain", "role", "rows", "user rows", "scoring", title="registered tasks")
    for name in task_names():
        task = load_task(name)
        if task.scoring == "options":
            scoring = f"{len(task.label_words)} options, " + ("per character" if task.length_norm else "summed")
        else:
            scoring = "label words " + " / ".join(repr(w) for w in task.label_words)
        users = len(server_user_partition(task)[1])
        table.add_row(name, task.domain, roles.get(name, "-"), f"{len(task.examples):,}", f"{users:,}", scoring)
    make_console().print(table)  # the command's output: stdout, for `cbp-fed tasks | grep medical`


def _sdt(args) -> None:
    from .backbone import FrozenLM
    from .domain_training import SDTConfig, save_generator, train_generator

    config = SDTConfig(
        domain=args.domain,
        r=args.r,
        m=args.m,
        t=args.t,
        a_seed=args.a_seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        pool_size=args.pool_size,
        eval_size=args.eval_size,
        dev_size=args.dev_size,
        eval_every=args.eval_every,
        patience=args.patience,
        transfer_task=args.transfer_task,
        max_tokens=args.max_tokens,
        z_noise=args.z_noise,
        generalist_share=args.generalist_share,
        offset_penalty=args.offset_penalty,
        steering_target=args.steering_target,
        seed=args.seed,
    )
    lm = FrozenLM.load(args.backbone, args.dtype, args.device)
    gen, meta = train_generator(lm, config)
    save_generator(gen, meta, args.out)
    held, vectors, steer = meta["held_out"], meta["task_vectors"], meta["steering"]
    lines = [
        f"SDT {args.domain} in {meta['training']['seconds']:.0f} s, the best dev check at step "
        f"{meta['early_stopping']['best_step']}; saved to {args.out}",
        _evidence("held-out pool rows", held),
        f"own task vector beats z0 on {vectors['own_beats_z0']} SDT tasks (paired gain {vectors['paired_gain']}); "
        f"a sigma=1 step moves the prompt {steer['ratio']:.2f}x as far as BBT's",
    ]
    if meta["transfer"]:
        lines.insert(2, _evidence(f"rows of {meta['transfer']['task']}, left out of training", meta["transfer"]))
    console.print("\n".join(lines))


def _evidence(rows: str, held: dict) -> str:
    """One line of a checkpoint's held-out evidence (``held_out_evidence``)."""
    versus = held["z0_vs_best"]
    return (
        f"z0 on {held['n']} {rows}: {held['z0_before']:.3f} -> {held['z0_after']:.3f} (zero-shot "
        f"{held['zero_shot']:.3f}, instruction {held['instruction']:.3f}; z0 - {versus['against']} "
        f"{versus['mean']:+.3f} +/- {versus['ci95']:.3f}: {'learned' if held['learned'] else 'not learned'})"
    )


def _customize(args) -> None:
    import torch

    from .customize import customize
    from .results import write_customize_readme

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        task, spec = _task_spec(args, Path(folder))
        summary = customize(_customize_config(args, task))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if spec:  # the inferred spec, kept beside the run it made
        (out / "task.toml").write_text(spec)
        summary["task"] = args.task
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_customize_readme(out)  # what each summary field means, with its unit
    kept = f", kept {summary['kept']['point']} (chosen on dev)" if summary["kept"] else ""
    own = ", ".join(f"{name} {value:.3f}" for name, value in summary["baselines"].items())
    final = summary.get("protected")
    final = f"; the user ends on {final['option']}: {final['test_accuracy']:.3f}" if final else ""
    console.print(
        f"{args.method} on {args.task} (seed {args.seed}): test accuracy {summary['test_accuracy']:.3f} "
        f"(start {summary['start_test_accuracy']:.3f}){kept}, {summary['calls_used']} calls{final}. "
        f"Without a prompt: {own}. {summary['wall_seconds']:.0f} s -> {out / 'summary.json'}"
    )


def _task_spec(args, folder: Path) -> tuple[str, str]:
    """(the task to load, the inferred spec's TOML or ""): a data file given as --task becomes a spec
    inferred from its columns, printed and written into ``folder``; anything else is used as given."""
    from .tasks.infer import infer_spec, is_data_file, spec_toml

    if not is_data_file(args.task):
        if args.text_column or args.label_column or args.label_words:
            raise ValueError(
                "--text-column, --label-column and --label-words describe a data file given as --task "
                "(.csv, .jsonl, .parquet)"
            )
        return args.task, ""
    spec = spec_toml(infer_spec(args.task, args.text_column, args.label_column, args.label_words))
    console.print(
        f"task inferred from {args.task} (to change it, copy it into a .toml file and pass that as --task; "
        f'README, "Your own data"):\n{spec}',
        markup=False,
        highlight=False,
    )
    path = folder / "task.toml"
    path.write_text(spec)
    return str(path), spec


def _customize_config(args, task: str):
    """The `CustomizeConfig` of the command's options for ``task`` (a registered name or a spec file)."""
    from .customize import CustomizeConfig

    return CustomizeConfig(
        task=task,
        method=args.method,
        seed=args.seed,
        budget=args.budget,
        popsize=args.popsize,
        sigma0=args.sigma0,
        diagonal=args.diagonal,
        loss=args.loss,
        backbone=args.backbone,
        dtype=args.dtype,
        device=args.device,
        generator=args.generator,
        shots_per_class=args.shots,
        dev_shots_per_class=args.dev_shots,
        class_balanced=args.class_balanced,
        batch_size=args.batch_size,
        select_on_dev=not args.no_dev_selection,
        protect_alpha=args.protect_alpha,
        subspace=args.subspace,
        n_test=args.n_test,
        max_tokens=args.max_tokens,
        checkpoints=tuple(int(c) for c in args.checkpoints.split(",") if c),
    )


def _tune(args) -> None:
    import torch

    from .tune import TuneConfig, tune

    if args.threads:
        torch.set_num_threads(args.threads)
    report = tune(TuneConfig(**{f.name: getattr(args, f.name) for f in fields(TuneConfig)}))
    best = report["best"]
    console.print(
        f"best of {report['completed_trials']} trials: trial {best['trial']} {best['params']}: "
        f"dev accuracy {best['dev_accuracy']:.3f}, test accuracy {best['test_accuracy']:.3f} "
        f"-> {Path(args.out) / 'tune.json'}"
    )


def _report(args) -> None:
    from .report import report

    text = report(args.paths)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def _attack(args) -> None:
    from .privacy.attacks import run_attack

    options = {"seed": args.seed, "max_users": args.max_users, "shadow_cache": args.shadow_cache}
    options |= {k: v for k, v in vars(args).items() if k in ("shadows", "references", "non_members") and v is not None}
    result = run_attack(args.run_dir, args.attack, **options)
    console.print_json(json.dumps(result))
    console.print(f"-> {Path(args.run_dir) / 'privacy'}")


def build_parser() -> argparse.ArgumentParser:
    from .customize import METHODS, CustomizeConfig
    from .domain_training import SDTConfig
    from .search import LOSSES
    from .tune import TuneConfig

    sdt_defaults = {f.name: f.default for f in fields(SDTConfig)}
    cz = {f.name: f.default for f in fields(CustomizeConfig) if f.name != "task"}
    tn = {f.name: f.default for f in fields(TuneConfig)}
    parser = argparse.ArgumentParser(
        prog="cbp-fed", description="CBP-Tuning: customise a black-box LLM with one vector"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="convert bundled backbones to the local cache and check the datasets")
    p.add_argument("--backbone", nargs="+", default=["smollm2-135m", "tiny-random"])
    p.set_defaults(run=_prepare)

    p = sub.add_parser("tasks", help="the registered tasks: domain, role (SDT pool or user task), rows, scoring")
    p.set_defaults(run=_tasks)

    def model_options(p):
        p.add_argument("--backbone", default="smollm2-135m", help="registry name, local folder or hub id")
        p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
        p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")

    def data_file_options(p):
        p.add_argument("--text-column", help="a data file as --task: the column holding the text (default: inferred)")
        p.add_argument(
            "--label-column", help="a data file as --task: the column holding the answer (default: inferred)"
        )
        p.add_argument(
            "--label-words", help='a data file as --task: an answer word per label value, sorted: "negative, positive"'
        )

    p = sub.add_parser("sdt", help="stage 1: train the prompt generator on the provider's domain data")
    p.add_argument("--domain", required=True)
    p.add_argument("--out", required=True, help="checkpoint folder")
    sdt_ints = ("r", "m", "t", "a_seed", "steps", "batch_size", "pool_size", "eval_size", "dev_size", "eval_every")
    for key in (*sdt_ints, "patience", "max_tokens", "seed"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=sdt_defaults[key])
    for key in ("lr", "z_noise", "generalist_share", "offset_penalty", "steering_target"):
        p.add_argument("--" + key.replace("_", "-"), type=float, default=sdt_defaults[key])
    p.add_argument("--transfer-task", default="", help="leave this pool task out of training and report z0 on it")
    model_options(p)
    p.set_defaults(run=_sdt)

    p = sub.add_parser("customize", help="stage 2 for one user in one process (no Flower)")
    p.add_argument(
        "--task",
        required=True,
        help="a registered task (cbp-fed tasks), a task spec file (.toml, .json), or a data file (.csv, .jsonl, "
        '.parquet) whose spec is inferred (README, "Your own data")',
    )
    data_file_options(p)
    p.add_argument("--method", default="cbp", choices=METHODS)
    p.add_argument("--generator", help="SDT checkpoint folder (cbp, sdt-only)")
    p.add_argument("--budget", type=int, default=cz["budget"], help="model calls (candidates scored on the batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--popsize", type=int, default=cz["popsize"])
    p.add_argument("--sigma0", type=float, default=None, help="default: CBP the generator's SDT noise, BBT 1")
    p.add_argument("--diagonal", action="store_true", help="separable CMA-ES")
    p.add_argument(
        "--subspace", type=int, default=0, help="cbp: search K coordinates along the SDT task vectors (0: all r)"
    )
    p.add_argument("--loss", default=cz["loss"], choices=LOSSES)
    p.add_argument("--shots", type=int, default=cz["shots_per_class"], help="train rows = shots x answers")
    p.add_argument("--dev-shots", type=int, default=None, help="dev rows = dev-shots x answers (default: as train)")
    p.add_argument(
        "--protect-alpha",
        type=float,
        default=cz["protect_alpha"],
        help="a prompt replaces the best no-provider option only at this dev sign-test level",
    )
    p.add_argument("--class-balanced", action="store_true", help="balanced train/dev (default: the natural prior)")
    p.add_argument("--batch-size", type=int, default=cz["batch_size"], help="train texts per call (0 = all)")
    p.add_argument("--no-dev-selection", action="store_true", help="keep the search mean, not the best on dev")
    p.add_argument("--n-test", type=int, default=cz["n_test"])
    p.add_argument("--max-tokens", type=int, default=cz["max_tokens"])
    p.add_argument("--checkpoints", default="", help="comma-separated call counts at which to test (budget curve)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", required=True, help="run folder (written only on success)")
    model_options(p)
    p.set_defaults(run=_customize)

    p = sub.add_parser(
        "tune", help="Bayesian search (Optuna TPE) of sigma0, popsize, m, t and the SDT lr for CBP on dev; test once"
    )
    p.add_argument("--task", required=True)
    p.add_argument("--domain", default=tn["domain"], help="SDT domain of the generators")
    p.add_argument("--out", required=True, help="study folder: study.db, generators/, tune.json, tune.md, tune.png")
    p.add_argument("--trials", type=int, default=tn["trials"], help="completed trials to reach (resumes the study)")
    p.add_argument("--startup-trials", type=int, default=tn["startup_trials"], help="random trials before TPE")
    p.add_argument("--sigma0", type=float, nargs=2, default=tn["sigma0"], metavar=("LOW", "HIGH"), help="log scale")
    p.add_argument("--popsize", type=int, nargs=2, default=tn["popsize"], metavar=("LOW", "HIGH"))
    p.add_argument("--m", type=int, nargs="+", default=tn["m"], help="choices of the generator bottleneck")
    p.add_argument("--t", type=int, nargs="+", default=tn["t"], help="choices of the prompt length")
    p.add_argument("--lr", type=float, nargs="+", default=tn["lr"], help="choices of the SDT learning rate")
    for key in ("r", "sdt_steps", "sdt_batch_size", "sdt_pool_size", "sdt_eval_size", "n_dev", "n_test", "seed"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=tn[key])
    p.add_argument("--budget", type=int, default=tn["budget"], help="model calls per CMA-ES search")
    p.add_argument("--shots", type=int, default=tn["shots"], help="training examples per class")
    p.add_argument("--max-tokens", type=int, default=tn["max_tokens"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--backbone", default=tn["backbone"], help="registry name, local folder or hub id")
    p.add_argument("--dtype", default=tn["dtype"], choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default=tn["device"], help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.set_defaults(run=_tune)

    p = sub.add_parser("report", help="markdown tables over summary.json files or run folders")
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="a summary.json (cbp-fed customize or a federated run) or a run folder"
    )
    p.add_argument("--out", help="also write the tables to this file")
    p.set_defaults(run=_report)

    p = sub.add_parser("attack", help="a leakage attack on a run's transcript (record-transcript = true)")
    p.add_argument("--run", dest="run_dir", required=True, help="run folder (config.json, transcript/)")
    p.add_argument(
        "--attack", required=True, help="label-selection, membership, attribute, exposure, or all (-> RUN/privacy/)"
    )
    p.add_argument("--shadows", type=int, help="attribute: shadow users for the probe (default 24)")
    p.add_argument("--references", type=int, help="membership: shadow references per task beside the start (default 2)")
    p.add_argument("--non-members", type=int, help="membership: non-member challenges per user (default 50)")
    p.add_argument("--max-users", type=int, default=0, help="membership: attack only the first N users (0 = all)")
    p.add_argument("--shadow-cache", help="folder keeping trained shadows' z, shared between runs (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_attack)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_lines_whole()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)  # one line, however long the path in it
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
