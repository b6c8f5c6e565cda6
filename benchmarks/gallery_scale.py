"""Gallery search at scale: exact (flat) against HNSW and IVF-PQ on random 512-d unit vectors.

For each size N: build time, index size (serialised bytes) and process RSS, load time from
disk, single-query p50/p95 (through `voiceface.ann.search`, i.e. what `Gallery.search` runs,
including the exact re-scoring of ANN candidates) and recall@1 against exact search, for
- "near" queries: stored vectors plus Gaussian noise (cosine about 0.8 to their source, like
  a new recording of an enrolled voice);
- "fresh" queries: new random vectors (nobody enrolled; in 512-d every stored vector is about
  equally far, the hardest case for any ANN index and not one the open-set search needs).
Search-time settings (efSearch, nprobe) are swept on one build; IVF rows say nlist/nprobe.
With --gallery-load, instead: what starting on a saved gallery of N people costs; no FAISS
file is read (`Enrolled.load` of the JSON and .npy files, then `prepare_index` rebuilding
the "auto" index: exact up to 20,000 people, IVF-PQ above).
Usage (repository root): python -m benchmarks.gallery_scale [--sizes 10000 100000 1000000]
    [--kinds flat hnsw ivfpq] [--hnsw-m 32] [--ef-construction 80] [--ef-search 16 32 64 128]
    [--nlist 0] [--nprobe 0] [--pq-m 64] [--queries 200]     (0 = the defaults for N)
    [--gallery-load]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from voiceface.ann import IndexSpec, build, configure, default_nprobe, search
from voiceface.enrolled import Enrolled
from voiceface.gallery import Gallery, Person

DIM = 512
NEAR_COSINE = 0.8  # expected cosine between a "near" query and its source vector
FLAT_TIMED_QUERIES = 50  # exact search at 10^6 takes tens of ms per query: time fewer
CHUNK = 100_000  # vectors generated at a time (keeps the float64 temporaries small)


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, DIM] float32 random unit vectors."""
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, CHUNK):
        block = rng.standard_normal((min(CHUNK, n - start), DIM), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def queries(vectors: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n "near" queries (noisy copies of stored vectors) and n "fresh" ones."""
    source = vectors[rng.choice(len(vectors), n, replace=False)]
    # noise of norm s per query: cosine ~ 1 / sqrt(1 + s^2) = NEAR_COSINE
    sigma = np.sqrt(1 / NEAR_COSINE ** 2 - 1) / np.sqrt(DIM)
    near = source + sigma * rng.standard_normal(source.shape, dtype=np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    return {"near": near.astype(np.float32), "fresh": unit_vectors(n, rng)}


def rss_mb() -> tuple[float, float]:
    """Current and peak resident memory of this process in MB."""
    status = Path("/proc/self/status").read_text()
    current = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return current / 1024, peak / 1024


def time_queries(index, vectors, qs: np.ndarray, spec: IndexSpec) -> tuple[float, float, np.ndarray]:
    """p50 and p95 single-query seconds, and the top-1 rows [Q]."""
    times, top = [], []
    for q in qs:
        start = time.perf_counter()
        _, rows = search(index, vectors, q[None], 1, spec)
        times.append(time.perf_counter() - start)
        top.append(rows[0, 0])
    return statistics.median(times), float(np.percentile(times, 95)), np.array(top)


def run_size(n: int, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(n)
    t0 = time.perf_counter()
    vectors = unit_vectors(n, rng)
    qs = queries(vectors, args.queries, rng)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(vectors)
    truth = {name: exact.search(q, 1)[1][:, 0] for name, q in qs.items()}
    del exact
    print(f"\nN = {n:,} ({vectors.nbytes / 2**20:.0f} MB of vectors; data and exact answers "
          f"in {time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"{'index':<7} {'setting':<14} {'build s':>8} {'load s':>7} {'index MB':>9} "
          f"{'RSS MB':>7} {'p50 ms':>7} {'p95 ms':>7} {'R@1 near':>9} {'R@1 fresh':>9}",
          flush=True)
    for kind in args.kinds:
        spec = IndexSpec(kind=kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                         pq_m=args.pq_m, nlist=args.nlist)
        t0 = time.perf_counter()
        index = build(vectors, spec, threads=args.threads)
        built = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "index.faiss")
            faiss.write_index(index, path)
            size_mb = os.path.getsize(path) / 2**20
            t0 = time.perf_counter()
            del index
            index = faiss.read_index(path)
            loaded = time.perf_counter() - t0
        rss, _ = rss_mb()
        if kind == "flat":
            settings = [("exact", spec)]
        elif kind == "hnsw":
            settings = [(f"efSearch={e}", IndexSpec(**{**spec.to_dict(), "ef_search": e}))
                        for e in args.ef_search]
        else:
            nlist = index.nlist  # the one chosen for N
            settings = [(f"{nlist}/{min(nlist, p or default_nprobe(nlist))}",
                         IndexSpec(**{**spec.to_dict(), "nprobe": p})) for p in args.nprobe]
        for label, setting in settings:
            configure(index, setting)
            timed = FLAT_TIMED_QUERIES if kind == "flat" else len(qs["near"])
            p50, p95, _ = time_queries(index, vectors, qs["near"][:timed], setting)
            recall = {}
            for name, q in qs.items():
                _, rows = search(index, vectors, q, 1, setting)  # batched: same answers
                recall[name] = float(np.mean(rows[:, 0] == truth[name]))
            print(f"{kind:<7} {label:<14} {built:>8.1f} {loaded:>7.2f} {size_mb:>9.0f} "
                  f"{rss:>7.0f} {p50 * 1e3:>7.2f} {p95 * 1e3:>7.2f} {recall['near']:>9.3f} "
                  f"{recall['fresh']:>9.3f}", flush=True)
        del index


def gallery_load(n: int) -> None:
    """Save a gallery of n people and time loading it and rebuilding its index."""
    gallery = Gallery(DIM, "benchmark")
    # add() copies the matrix per person (fine live, hours at 10^6): fill it at once instead
    gallery._people = [Person(f"p{i:07d}", f"Person {i}") for i in range(n)]
    gallery._rows = {p.id: i for i, p in enumerate(gallery._people)}
    gallery._embeddings = unit_vectors(n, np.random.default_rng(n))
    with tempfile.TemporaryDirectory() as tmp:
        Enrolled.of(gallery).save(tmp)
        del gallery
        t0 = time.perf_counter()
        loaded = Enrolled.load(tmp).gallery
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded.prepare_index()
        rebuilt = time.perf_counter() - t0
    print(f"{n:>9,} {loaded.index_kind:<6} {read:>7.2f} {rebuilt:>10.2f} {read + rebuilt:>8.2f} "
          f"{rss_mb()[0]:>7.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq"],
                        choices=["flat", "hnsw", "ivfpq"])
    parser.add_argument("--hnsw-m", type=int, default=IndexSpec.hnsw_m)
    parser.add_argument("--ef-construction", type=int, default=IndexSpec.ef_construction)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--nlist", type=int, default=0, help="0 = about sqrt(N)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[0], help="0 = nlist / 8, at least 64")
    parser.add_argument("--pq-m", type=int, default=IndexSpec.pq_m)
    parser.add_argument("--queries", type=int, default=200, help="of each kind")
    parser.add_argument("--threads", type=int, default=1,
                        help="FAISS OpenMP threads for building (queries use 1)")
    parser.add_argument("--gallery-load", action="store_true",
                        help="time loading saved galleries (and rebuilding their index) instead")
    args = parser.parse_args()
    if args.gallery_load:
        print(f"{'people':>9} {'index':<6} {'load s':>7} {'rebuild s':>10} {'total s':>8} "
              f"{'RSS MB':>7}", flush=True)
        for n in args.sizes:
            gallery_load(n)
        return
    faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads to build, 1 to search, "
          f"{os.cpu_count()} CPUs (shared machine), {DIM}-d random unit vectors, "
          f"{args.queries} near + {args.queries} fresh queries; ANN candidates re-scored "
          f"exactly (rerank {IndexSpec.rerank})")
    for n in args.sizes:
        run_size(n, args)
    print(f"\npeak RSS {rss_mb()[1]:.0f} MB")


if __name__ == "__main__":
    main()
