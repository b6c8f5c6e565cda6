"""Which FAISS index a gallery searches with, chosen by size: exact when small, ANN when large.

- "flat": exact inner product over every vector (`IndexFlatIP`). Results are exact; cost grows
  linearly with the gallery.
- "hnsw": a graph (`IndexHNSWFlat`, inner product): fast queries, but slow to build on 2 cores
  (minutes for 10^5 vectors) and it stores every vector again plus its links.
- "ivfpq": an inverted file over 4-bit product-quantised codes scanned with SIMD
  (`IndexIVFPQFastScan`): `pq_m / 2` bytes per vector, quick to build, approximate scores.
  `nlist=1` makes it an exhaustive scan of the codes (no inverted-file misses).
- "auto": "flat" up to `FLAT_MAX` vectors, "ivfpq" above (it beat HNSW on build time, memory
  and recall in `benchmarks/gallery_scale.py`).

Approximate indexes only propose candidates: the gallery re-scores the best `rerank` of them
exactly against its stored embeddings, so reported scores are always true cosine similarities
(the open-set threshold depends on them) and only recall is approximate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import faiss
import numpy as np

KINDS = ("auto", "flat", "hnsw", "ivfpq")
FLAT_MAX = 20_000  # vectors; "auto" searches exactly up to here, where exact search is still quick
IVF_MIN = 10_000  # vectors; fewer cannot train an inverted file well: fall back to "flat"
TRAIN_POINTS_PER_LIST = 40  # k-means training sample per inverted list (FAISS wants >= 39)
PQ_TRAIN_POINTS = 20_000  # at least this many training vectors for the product quantiser
PQ_BITS = 4  # bits per sub-quantiser code: 4 is what FAISS's SIMD fast scan works on
TRAIN_SEED = 1234  # k-means seed and training sample choice, so builds are reproducible
# OpenMP threads. On cores shared with other work, a second thread makes single queries and
# small builds many times slower (benchmarks/README.md): the threads wait for each other at every
# barrier. Large builds may pass more.
SEARCH_THREADS = 1
BUILD_THREADS = 1


MIN_NPROBE = 64  # default floor: probing fewer lists misses near neighbours (benchmarks/README.md)
ZERO_OK = ("nlist", "nprobe")  # settings where 0 means "derive from the gallery size"


@dataclass(frozen=True)
class IndexSpec:
    """How to index a gallery; saved in its manifest. Defaults tuned on 10^6 x 512-d vectors
    (see `benchmarks/gallery_scale.py`)."""

    kind: str = "auto"  # one of KINDS
    hnsw_m: int = 32  # graph neighbours per node
    ef_construction: int = 80  # candidate list while building the graph
    ef_search: int = 64  # candidate list while searching; higher = better recall, slower
    nlist: int = 0  # inverted lists; 0 = about sqrt(N), a power of two (1024 at 10^6)
    nprobe: int = 0  # lists visited per query; 0 = nlist / 8, at least MIN_NPROBE
    pq_m: int = 64  # 4-bit sub-quantisers (pq_m / 2 bytes per vector); must divide the dimension
    rerank: int = 32  # ANN candidates re-scored exactly (at least k)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Index kind {self.kind!r} is not one of {', '.join(KINDS)}.")
        for f in fields(self):
            least = 0 if f.name in ZERO_OK else 1
            if f.name != "kind" and getattr(self, f.name) < least:
                raise ValueError(f"Index setting {f.name}={getattr(self, f.name)} must be at "
                                 f"least {least}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | str | None) -> IndexSpec:
        """From a manifest entry: a dict of settings, a kind name, or None (= "auto")."""
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(kind=data)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def resolve(self, n: int) -> str:
        """The concrete kind for `n` vectors ("auto" decided; "ivfpq" too small -> "flat")."""
        if self.kind == "auto":
            return "flat" if n <= FLAT_MAX else "ivfpq"
        if self.kind == "ivfpq" and n < IVF_MIN:
            return "flat"
        return self.kind


def as_spec(index: str | IndexSpec | None) -> IndexSpec:
    """Accept a kind name, an IndexSpec or None (= "auto")."""
    return index if isinstance(index, IndexSpec) else IndexSpec.from_dict(index)


def build(vectors: np.ndarray, spec: IndexSpec, threads: int = BUILD_THREADS) -> faiss.Index:
    """An index over unit vectors [N, D] (float32), of the kind `spec.resolve(N)`."""
    with _threads(threads):
        return _build(vectors, spec)


def _build(vectors: np.ndarray, spec: IndexSpec) -> faiss.Index:
    n, dim = vectors.shape
    kind = spec.resolve(n)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
    else:
        if dim % spec.pq_m:
            raise ValueError(f"pq_m={spec.pq_m} must divide the embedding size {dim}.")
        nlist = spec.nlist or _default_nlist(n)
        index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, spec.pq_m,
                                         PQ_BITS, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = TRAIN_SEED
        sample = min(n, max(nlist * TRAIN_POINTS_PER_LIST, PQ_TRAIN_POINTS))
        rows = np.random.default_rng(TRAIN_SEED).choice(n, sample, replace=False)
        index.train(vectors[np.sort(rows)])
    index.add(vectors)
    configure(index, spec)
    return index


def configure(index: faiss.Index, spec: IndexSpec) -> None:
    """Apply the search-time settings (efSearch, nprobe) to a built or loaded index."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = spec.ef_search
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = min(index.nlist, spec.nprobe or default_nprobe(index.nlist))


def kind_of(index: faiss.Index) -> str:
    """"flat", "hnsw" or "ivfpq" for an index made by `build`."""
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexIVF):
        return "ivfpq"
    return "flat"


def search(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int,
           spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows [Q, k] of the k best vectors for queries [Q, D], best first.

    Exact indexes answer directly. Approximate ones propose max(k, rerank) candidates that
    are re-scored exactly against `vectors` [N, D]; rows of missing candidates are -1.
    """
    if kind_of(index) == "flat":
        with _threads(SEARCH_THREADS if len(queries) == 1 else 0):
            return index.search(queries, k)
    wide = min(max(k, spec.rerank), index.ntotal)
    with _threads(SEARCH_THREADS if len(queries) == 1 else 0):
        _, candidates = index.search(queries, wide)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    rows = np.full((len(queries), k), -1, np.int64)
    for q, cand in enumerate(candidates):
        cand = cand[cand >= 0]
        exact = vectors[cand] @ queries[q]
        order = np.argsort(-exact, kind="stable")[:k]
        scores[q, :len(order)], rows[q, :len(order)] = exact[order], cand[order]
    return scores, rows


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run FAISS with n OpenMP threads (0 = leave as is), then restore the setting."""
    before = faiss.omp_get_max_threads()
    if n:
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def default_nprobe(nlist: int) -> int:
    """Lists visited by default: an eighth of them, at least MIN_NPROBE."""
    return max(MIN_NPROBE, nlist // 8)


def _default_nlist(n: int) -> int:
    """About sqrt(n) inverted lists, rounded to a power of two (at least 16): more, smaller
    lists miss near neighbours at the default nprobe (benchmarks/README.md)."""
    return 1 << max(4, round(math.log2(math.sqrt(n))))
