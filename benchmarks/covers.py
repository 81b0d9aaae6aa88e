"""Throughput of the procedural book covers, and the cover classifier's accuracy on ten genres.

python benchmarks/covers.py
"""

import time

import torch

from metaadv_edu import covers, pick_device
from metaadv_edu.chapters import start_here


def rate(n_genres: int) -> float:
    """Covers per second (32×32 RGB), best of three batches of 20,000."""
    g = torch.Generator().manual_seed(0)
    ids = covers.sample_genres(n_genres, "meta-train", generator=g)
    genres = ids[torch.randint(n_genres, (20_000,), generator=g)]
    covers.render_covers(genres[:100], generator=g)  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        covers.render_covers(genres, generator=g)
        best = min(best, time.perf_counter() - start)
    return 20_000 / best


def rows() -> list[tuple[str, str]]:
    return [
        ("procedural book covers (32×32 RGB), 10 / 10,000 genres", f"{rate(10):,.0f} / {rate(10_000):,.0f} covers/s")
    ]


def main() -> None:
    for n_genres in (10, 10_000):
        print(f"covers/s ({n_genres:>6} distinct genres, 20,000 covers): {rate(n_genres):,.0f}")
    device = pick_device()
    start = time.perf_counter()
    _, record = start_here.library_cnn(device)
    print(
        f"cover classifier on 10 genres: test accuracy {record['test_accuracy']:.1%} "
        f"(loaded or trained in {time.perf_counter() - start:.1f} s on {device})"
    )


if __name__ == "__main__":
    main()
