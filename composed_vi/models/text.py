"""The UMT5 tokenizer and the prompt embeddings of diffusers' Wan pipelines, without torch.

``load_tokenizer`` reads a checkpoint's ``tokenizer/tokenizer.json`` with the ``tokenizers``
package; :func:`tokenize` gives what transformers' T5 fast tokenizer gives for
``padding="max_length", truncation=True, add_special_tokens=True``: the pieces, truncated to
``max_length - 1``, then ``</s>``, then ``<pad>`` up to ``max_length`` on the right. T5's
convention is applied here explicitly rather than through the settings saved in
``tokenizer.json`` (its post-processor, padding and truncation are switched off at load), because
transformers' T5 tokenizer also imposes the ``$A </s>`` template whatever the file says.

:func:`encode_prompts` is diffusers' ``WanPipeline._get_t5_prompt_embeds``: clean each prompt,
tokenize, run the encoder with the mask, keep each prompt's true length and set every later
position to zero. :func:`encode_prompt` adds the negative prompt as ``encode_prompt`` does.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from composed_vi.models import umt5

try:  # diffusers cleans prompts with ftfy when it is installed; so do we.
  import ftfy
except ImportError:  # pragma: no cover - depends on the environment
  ftfy = None

DEFAULT_MAX_LENGTH = 512  # the Wan pipelines' max_sequence_length


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """A loaded tokenizer: ``backend`` yields the raw pieces (no post-processor, padding or
  truncation); ``eos_id`` / ``pad_id`` are the ids of ``</s>`` and ``<pad>`` (1 and 0 in T5)."""

  backend: tokenizers.Tokenizer
  eos_id: int
  pad_id: int
  directory: str


class Tokens(NamedTuple):
  """Tokenized prompts.

  Attributes:
    input_ids: (B, max_length) int32, pieces then ``</s>`` then padding.
    attention_mask: (B, max_length) int32, 1 on pieces and ``</s>``, 0 on padding.
    lengths: (B,) int32, the number of 1s in each mask row.
    dropped: (B,) int32, pieces each prompt lost to truncation (0: nothing was cut).
  """

  input_ids: np.ndarray
  attention_mask: np.ndarray
  lengths: np.ndarray
  dropped: np.ndarray

  @property
  def truncated(self) -> np.ndarray:
    """(B,) bool: the prompt was cut, as the pipelines cut it."""
    return self.dropped > 0


def _special_token(directory: str, name: str, default: str) -> str:
  """``name`` ("eos_token", "pad_token") from the folder's transformers configs, else
  ``default``; values are strings or ``{"content": ...}`` dicts."""
  for file in ("tokenizer_config.json", "special_tokens_map.json"):
    path = os.path.join(directory, file)
    if os.path.isfile(path):
      with open(path) as f:
        value = json.load(f).get(name)
      if isinstance(value, dict):
        value = value.get("content")
      if isinstance(value, str):
        return value
  return default


def load_tokenizer(directory: str) -> Tokenizer:
  """The tokenizer of a checkpoint's ``tokenizer/`` folder (``tokenizer.json``).

  Raises:
    FileNotFoundError: the folder or its ``tokenizer.json`` does not exist (named).
    ValueError: the file cannot be parsed, or it has no id for ``</s>`` / ``<pad>``.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"tokenizer folder {directory!r} does not exist")
  path = os.path.join(directory, "tokenizer.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tokenizer folder {directory!r} has no tokenizer.json (a "
                            "transformers fast tokenizer saves one)")
  try:
    backend = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # the Rust library raises its own exception type
    raise ValueError(f"{path}: cannot be read by the tokenizers package: {e}") from None
  # Settings saved in the file (a post-processor, a padding or truncation length) would otherwise
  # apply to every encode: T5's conventions are applied by tokenize() instead.
  backend.no_padding()
  backend.no_truncation()
  backend.post_processor = None
  ids = {}
  for name, default in (("eos_token", "</s>"), ("pad_token", "<pad>")):
    token = _special_token(directory, name, default)
    ids[name] = backend.token_to_id(token)
    if ids[name] is None:
      raise ValueError(f"{path}: {name} {token!r} is not in the vocabulary")
  return Tokenizer(backend, ids["eos_token"], ids["pad_token"], directory)


def clean_prompt(text: str) -> str:
  """diffusers' ``prompt_clean``: ftfy (if installed), HTML entities unescaped twice, runs of
  whitespace collapsed to one space, ends stripped."""
  if ftfy is not None:
    text = ftfy.fix_text(text)
  text = html.unescape(html.unescape(text)).strip()
  return re.sub(r"\s+", " ", text).strip()


def _as_list(prompts: str | Sequence[str], field: str = "prompts") -> list[str]:
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  if not prompts or not all(isinstance(p, str) for p in prompts):
    raise ValueError(f"{field}: expected a string or a non-empty list of strings, got "
                     f"{prompts!r}")
  return prompts


def _check_max_length(max_length: Any) -> int:
  if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or (
      max_length < 1):
    raise ValueError(f"max_length: expected a positive int (room for </s>), got {max_length!r}")
  return int(max_length)


def tokenize(tokenizer: Tokenizer, prompts: str | Sequence[str],
             max_length: int = DEFAULT_MAX_LENGTH, *, clean: bool = False) -> Tokens:
  """Ids and mask as transformers' T5 fast tokenizer returns them for ``padding="max_length",
  max_length=max_length, truncation=True, add_special_tokens=True``.

  Args:
    tokenizer: from :func:`load_tokenizer`.
    prompts: a string or a list of B strings.
    max_length: the padded length L (``</s>`` included).
    clean: apply :func:`clean_prompt` first, as :func:`encode_prompts` does.

  Returns:
    ``Tokens`` with (B, L) int32 ``input_ids`` / ``attention_mask`` and per-prompt ``lengths``
    and ``dropped`` (pieces lost to truncation: the pipelines truncate silently).
  """
  prompts = _as_list(prompts)
  max_length = _check_max_length(max_length)
  if clean:
    prompts = [clean_prompt(p) for p in prompts]
  pieces = [e.ids for e in tokenizer.backend.encode_batch(prompts, add_special_tokens=False)]
  b = len(prompts)
  ids = np.full((b, max_length), tokenizer.pad_id, np.int32)
  mask = np.zeros((b, max_length), np.int32)
  lengths = np.zeros((b,), np.int32)
  dropped = np.zeros((b,), np.int32)
  for i, seq in enumerate(pieces):
    kept = list(seq[:max_length - 1]) + [tokenizer.eos_id]  # truncation leaves room for </s>
    ids[i, :len(kept)] = kept
    mask[i, :len(kept)] = 1
    lengths[i], dropped[i] = len(kept), len(seq) - (len(kept) - 1)
  return Tokens(ids, mask, lengths, dropped)


def encode_prompts(encoder: umt5.LoadedTextEncoder, tokenizer: Tokenizer,
                   prompts: str | Sequence[str], max_length: int = DEFAULT_MAX_LENGTH, *,
                   clean: bool = True) -> jax.Array:
  """Wan's text conditioning: the encoder's last hidden state of each prompt, zero beyond the
  prompt's length (``</s>`` included), as diffusers' ``_get_t5_prompt_embeds``.

  Returns:
    (B, max_length, d_model) float32.

  Raises:
    ValueError: bad prompts or ``max_length``, or token ids the encoder's vocabulary lacks.
  """
  tokens = tokenize(tokenizer, prompts, max_length, clean=clean)
  top = int(tokens.input_ids.max())
  if top >= encoder.config.vocab_size:
    raise ValueError(f"tokenizer {tokenizer.directory!r} produced id {top}, beyond the text "
                     f"encoder's vocab_size={encoder.config.vocab_size}: they do not belong "
                     "together")
  hidden = encoder.apply(encoder.params, jnp.asarray(tokens.input_ids),
                         jnp.asarray(tokens.attention_mask))
  # diffusers cuts each row to its length and pads with zeros: the padded positions' states
  # (which attended to the prompt) must not reach the cross-attention.
  return jnp.where(jnp.asarray(tokens.attention_mask, bool)[..., None], hidden, 0.0)


def encode_prompt(encoder: umt5.LoadedTextEncoder, tokenizer: Tokenizer,
                  prompts: str | Sequence[str], negative_prompts: str | Sequence[str] = "",
                  max_length: int = DEFAULT_MAX_LENGTH) -> tuple[jax.Array, jax.Array]:
  """``(positive, negative)`` embeddings, each (B, max_length, d_model) float32, as diffusers'
  ``encode_prompt`` with guidance: one negative string applies to every prompt (the pipelines'
  default is the empty prompt, which still encodes ``</s>``)."""
  prompts = _as_list(prompts)
  if isinstance(negative_prompts, str):
    negative_prompts = [negative_prompts] * len(prompts)
  negative_prompts = _as_list(negative_prompts, "negative_prompts")
  if len(negative_prompts) != len(prompts):
    raise ValueError(f"negative_prompts: expected {len(prompts)} (one per prompt), got "
                     f"{len(negative_prompts)}")
  both = encode_prompts(encoder, tokenizer, prompts + negative_prompts, max_length)
  return both[:len(prompts)], both[len(prompts):]


__all__: Sequence[str] = (
    "Tokenizer", "Tokens", "load_tokenizer", "clean_prompt", "tokenize", "encode_prompts",
    "encode_prompt", "DEFAULT_MAX_LENGTH")
