"""bench.md and scaling.png from bench.json: the machine, one table per section with the command that made
it, and the seconds-per-round plot."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from simulations.bench.measure import R


def machine(args: argparse.Namespace) -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    info = {
        "processor": names[0] if names else platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "timer": "wall after cuda synchronize" if args.device.startswith("cuda") else "process CPU time",
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown(bench: dict) -> str:
    """bench.md: the tables of docs/performance.md from bench.json (whichever sections it holds)."""
    parts = [f"# Bench\n\nMachine: {json.dumps(bench.get('machine', {}))}\n"]
    for name, render in (("limit", md_limit), ("blackbox", md_blackbox), ("tried", md_tried), ("options", md_options)):
        if name in bench:
            parts.append(render(bench[name]) + provenance(bench, name))
    if "federation" in bench:
        parts.append(md_federation(bench["federation"]) + provenance(bench, "federation"))
    if "scale" in bench:
        parts.append(md_scale(bench["scale"]) + provenance(bench, "scale"))
    return "\n".join(parts)


def provenance(bench: dict, name: str) -> str:
    """The command that made a section, how long it took and the machine's load (1-min average, start/end)."""
    section = bench[name]
    load = "/".join(f"{x:.1f}" for x in section.get("load", []))
    return f"\n\n`{bench['commands'][name]}` ({section['wall_s']:.0f} s wall, load average {load} on this machine)\n"


def md_limit(limit: dict) -> str:
    query = limit["query"]
    lines = [
        "## The limit\n",
        f"Bare forward at the BlackBox's shapes (1 user, {query[0]} candidates x {query[1]} BoolQ texts), each dtype "
        f"timed beside three {limit['matmul_n']}^3 matmuls of that dtype (the peak):\n",
        "| dtype | chunks | tokens (padded) | tokens/s | forward GFLOP/s | matmul GFLOP/s | forward / matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in limit["forward"]:
        lines.append(
            f"| {r['dtype']} | {r['chunks']} | {r['tokens']:,} ({r['padded_tokens']:,}) | {r['tokens_per_s']:,.0f} | "
            f"{r['flops_per_s'] / 1e9:,.1f} | {r['matmul_flops_per_s'] / 1e9:,.1f} | {100 * r['share_of_peak']:.0f}% |"
        )
    return "\n".join(lines)


def md_blackbox(blackbox: dict) -> str:
    lines = [
        "## BlackBox vs the bare forward at the same shapes\n",
        "| backbone | dtype | case | pairs (k x n per user) | tokens (padded) | chunks | pairs/s | tokens/s "
        "| bare forward tokens/s | BlackBox / bare (per-rep range) | model forward inside a BlackBox call |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in blackbox["rows"]:
        spread = r["ratio_spread"]
        lines.append(
            f"| {r['backbone']} | {r['dtype']} | {r['case']} | {r['pairs']:,} ({r['candidates']} x {r['texts']}) | "
            f"{r['tokens']:,} ({r['padded_tokens']:,}) | {r['chunks']} | {r['pairs_per_s']:,.1f} | "
            f"{r['tokens_per_s']:,.0f} | {r['bare_tokens_per_s']:,.0f} | **{r['ratio']:.2f}** "
            f"({spread[0]:.2f}-{spread[-1]:.2f}) | **{100 * r['forward_share']:.1f}%** |"
        )
    lines.append(
        "\nBlackBox / bare: the fastest of each side by side (tokens/s ratio). Model forward inside a call: the "
        "time in the decoder's forward over the whole `score` call (median of the repetitions), measured within "
        "each call, so the machine's load cannot tilt it."
    )
    return "\n".join(lines)


def md_tried(tried: dict) -> str:
    lines = [
        "## What was tried\n",
        f"Speed-up of each idea over its alternative (> 1 = the idea is faster), 1 user x {tried['query'][0]} "
        f"candidates x {tried['query'][1]} BoolQ texts unless said; score changes on {tried['eval_texts']} "
        "labelled BoolQ texts.\n",
        "| idea | what | speed-up | kept | why |",
        "|---|---|---|---|---|",
    ]
    for r in tried["rows"]:
        why = r["why"] + (f" (measured by `{r['measured_by']}`)" if "measured_by" in r else "")
        lines.append(
            f"| {r['idea']} | {r['what']} | {r['speedup']:.2f} | {'kept' if r['kept'] else 'dropped'} | {why} |"
        )
    return "\n".join(lines)


def md_options(options: dict) -> str:
    versus_letters, versus_naive = options["rows"]
    k, n = options["query"]
    return "\n".join(
        [
            "## Multiple choice: options vs letters\n",
            f"1 user x {k} candidates x {n} ARC-Easy texts, C = 4, {options['dtype']}; tokens scored "
            f"{options['tokens'][0]:,} by the options, {options['tokens'][1]:,} by letters.\n",
            "| comparison | what | ratio |",
            "|---|---|---|",
            f"| cost per pair, options / letters | {versus_letters['what']}; "
            f"{1e3 * versus_letters['options_s_per_pair']:.1f} vs {1e3 * versus_letters['letters_s_per_pair']:.1f} "
            f"ms per pair | {versus_letters['cost_ratio']:.2f} |",
            f"| speed-up of {versus_naive['idea']} | {versus_naive['what']} (max score change "
            f"{versus_naive['max_score_change']:.1e}) | {versus_naive['speedup']:.2f} |",
        ]
    )


def md_federation(fed: dict) -> str:
    overhead = fed["overhead_bytes"]
    lines = [
        "## The federation (flwr run, Ray, wall time, last round of each run)\n",
        "| run | users (ok) | CMA-ES | s/round (first) | BlackBox s | outside BlackBox | framework ms/msg | "
        "up B/user/round | floor + Flower overhead | up / that | down B/user/round | vs FedBPT ref. | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in fed["runs"]:
        if "round_s" not in r:
            lines.append(f"| {r['run']} | {r['users']} | - | failed: {r['status']} |" + " |" * 9)
            continue
        expected = r["up_floor_bytes"] + overhead["begin"] + (r["steps"] - 1) * overhead["step"] + overhead["finish"]
        fedbpt = 2 * fed["fedbpt_state_bytes"] / (r["up_bytes"] + r["down_bytes"])
        lines.append(
            f"| {r['run']} | {r['users']} ({r['users_ok']}) | {'diagonal' if r['diagonal'] else 'full'} | "
            f"{r['round_s']:.1f} ({r['first_round_s']:.1f}) | {r['forward_s']:.1f} | "
            f"{100 * r['outside_forward_share']:.0f}% | {r['framework_ms_per_message']:.1f} | {r['up_bytes']:,.0f} | "
            f"{expected:,.0f} | {r['up_bytes'] / expected:.3f} | {r['down_bytes']:,.0f} | {fedbpt:,.0f}x less | "
            f"{r['peak_rss_gib']} |"
        )
    lines.append(
        f"\nFedBPT's reference design ships the pickled full-covariance pycma object both ways per user per round: "
        f"2 x {fed['fedbpt_state_bytes']:,} bytes at r = {R}. Flower's overhead per up message (payload emptied): "
        f"begin {overhead['begin']}, step {overhead['step']}, finish {overhead['finish']} bytes."
    )
    return "\n".join(lines)


def md_scale(scale: dict) -> str:
    """The profile table (ms per user per round by component and process) and the users curve."""
    profiles = scale.get("profiles", [])
    lines = ["## Ten thousand users: where a user's round goes\n"]
    if profiles:
        names = list(dict.fromkeys(name for p in profiles for name in p["components"]))
        lines += [
            "CPU ms per user in the last round (py-spy samples of every process of the run, waits left out), "
            "scale-1000 preset:\n",
            "| component | " + " | ".join(f"{p['users']} users" for p in profiles) + " |",
            "|---|" + "---|" * len(profiles),
        ]
        lines += [f"| {n} | " + " | ".join(f"{p['components'].get(n, 0):.1f}" for p in profiles) + " |" for n in names]
        kinds = list(dict.fromkeys(k for p in profiles for k in p["processes"]))
        lines += ["", "| process (the OS's CPU count) | " + " | ".join(f"{p['users']} users" for p in profiles) + " |"]
        lines.append("|---|" + "---|" * len(profiles))
        lines += [f"| {k} | " + " | ".join(f"{p['processes'].get(k, 0):.1f}" for p in profiles) + " |" for k in kinds]
        lines += [
            "",
            "| users | round s | BlackBox forward s | framework ms per user per round (wall) | users ok |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['users']} | {p['round_s']:.1f} | {p['forward_s']:.1f} | **{p['framework_ms_per_user']:.1f}** | "
            f"{p['users_ok']} |"
            for p in profiles
        ]
        top = profiles[-1]
        lines += [
            "",
            f"The heaviest stacks of the top three components at {top['users']} users, innermost frame first "
            f"(py-spy's collapsed stacks, for any flame-graph tool: `profile/profile-{top['users']}.txt`):\n",
        ]
        for name, stacks in top.get("top_stacks", {}).items():
            lines.append(f"- {name}:")
            lines += [f"  - {n} samples: `{' <- '.join(reversed(s.split(';')))[:400]}`" for s, n in stacks[:3]]
    runs = [r for r in scale.get("runs", []) if "round_s" in r]
    if runs:
        lines += [
            "\nSeconds per round vs users, scale-10000 preset (last round):\n",
            "| users (ok) | s/round (first) | BlackBox s | framework ms per user per round | ms/msg | peak GiB |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['users']} ({r['users_ok']}) | {r['round_s']:.1f} ({r['first_round_s']:.1f}) | "
            f"{r['forward_s']:.1f} | {1000 * (r['round_s'] - r['forward_s']) / r['users']:.1f} | "
            f"{r['framework_ms_per_message']:.1f} | "
            f"{r['peak_rss_gib']} |"
            for r in runs
        ]
    return "\n".join(lines)


def plot_scaling(fed: dict, path: Path, scale: dict | None = None):
    """scaling.png, two panels over users (tiny backbone, diagonal CMA-ES), one y axis each: seconds per
    round (wall and in the BlackBox forward), and framework ms per message (the round outside the
    forward, per message). Returns the figure, or None without such runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(
        (r for r in fed.get("runs", []) if r["backbone"] == "tiny-random" and r["diagonal"] and "round_s" in r),
        key=lambda r: r["users"],
    )
    large = sorted((r for r in (scale or {}).get("runs", []) if "round_s" in r), key=lambda r: r["users"])
    if not runs and not large:
        return None
    fig, (seconds, framework) = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    presets = (
        (runs, "scale-300 preset (SST-2, federation section)", "o", "C0"),
        (large, "scale-10000 preset", "D", "C2"),
    )
    for series, label, marker, color in presets:
        if series:
            users = [r["users"] for r in series]
            seconds.plot(users, [r["round_s"] for r in series], f"{marker}-", color=color, label=f"round, {label}")
            seconds.plot(
                users,
                [r["forward_s"] for r in series],
                f"{marker}--",
                color=color,
                alpha=0.6,
                label=f"BlackBox forward, {label}",
            )
            framework.plot(users, [r["framework_ms_per_message"] for r in series], f"{marker}-", color=color)
    runs = runs + large
    users = sorted({r["users"] for r in runs})
    seconds.set(xscale="log", yscale="log", ylabel="seconds per round", title="Time per round")
    low, high = min(r["forward_s"] for r in runs), max(r["round_s"] for r in runs)
    seconds.set_yticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if low / 2 < t < 2 * high])
    seconds.yaxis.set_major_formatter("{x:g}")
    fig.legend(loc="outside lower left", ncols=2, fontsize=8)  # below the panels: it covers no line
    framework.set(
        xscale="log",
        ylabel="ms per message",
        ylim=(0, 1.2 * max(r["framework_ms_per_message"] for r in runs)),
        title="Framework time per message\n(round outside the forward / messages)",
    )
    for ax in (seconds, framework):
        ax.set_xticks(users, [str(u) for u in users])
        ax.set_xlabel("users (tiny backbone, diagonal CMA-ES)")
        ax.minorticks_off()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig
