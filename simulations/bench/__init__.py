"""The performance bench: the hardware limit, the BlackBox against it, what was tried, the federation at scale.

    python -m simulations.bench                          # all sections (~20 min on 2 CPU cores)
    python -m simulations.bench --quick                  # smaller shapes and runs: a few minutes
    python -m simulations.bench --only limit,blackbox    # sections: limit, blackbox, tried, options, federation
    python -m simulations.bench --only tried --compile   # also time torch.compile (minutes to compile)
    python -m simulations.bench --device cuda            # on a GPU (simulations/gpu_check.sh)
    python -m simulations.bench --only scale --scale-users 10,100,1000,10000   # the scale section (py-spy needed)

Writes ``results/bench/bench.json`` (a rerun section replaces its own entry, the others stay),
``bench.md`` (the tables of docs/performance.md, rebuilt from bench.json) and ``scaling.png`` (wall time per round vs
users). The federation runs' folders and logs go to ``results/bench/runs/``.

How it measures. These machines are shared with other jobs, so every comparison is a ratio of two
things timed side by side in one process, interleaved (A B A B ...).
On a CPU the in-process sections run torch on ``--threads`` threads (default 1) and time with the
process's CPU time (tokens/s are per core); a busy sibling hyperthread still slows a core, so each side
is repeated ``--reps`` times and the fastest repetitions are compared (noise only ever adds time). On
CUDA they time wall-clock after a synchronise. The federation runs (``flwr run``, Ray, 2 cores) time
wall-clock: their ratios (framework vs forward) come from one run each.

- limit: a large matmul's FLOP/s (fp32, bf16) and the backbone's bare forward at the BlackBox's shapes
  (the chunks of a one-user query: same rows, padded lengths, masks), its FLOP/s and share of the peak.
- blackbox: ``BlackBox.score`` against the bare forward at exactly its shapes, for one user and for
  ``--many-users`` users' queries in one call, on the real and the tiny backbone.
- tried: each speed idea as a ratio to its alternative, with the score change it causes.
- options: multiple-choice scoring on ARC-Easy, the C = 4 options' log-likelihoods against letter label
  words per scored pair, and the option path (context once, options on its KV cache) against C full
  forwards per pair.
- federation: `flwr run` simulations (simulations/local_run.simulate) on the tiny backbone for
  ``--users`` users, full vs diagonal CMA-ES at ``--memory-users`` users with r = 500, and one round on
  the real backbone: wall time per round, framework ms per message, bytes, peak memory.
- scale: where a user's round goes (``simulations/profile_round``: py-spy over the last round of a run of
  the scale-1000 preset at ``--profile-users``, CPU ms per user per round by component and by process)
  and seconds per round vs users on the scale-10000 preset (``--scale-users``, up to 10,000), both on the
  scale task (BoolQ repeated, ``simulations/scale_task``).
"""
