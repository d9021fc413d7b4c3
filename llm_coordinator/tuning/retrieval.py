"""Retrieval before retraining: the approved orders of this plant most like a new one (BM25,
``bm25s``: no network, no weights), shown to the model as examples from the first approval on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logging.getLogger("bm25s").setLevel(logging.WARNING)


class ExampleIndex:
    """(order, answer) pairs searchable by the order's words."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(dict.fromkeys(pairs))
        self._index: Any = None
        if self.pairs:
            import bm25s

            logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index at DEBUG
            self._index = bm25s.BM25()
            self._index.index(
                bm25s.tokenize([o for o, _ in self.pairs], stopwords="en", show_progress=False), show_progress=False
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def similar(self, order: str, k: int = 3, *, exclude: str | None = None) -> list[tuple[str, str]]:
        """Up to ``k`` pairs sharing words with ``order``, most similar first (none that share
        nothing; ``exclude``: an order text left out, so an example never shows itself)."""
        if self._index is None or k <= 0:
            return []
        import bm25s

        query = bm25s.tokenize([order], stopwords="en", show_progress=False)
        if not query.vocab:
            return []
        n = min(len(self.pairs), k + 1)
        docs, scores = self._index.retrieve(query, k=n, show_progress=False)
        out = []
        for i, score in zip(docs[0], scores[0], strict=True):
            pair = self.pairs[int(i)]
            if score <= 0 or (exclude is not None and pair[0].strip().lower() == exclude.strip().lower()):
                continue
            out.append(pair)
        return out[:k]
