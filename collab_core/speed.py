"""This machine's measured training speed on a data shape (calibrate.py measures it, recipes.py
turns it into estimates): plain numbers, no torch, so the store's fast path can read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepCost:
    """Seconds per optimizer step as a function of the batch size: fixed + per_rating·bs."""

    fixed: float
    per_rating: float

    def __call__(self, bs: int) -> float:
        return self.fixed + self.per_rating * bs


@dataclass(frozen=True)
class Speed:
    """This machine's measured speed on one data shape (see calibrate.measure)."""

    factors: int  # the embedding width it was measured at; other widths scale by (F + 1)
    dense: StepCost  # fastai's AdamW: every weight decays and moves at every step
    sparse: StepCost  # row-wise AdamW: only a batch's rows
    shuffle: float  # seconds per training rating per epoch (the permutation and its gathers)
    predict: float  # seconds per validation rating per epoch

    @classmethod
    def from_dict(cls, d: dict) -> Speed:
        return cls(d["factors"], StepCost(**d["dense"]), StepCost(**d["sparse"]), d["shuffle"], d["predict"])
