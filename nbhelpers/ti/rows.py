"""The trainable rows: the placeholder token's embedding vectors spliced into a frozen table.

Textual inversion trains only the rows of the text encoder's token-embedding table that belong
to the placeholder token (or to an existing word in overwrite mode). :class:`TrainableRows`
keeps them in a separate fp32 parameter, so no other row can change and no 49408-row gradient
is ever formed; :class:`Conditioner` is the text encoder with those rows spliced in, the one
module a trainer optimises and Accelerate wraps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Conditioner", "TrainableRows"]


class TrainableRows(nn.Module):
    """A frozen ``nn.Embedding`` with the rows of ``ids`` replaced by a trainable fp32 tensor.

    ``forward(input_ids)`` is the table lookup; a position holding ``ids[j]`` gets
    ``vectors[j]``. Gradients reach ``vectors`` only.
    """

    def __init__(self, base: nn.Embedding, ids: Sequence[int], init: Tensor) -> None:
        super().__init__()
        if init.shape != (len(ids), base.embedding_dim):
            raise ValueError(f"init must have shape ({len(ids)}, {base.embedding_dim}), "
                             f"got {tuple(init.shape)}")
        self.base = base
        self.base.weight.requires_grad_(False)
        self.register_buffer("ids", torch.tensor(list(ids), dtype=torch.long), persistent=False)
        self.vectors = nn.Parameter(init.detach().float().clone())

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: Tensor) -> Tensor:
        emb = self.base(input_ids)
        hit = input_ids[..., None] == self.ids.to(input_ids.device)       # (B, L, n)
        spliced = hit.to(self.vectors.dtype) @ self.vectors                # (B, L, width)
        return torch.where(hit.any(-1, keepdim=True), spliced.to(emb.dtype), emb)

    @torch.no_grad()
    def write_back(self) -> nn.Embedding:
        """Copy the trained vectors into the base table and return it."""
        self.base.weight[self.ids] = self.vectors.to(self.base.weight.dtype)
        return self.base


class Conditioner(nn.Module):
    """Text encoder with the trainable rows spliced in: ``ids -> hidden states (B, 77, width)``.

    The module Accelerate wraps (for several processes), so gradient sync covers the rows.
    """

    def __init__(self, text_encoder: nn.Module, rows: TrainableRows) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.rows = rows

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.text_encoder(input_ids)[0]
