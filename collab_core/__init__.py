"""Collab Explorer core: collaborative filtering on MovieLens, after fastai's chapter 8."""

__version__ = "0.1.0"
