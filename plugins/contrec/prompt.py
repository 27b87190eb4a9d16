"""Prompts built from a history: item titles plus K placeholder slots that receive each item's continuous tokens.

A history item renders as `` {title[:title_chars]} [<z_1>..<z_K>],``; the slot positions carry the pad id and are
marked in ``slots`` with ``entity * K + k`` (users: offset by ``n_items * K``). The answer (training target) is
``target_template`` filled with the next item's text cut to ``target_chars``, then end-of-sequence.
Rows are left-padded; the answer, when present, ends every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genrec_bench.errors import ConfigError

INSTRUCTION = "A user watched or bought these items, in order:"
SUFFIX = " Taking into account the user's preferences and history, I would suggest:"
USER_PREFIX = " User profile: "


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # int64 [B, L], left-padded
    attention_mask: torch.Tensor  # int64 [B, L]
    slots: torch.Tensor  # int64 [B, L]: -1 for text, else the index of the continuous token placed there
    answer: torch.Tensor  # bool [B, L]: answer tokens (training only; all False for generation prompts)

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.cumsum(1) - 1).clamp(min=0)

    def to(self, device) -> PromptBatch:
        return PromptBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.slots, self.answer)))


class PromptBuilder:
    """Tokenises every item's block and answer once; ``build`` then only concatenates arrays."""

    def __init__(
        self,
        tokenizer,
        item_text: list[str],
        n_tokens: int,
        title_chars: int = 50,
        target_chars: int = 50,
        target_template: str = "{text}",
        user_tokens: int = 0,
        context: int = 2048,
        instruction: str = INSTRUCTION,
        suffix: str = SUFFIX,
    ):
        if "{text}" not in target_template:
            raise ConfigError("generator 'contrec'.target_template: must contain '{text}'")
        self.tok, self.k, self.user_k, self.context = tokenizer, n_tokens, user_tokens, context
        self.n_items = len(item_text)
        self.pad, self.eos = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
        self.template, self.target_chars = target_template, target_chars
        encode = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
        titles = [" " + " ".join(str(t).split())[:title_chars].strip() for t in item_text]
        opening, closing = encode([" [", "],"])
        self.blocks, self.block_slots = [], []
        for i, ids in enumerate(encode(titles)):
            self.blocks.append(np.array(ids + opening + [self.pad] * n_tokens + closing, dtype=np.int64))
            slots = np.full(len(self.blocks[-1]), -1, dtype=np.int64)
            slots[len(ids) + len(opening) : len(ids) + len(opening) + n_tokens] = i * n_tokens + np.arange(n_tokens)
            self.block_slots.append(slots)
        self.answers = [np.array(ids + [self.eos], dtype=np.int64) for ids in encode(self.answer_texts(item_text))]
        self.prefix = np.array(encode([instruction])[0], dtype=np.int64)
        self.suffix = np.array(encode([suffix])[0], dtype=np.int64)
        self.user_prefix = np.array(encode([USER_PREFIX])[0], dtype=np.int64)

    def answer_texts(self, item_text: list[str]) -> list[str]:
        """The text each item's answer spells (what the text retriever matches generated text against)."""
        return [
            " " + self.template.format(text=" ".join(str(t).split())[: self.target_chars].strip()) for t in item_text
        ]

    def _row(self, history: np.ndarray, user: int | None, target: int | None):
        parts, slots = [self.prefix], [np.full(len(self.prefix), -1)]
        if user is not None and self.user_k:
            base = self.n_items * self.k + user * self.user_k
            parts += [self.user_prefix, np.full(self.user_k, self.pad)]
            slots += [np.full(len(self.user_prefix), -1), base + np.arange(self.user_k)]
        for item in history[history >= 0]:
            parts.append(self.blocks[item])
            slots.append(self.block_slots[item])
        parts.append(self.suffix)
        slots.append(np.full(len(self.suffix), -1))
        n_answer = 0
        if target is not None:
            parts.append(self.answers[target])
            slots.append(np.full(len(self.answers[target]), -1))
            n_answer = len(self.answers[target])
        return np.concatenate(parts), np.concatenate(slots), n_answer

    def build(
        self,
        histories: torch.Tensor,
        users: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        reserve: int = 0,
    ) -> PromptBatch:
        """Left-padded prompts for ``histories [B, H]`` (-1 padded), with the answers of ``targets`` appended."""
        hist = histories.cpu().numpy()
        user_list = users.cpu().tolist() if users is not None else [None] * len(hist)
        target_list = targets.cpu().tolist() if targets is not None else [None] * len(hist)
        rows = [self._row(h, u, t) for h, u, t in zip(hist, user_list, target_list, strict=True)]
        width = max(len(r[0]) for r in rows)
        if width + reserve > self.context:
            raise ConfigError(
                f"generator 'contrec': a prompt of {width} tokens (+{reserve} to generate) exceeds the "
                f"backbone's context of "
                f"{self.context}; lower prompt_items, title_chars, target_chars or max_new_tokens"
            )
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        slots = np.full((len(rows), width), -1, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        answer = np.zeros((len(rows), width), dtype=bool)
        for r, (row_ids, row_slots, n_answer) in enumerate(rows):
            ids[r, width - len(row_ids) :], slots[r, width - len(row_ids) :] = row_ids, row_slots
            mask[r, width - len(row_ids) :] = 1
            if n_answer:
                answer[r, width - n_answer :] = True
        return PromptBatch(
            torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(slots), torch.from_numpy(answer)
        )

    def strip(self, texts: list[str]) -> list[str]:
        """Generated answers with the template's fixed words removed (what remains names the item)."""
        head, _, tail = self.template.partition("{text}")
        out = []
        for text in texts:
            text = text.strip()
            if head.strip() and text.startswith(head.strip()):
                text = text[len(head.strip()) :]
            if tail.strip() and text.endswith(tail.strip()):
                text = text[: -len(tail.strip())]
            out.append(text.strip())
        return out
