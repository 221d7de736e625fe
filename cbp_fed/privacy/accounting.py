"""What a user's releases guarantee about its labels: every label-dependent release of a run as a
dp-accounting event, composed by one Gaussian-DP accountant.

Neighbouring datasets: two datasets of one user that differ in the label of one text (label DP). The
provider scores the texts themselves, so they are not what can be protected; the labels never leave
the user, and what depends on them is:

- each generation, the fitness vector told to CMA-ES, ``f_i = mean_j min(CE_ij, L) + N(0, s^2)`` over
  the generation's B real training texts (``loss-clip`` L, ``selection-noise`` s). One label moves
  each f_i by at most L / B, so f ``(k,)`` moves by at most sqrt(k) L / B in L2: a Gaussian mechanism
  of noise multiplier ``s B / (sqrt(k) L)``. CMA-ES sees only f; the next population, the best
  candidate and the search mean are functions of f and the user's secret randomness (post-processing).
- each round with dev selection, the three points' mean clipped dev CE plus N(0, s^2), over the D dev
  texts: noise multiplier ``s D / (sqrt(3) L)``; the kept point is its argmin.
- the Gaussian release of z (``dp-clip`` C, ``dp-noise``): its sensitivity 2C holds for any two
  datasets, so noise multiplier ``dp-noise / 2`` per round.

A label belongs to a training text or to a dev text, never both, so the provider's view is bounded by
the worse of two compositions: G generations (the text in every batch: the worst case) or R dev
selections. The released z is computed from those releases, so it is covered by the same bound; its
own Gaussian release bounds it separately (and for whole datasets, not only one label): ``released_z``
is the smaller of the two. Without selection noise and a loss clip the provider's view has no bound
(the candidates it scores are drawn around a mean moved by the clean ranking): epsilon is inf.

Gaussian mechanisms compose exactly in Gaussian DP (Dong, Roth and Su 2022): mu^2 adds up over the
events, and dp-accounting's ``get_epsilon_gaussian`` converts mu-GDP to (epsilon, delta) on the exact
curve. ``tests/test_privacy_accounting.py`` checks the composition against dp-accounting's PLD accountant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp_accounting import dp_event


def gaussian_mu(event: dp_event.DpEvent) -> float:
    """mu of the Gaussian DP that ``event`` (Gaussian, self-composed and composed events) satisfies:
    sqrt of the sum of 1 / noise multiplier^2 over its mechanisms (0 for no release)."""
    if isinstance(event, dp_event.NoOpDpEvent):
        return 0.0
    if isinstance(event, dp_event.GaussianDpEvent):
        return math.inf if event.noise_multiplier == 0 else 1.0 / event.noise_multiplier
    if isinstance(event, dp_event.SelfComposedDpEvent):
        return math.sqrt(event.count) * gaussian_mu(event.event)
    if isinstance(event, dp_event.ComposedDpEvent):
        return math.sqrt(sum(gaussian_mu(e) ** 2 for e in event.events))
    raise ValueError(f"no Gaussian DP bound for {type(event).__name__}")


def epsilon_of(event: dp_event.DpEvent, delta: float) -> float:
    """The smallest epsilon with (epsilon, delta)-DP for ``event``: inf for an unbounded one, 0 for none."""
    from dp_accounting.gaussian_mechanism import get_epsilon_gaussian  # scipy: only the reports call this

    mu = gaussian_mu(event)
    if mu == 0:
        return 0.0
    if math.isinf(mu):
        return math.inf
    return float(get_epsilon_gaussian(1.0 / mu, delta))


def release_event(noise: float, releases: int) -> dp_event.DpEvent:
    """``releases`` Gaussian releases of z at ``dp-noise = noise`` (sensitivity 2C, std noise x C)."""
    return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(noise / 2), releases)


@dataclass(frozen=True)
class LabelChannel:
    """One user's label-dependent releases in a run (see the module docstring).

    candidates: k real candidates per generation. batch: B real training texts per generation.
    generations: G told populations. dev: D dev texts. selections: R rounds with dev selection.
    noise: ``selection-noise`` s (nats). clip: ``loss-clip`` L (nats; 0 = none: no bound).
    release_noise / releases: ``dp-noise`` and the rounds whose z went out through ``dp-clip`` (0: none).
    """

    candidates: int
    batch: int
    generations: int
    dev: int = 0
    selections: int = 0
    noise: float = 0.0
    clip: float = 0.0
    release_noise: float = 0.0
    releases: int = 0

    @classmethod
    def of(cls, config, n_train: int, n_dev: int) -> LabelChannel:
        """The channel of a user of a run with ``config`` (a ``RunConfig``) holding ``n_train`` training
        and ``n_dev`` dev texts (FedBPT users report their clean losses: no noise, no bound)."""
        selects = config.select_on_dev and config.method != "fedbpt" and n_dev > 0
        return cls(
            candidates=config.popsize,
            batch=min(config.batch_size, n_train) if config.batch_size else n_train,
            generations=config.num_rounds * config.steps_per_round,
            dev=n_dev,
            selections=config.num_rounds if selects else 0,
            noise=config.selection_noise if config.method != "fedbpt" else 0.0,
            clip=config.loss_clip,
            release_noise=config.dp_noise,
            releases=config.num_rounds if config.dp_clip else 0,
        )

    def _noisy(self, count: int, size: int, texts: int) -> dp_event.DpEvent:
        """``count`` releases of a ``(size,)`` vector of clipped mean losses over ``texts`` texts."""
        if not count:
            return dp_event.NoOpDpEvent()
        bounded = self.noise > 0 and self.clip > 0
        multiplier = self.noise * texts / (math.sqrt(size) * self.clip) if bounded else 0.0
        return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(multiplier), count)

    def training_label(self) -> dp_event.DpEvent:
        """What the provider sees of one training text's label: every generation's fitness vector."""
        return self._noisy(self.generations, self.candidates, self.batch)

    def dev_label(self) -> dp_event.DpEvent:
        """What the provider sees of one dev text's label: every round's noisy dev choice."""
        return self._noisy(self.selections, 3, self.dev)

    def epsilon(self, delta: float) -> dict[str, float]:
        """{"provider": epsilon of the provider's whole view, "released_z": epsilon of the z the user
        released alone} at ``delta``, for one text's label."""
        provider = max(epsilon_of(self.training_label(), delta), epsilon_of(self.dev_label(), delta))
        release = epsilon_of(release_event(self.release_noise, self.releases), delta) if self.releases else math.inf
        return {"provider": provider, "released_z": min(provider, release)}
