"""Fast greedy decoding for ContRec / DeftRec: a preallocated (static) KV cache, one decode step that never
synchronises with the host, CUDA-graph replay of that step, and prompts batched by length.

:func:`genrec_bench_plugins.contrec.model.greedy_generate` (the plain loop) calls the HF model once per new
token with a growing ``DynamicCache``: on a GPU each step is a few hundred small kernel launches plus a host
sync (``done.all()``), so a 135M backbone decodes launch-bound (measured earlier on one H100: 72 ms per step for
256 prompts). :class:`StaticDecoder` computes the same tokens with the backbone's own modules (its projections,
LoRA layers included, norms, rotary embedding and MLPs), but

- keeps keys and values in one ``[B, kv_heads, prompt + new, head_dim]`` tensor per layer, written in place;
- runs every decode step as the same fixed-shape computation (the step index lives in a device tensor), so
  on CUDA one step is captured once as a CUDA graph and replayed ``max_new`` times;
- stops only after ``max_new`` steps, then trims to the step at which every row had ended, which is exactly
  what the plain loop returns (tokens after an end-of-sequence are masked out by ``valid`` in both).

Supported backbones: the Llama layout (SmolLM2, Llama 3.x; also Mistral and Qwen2 without sliding windows).
Anything else falls back to the plain loop (:func:`supports`).

``ContRec.generate`` uses it under ``speed: {decode: static|graph, sort_by_length: true, bucket: 32}``
(:func:`decoder_for`, :func:`sorted_generate`): users sorted by prompt length so each chunk pads little, prompt
widths rounded up to ``bucket`` tokens so CUDA graphs are reused across chunks, outputs in the users' order.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .model import embed_prompt, inner_model
from .prompt import PromptBatch

log = logging.getLogger("genrec_bench")
SUPPORTED_LAYERS = ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer")


def supports(lm: nn.Module) -> bool:
    """Whether :class:`StaticDecoder` reproduces this backbone (the Llama layout, no sliding-window attention)."""
    inner = inner_model(lm)
    layers = getattr(inner, "layers", None)
    if layers is None or len(layers) == 0 or not hasattr(inner, "rotary_emb") or not hasattr(inner, "norm"):
        return False
    if type(layers[0]).__name__ not in SUPPORTED_LAYERS:
        return False
    cfg = lm.config
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    attn = layers[0].self_attn
    return all(
        hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")
    ) and not hasattr(attn, "q_norm")


def _compute_dtype(lm: nn.Module, device: torch.device) -> torch.dtype:
    if device.type in ("cuda", "cpu") and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return lm.get_input_embeddings().weight.dtype


class _Buffers:
    """The fixed-shape tensors one decode graph reads and writes (one set per ``(rows, width)``)."""

    def __init__(
        self,
        lm: nn.Module,
        rows: int,
        width: int,
        max_new: int,
        device: torch.device,
        dtype: torch.dtype,
        cond_dim: int,
    ):
        cfg = lm.config
        layers = inner_model(lm).layers
        attn = layers[0].self_attn
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        total = width + max_new
        shape = (rows, kv_heads, total, attn.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in layers]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in layers]
        self.key_valid = torch.zeros(rows, total, dtype=torch.bool, device=device)  # prompt mask, then ones
        self.arange = torch.arange(total, device=device)
        self.last_pos = torch.zeros(rows, dtype=torch.long, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.state = torch.zeros(rows, cfg.hidden_size, device=device, dtype=torch.float32)
        self.tokens = torch.zeros(rows, max_new, dtype=torch.long, device=device)
        self.conds = torch.zeros(rows, max_new, cond_dim, device=device, dtype=torch.float32)
        self.width, self.max_new = width, max_new
        self.graph: Any = None


class StaticDecoder:
    """Greedy decoding with a static KV cache; ``graphs=True`` replays each decode step as a CUDA graph."""

    def __init__(self, lm: nn.Module, condition: str = "hidden", graphs: bool = False):
        if not supports(lm):
            raise ValueError(f"StaticDecoder: {type(lm).__name__} is not a supported (Llama-layout) backbone")
        self.lm, self.inner, self.condition = lm, inner_model(lm), condition
        self.head, self.table = lm.get_output_embeddings(), lm.get_input_embeddings()
        self.graphs = graphs
        self._pool: dict[tuple, _Buffers] = {}
        self.prompt_states: torch.Tensor | None = None  # last prefill's states ``[B, width, H]``

    # --- the transformer over a slice of the cache ------------------------------------------------------
    def _layers(
        self, h: torch.Tensor, positions: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, buf: _Buffers
    ) -> torch.Tensor:
        """Run every block on ``h [B, T, H]`` at ``positions [B, T]``, writing keys/values at cache columns
        ``index [T]``; ``mask [B, T, S]`` says which cache columns each query sees. Returns normed states."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        rows, length = h.shape[:2]
        cos, sin = self.inner.rotary_emb(h, positions)
        for i, layer in enumerate(self.inner.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(rows, length, -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(rows, length, -1, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(rows, length, -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys, values = buf.keys[i], buf.values[i]
            keys.index_copy_(2, index, k.to(keys.dtype))
            values.index_copy_(2, index, v.to(values.dtype))
            kv_heads, groups = keys.shape[1], q.shape[1] // keys.shape[1]
            # grouped-query attention without copying keys: the query heads sharing a kv head become extra
            # query rows ([B, kv, groups * T, d]); head h = kv * groups + g, as transformers' repeat_kv
            q = q.reshape(rows, kv_heads, groups * length, attn.head_dim).to(keys.dtype)
            m = mask.unsqueeze(1).repeat(1, 1, groups, 1) if groups > 1 else mask.unsqueeze(1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=m, scale=attn.scaling)
            out = out.reshape(rows, kv_heads * groups, length, attn.head_dim).transpose(1, 2)
            h = h + attn.o_proj(out.reshape(rows, length, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.inner.norm(h)

    def _prefill(self, emb: torch.Tensor, prompt: PromptBatch, buf: _Buffers) -> None:
        rows, width = prompt.attention_mask.shape
        pad = buf.width - width  # the bucket's extra left padding
        valid = prompt.attention_mask.bool()
        if pad:
            emb = torch.cat([emb.new_zeros(rows, pad, emb.shape[2]), emb], 1)
            valid = torch.cat([valid.new_zeros(rows, pad), valid], 1)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        buf.key_valid.fill_(True)
        buf.key_valid[:, : buf.width] = valid
        cols = buf.arange[: buf.width]
        # causal over the prompt, padding hidden; each query also sees itself so no row is fully masked
        mask = (valid[:, None, :] & (cols[None, :, None] >= cols[None, None, :])) | torch.eye(
            buf.width, dtype=torch.bool, device=emb.device
        )[None]
        full = torch.zeros(rows, buf.width, buf.key_valid.shape[1], dtype=torch.bool, device=emb.device)
        full[:, :, : buf.width] = mask
        states = self._layers(emb, positions, cols, full, buf)
        self.prompt_states = states[:, pad:]  # the prompt's own columns: the ``history`` condition reads them
        buf.state.copy_(states[:, -1].float())
        buf.last_pos.copy_(positions[:, -1])
        buf.step.zero_()

    def _step(self, buf: _Buffers) -> None:
        """One greedy step, all on the device: emit a token from ``state``, then advance the cache by it."""
        state = buf.state
        token = self.head(state).argmax(-1)
        where = buf.step.view(1)
        buf.tokens.index_copy_(1, where, token[:, None])
        cond = state if self.condition == "hidden" else self.table(token).float()
        buf.conds.index_copy_(1, where, cond.float()[:, None])
        emb = self.table(token)[:, None]
        positions = (buf.last_pos + 1 + buf.step)[:, None]
        column = buf.width + buf.step
        mask = (buf.key_valid & (buf.arange <= column))[:, None, :]
        states = self._layers(emb, positions, column.view(1), mask, buf)
        buf.state.copy_(states[:, 0].float())
        buf.step.add_(1)

    def _buffers(self, rows: int, width: int, max_new: int, device: torch.device, dtype: torch.dtype) -> _Buffers:
        cond_dim = self.lm.config.hidden_size
        key = (rows, width, max_new, str(device), dtype)
        if key not in self._pool:
            # one set at a time: users come sorted by prompt length, so a width once left is not met again in
            # this call, and a 512-row cache of a 30-layer backbone is gigabytes (one graph per width change)
            self._pool.clear()
            self._pool[key] = _Buffers(self.lm, rows, width, max_new, device, dtype, cond_dim)
        return self._pool[key]

    def _capture(self, buf: _Buffers) -> None:
        saved = buf.state.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: writes that the real steps overwrite
                self._step(buf)
        torch.cuda.current_stream().wait_stream(stream)
        buf.step.zero_()
        buf.state.copy_(saved)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(buf)
        buf.step.zero_()
        buf.state.copy_(saved)
        buf.graph = graph

    @torch.no_grad()
    def generate(
        self, source: nn.Module, prompt: PromptBatch, max_new: int, eos: int, width: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Same contract as :func:`greedy_generate`: tokens ``[B, G]``, condition states ``[B, G, H]``, mask."""
        emb = embed_prompt(self.lm, source, prompt)
        device = emb.device
        rows = emb.shape[0]
        width = max(width or 0, prompt.attention_mask.shape[1])
        dtype = _compute_dtype(self.lm, device)
        use_graph = self.graphs and device.type == "cuda"
        buf = self._buffers(rows, width, max_new, device, dtype)
        autocast = torch.is_autocast_enabled(device.type)
        self._prefill(emb, prompt, buf)
        if use_graph and buf.graph is None:
            try:  # autocast's weight-cast cache must be off while a graph is captured
                with torch.autocast(device.type, dtype=dtype, enabled=autocast, cache_enabled=False):
                    self._capture(buf)
            except RuntimeError as exc:  # a backbone op that cannot be captured: decode eagerly from now on
                log.warning(
                    "StaticDecoder: CUDA-graph capture failed (%s); decoding without graphs",
                    str(exc).splitlines()[0][:200],
                )
                self.graphs, use_graph = False, False
                self._pool.clear()
                buf = self._buffers(rows, width, max_new, device, dtype)
                self._prefill(emb, prompt, buf)
        if use_graph:
            for _ in range(max_new):
                buf.graph.replay()
        else:
            for _ in range(max_new):
                self._step(buf)
        tokens, conds = buf.tokens.clone(), buf.conds.clone()
        ended = (tokens == eos).long().cumsum(1) > 0  # row has emitted eos at or before this step
        valid = torch.cat([torch.ones_like(ended[:, :1]), ~ended[:, :-1]], 1)
        all_done = ended.all(0)
        steps = int(all_done.long().argmax()) + 1 if bool(all_done.any()) else max_new  # the one host sync
        return tokens[:, :steps], conds[:, :steps], valid[:, :steps]


SPEED_DEFAULTS: dict[str, Any] = {
    "decode": "plain",
    "sort_by_length": False,
    "bucket": 32,
    "pack": False,
    "pack_width": 0,
    "fused_adam": False,
}


def parse_speed(speed: dict[str, Any] | None, where: str = "generator 'contrec'.speed") -> dict[str, Any]:
    """The ``speed`` options with defaults (all off: the plain loop, padded batches, the for-each AdamW)."""
    from genrec_bench.errors import ConfigError

    out = dict(SPEED_DEFAULTS)
    for key, value in (speed or {}).items():
        if key not in out:
            raise ConfigError(f"{where}: unknown option {key!r}; expected one of {sorted(out)}")
        out[key] = value
    if out["decode"] not in ("plain", "static", "graph"):
        raise ConfigError(f"{where}.decode: 'plain', 'static' or 'graph', got {out['decode']!r}")
    return out


def bucketed(width: int, bucket: int) -> int:
    """``width`` rounded up to a multiple of ``bucket`` (how many distinct CUDA graphs a sweep captures)."""
    return width if bucket <= 1 else -(-width // bucket) * bucket


def decoder_for(gen) -> Any:
    """The greedy-decoding function ``ContRec.generate`` calls: the plain loop, or the static decoder with the
    same signature as :func:`greedy_generate` (falls back to the plain loop for unsupported backbones)."""
    from .model import greedy_generate

    options = getattr(gen, "speed", None) or SPEED_DEFAULTS
    if options["decode"] == "plain" or not supports(gen.lm):
        return greedy_generate
    decoder = getattr(gen, "_static_decoder", None)
    if decoder is None or decoder.lm is not gen.lm:
        decoder = StaticDecoder(gen.lm, "hidden", graphs=options["decode"] == "graph")
        gen._static_decoder = decoder
    bucket = int(options["bucket"])

    def decode(lm: nn.Module, source: nn.Module, prompt: PromptBatch, max_new: int, eos: int, condition: str):
        decoder.condition = "hidden" if condition in ("prompt", "history") else condition
        tokens, conds, valid = decoder.generate(
            source, prompt, max_new, eos, width=bucketed(prompt.attention_mask.shape[1], bucket)
        )
        if condition == "prompt":  # the state at the last prompt position only, as greedy_generate
            return tokens, conds[:, :1], torch.ones_like(valid[:, :1])
        if condition == "history":  # the prompt's token-slot states and its last position, as greedy_generate
            assert decoder.prompt_states is not None
            slots = prompt.slots >= 0
            slots[:, -1] = True  # left-padded rows: the last column is every row's last prompt position
            return tokens, decoder.prompt_states, slots
        return tokens, conds, valid

    return decode


def release(gen) -> None:
    """Free the static decoder's KV cache and graph (gigabytes for 512 rows of a 30-layer backbone) so that
    training between validations gets the memory back; the next ``generate`` captures again."""
    decoder = getattr(gen, "_static_decoder", None)
    if decoder is not None:
        decoder._pool.clear()


def prompt_lengths(gen, batch) -> torch.Tensor:
    """Each user's prompt length in tokens (what left padding pads to)."""
    hist = batch.items[:, -gen.prompt_items :].cpu().numpy()
    users = batch.users.cpu().tolist() if gen.source.user_k else [None] * len(hist)
    return torch.tensor([len(gen.prompts._row(h, u, None)[0]) for h, u in zip(hist, users, strict=True)])


@torch.no_grad()
def sorted_generate(gen, batch, ctx):
    """``gen.generate`` over the users sorted by prompt length (each chunk of ``eval_batch`` pads little), with
    the outputs put back in the users' order. Tokens per user are unchanged; the diffusion noise each user
    draws follows the sorted order."""
    import dataclasses

    order = torch.argsort(prompt_lengths(gen, batch), stable=True)
    permuted = dataclasses.replace(
        batch,
        **{
            f.name: getattr(batch, f.name)[order.to(getattr(batch, f.name).device)]
            for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor)
        },
    )
    gen._sorting = True
    try:
        out = gen.generate(permuted, ctx)
    finally:
        gen._sorting = False
        release(gen)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    texts = [out.texts[i] for i in inverse.tolist()]
    return dataclasses.replace(out, vectors=out.vectors[inverse.to(out.vectors.device)], texts=texts)


def wants_sorting(gen, batch) -> bool:
    options = getattr(gen, "speed", None) or SPEED_DEFAULTS
    return bool(options["sort_by_length"]) and not getattr(gen, "_sorting", False) and len(batch) > gen.eval_batch
