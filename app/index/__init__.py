"""Search of cluster representatives: the ``VectorIndex`` contract and its implementations.

FAISS is imported only when a FAISS index is made, so the engine and its tests never load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.index.base import VectorIndex


def make_index(kind: str = "exact", device: str = "auto", **options: object) -> VectorIndex:
    """The index a worker or an evaluation uses: FAISS ``exact``, ``ivf``, ``ivfpq`` or ``hnsw``."""
    from app.index.faiss_index import FaissIndex

    return FaissIndex(kind, device, **options)
