"""Peak memory and speed of scoring patch vectors against a PatchCore-sized memory bank.

A bank of ``--bank`` patch vectors of ``--dim`` dimensions (default 10⁶ × 512, float32: 1.9 GiB for the bank
itself) is scored for ``--queries`` query cells with :func:`xrad.methods.knn.search.nearest_distance`, which walks
both sets in chunks. Prints the bank's size, the process's peak resident memory (the bank included) and the
throughput; checks a sample of the distances against brute force on a slice. Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_patch_memory.py --bank 1000000 --queries 2048
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from xrad.methods.knn.search import nearest_distance


def _peak_rss_gib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank", type=int, default=1_000_000, help="patch vectors in the memory bank")
    parser.add_argument("--dim", type=int, default=512, help="dimensions of a patch vector")
    parser.add_argument("--queries", type=int, default=2048, help="query cells to score")
    parser.add_argument("--memory-chunk", type=int, default=65_536)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(args.bank, args.dim, generator=generator)
    queries = torch.randn(args.queries, args.dim, generator=generator)
    bank_gib = bank.numel() * bank.element_size() / 2**30
    before = _peak_rss_gib()
    start = time.perf_counter()
    distances = nearest_distance(queries, bank, memory_chunk=args.memory_chunk)
    seconds = time.perf_counter() - start
    peak = _peak_rss_gib()  # before the brute-force check below, which needs memory of its own
    # Brute force on the first 64 queries against the whole bank, one query at a time (exact reference).
    sample = torch.stack([torch.cdist(q[None], bank).min() for q in queries[:64]])
    error = (distances[:64] - sample).abs().max().item()
    print(f"bank {args.bank:,} × {args.dim} float32 = {bank_gib:.2f} GiB; {args.queries:,} queries")
    print(f"peak RSS while scoring {peak:.2f} GiB (after building the bank {before:.2f} GiB); limit 4 GiB")
    print(f"{seconds:.1f} s, {args.queries / seconds:,.0f} queries/s, {threads()} thread(s)")
    print(f"max |chunked − brute force| over 64 queries: {error:.2e}")


def threads() -> int:
    return torch.get_num_threads()


if __name__ == "__main__":
    main()
