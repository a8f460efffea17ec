"""The one container every data source becomes: inputs in the spec's bounds, labels, class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class LabeledData:
    """Inputs x (N, C, H, W, float, inside the declared bounds) and their labels.

    y is (N,) class indices for classification, (N, H, W) label maps for segmentation, or a list of
    per-image dicts {"boxes": (K, 4) xyxy, "labels": (K,)} for detection. metadata holds per-input
    fields (lighting, city...) that a contextual scope can select on.
    """

    name: str
    x: Tensor
    y: Any
    classes: list[str]
    metadata: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, rows: Any) -> LabeledData:
        """The inputs at rows (a LongTensor, list or slice), with labels and metadata."""
        import torch

        index = torch.as_tensor(rows) if not isinstance(rows, slice) else torch.arange(len(self))[rows]
        y = [self.y[i] for i in index.tolist()] if isinstance(self.y, list) else self.y[index]
        meta = {k: [v[i] for i in index.tolist()] for k, v in self.metadata.items()}
        return LabeledData(self.name, self.x[index], y, self.classes, meta)
