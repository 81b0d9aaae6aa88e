"""Procedural book covers: the library's cover classifier, without downloading a single image.

Every genre is a recipe drawn from its integer id: a palette (background, motif and title-band
colours), a layout (where the title band sits and how tall it is) and a motif (sun, stripes,
diagonals, checks, mountains, dots, a split or rings). Every cover of a genre varies: colours are
jittered, the band and the motif move, the "title" (a row of dashes) differs, and pixel noise is
added. The covers are **synthetic**; they stand in for a real library's scans.

Genres are unlimited: any id in a pool is a genre. The ``"meta-train"`` and ``"meta-test"`` pools
are disjoint, so few-shot tasks at test time use genres never seen in training. The first ten
meta-train ids are the library's ten named genres (:data:`GENRE_NAMES`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from metaadv_edu import _validate as v
from metaadv_edu.data import Tasks

__all__ = [
    "GENRE_NAMES",
    "MOTIFS",
    "POOLS",
    "cover_tasks",
    "genre_recipe",
    "library_dataset",
    "render_covers",
    "sample_covers",
    "sample_genres",
]

GENRE_NAMES = (
    "romance",
    "science fiction",
    "mystery",
    "fantasy",
    "horror",
    "history",
    "poetry",
    "travel",
    "cookery",
    "children",
)
MOTIFS = ("sun", "stripes", "diagonals", "checks", "mountain", "dots", "split", "rings")
POOLS = {"meta-train": (0, 1_000_000), "meta-test": (1_000_000, 2_000_000)}
_RECIPE_SALT = 0x5EED_C0DE

# per-cover variation (standard deviations / half-widths)
COLOUR_JITTER = 0.16
BAND_JITTER = 0.08
MOTIF_SHIFT = 0.25
FREQ_JITTER = 0.30
PIXEL_NOISE = 0.08


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=-1)
    return val[..., None] - val[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def genre_recipe(genre: int) -> dict[str, torch.Tensor]:
    """The recipe of one genre, drawn deterministically from its id."""
    genre = v.integer("genre", genre, low=0)
    return dict(_recipe(genre))


@lru_cache(maxsize=65536)
def _recipe(genre: int) -> tuple[tuple[str, torch.Tensor], ...]:
    g = torch.Generator().manual_seed((genre * 1_000_003 + _RECIPE_SALT) % 2**62)
    u = torch.rand(12, generator=g)
    hue = u[0]
    background = _hsv_to_rgb(hue, 0.3 + 0.6 * u[1], 0.25 + 0.7 * u[2])
    accent = _hsv_to_rgb((hue + 0.25 + 0.5 * u[3]) % 1, 0.4 + 0.6 * u[4], 0.3 + 0.7 * u[5])
    band = _hsv_to_rgb((hue + 0.5 * u[6]) % 1, 0.2 * u[7], 0.1 + 0.85 * (u[8] > 0.5).float())
    motif = torch.randint(len(MOTIFS), (1,), generator=g)[0]
    band_y = torch.tensor([0.16, 0.5, 0.84])[torch.randint(3, (1,), generator=g)[0]]
    return (
        ("background", background),
        ("accent", accent),
        ("band", band),
        ("motif", motif),
        ("band_y", band_y),
        ("band_h", 0.12 + 0.12 * u[9]),
        ("freq", 2.0 + 4.0 * u[10]),
        ("size", 0.18 + 0.2 * u[11]),
    )


def _recipes(genres: torch.Tensor) -> dict[str, torch.Tensor]:
    unique, inverse = torch.unique(genres, return_inverse=True)
    rows = [dict(_recipe(int(gid))) for gid in unique]
    return {key: torch.stack([r[key] for r in rows])[inverse] for key in rows[0]}


def _motif_masks(kind: torch.Tensor, cx, cy, freq, size, phase, xx, yy) -> torch.Tensor:
    """Soft masks in [0, 1] of shape (B, H, W) for each cover's motif."""
    b, n = kind.shape[0], xx.shape[-1]
    xx, yy = xx.expand(b, n, n), yy.expand(b, n, n)
    out = torch.empty(b, n, n)
    dx, dy = xx - cx, yy - cy
    dist = torch.sqrt(dx**2 + dy**2)
    two_pi = 2 * math.pi
    sharp = 40.0
    for k in range(len(MOTIFS)):
        sel = kind == k
        if not bool(sel.any()):
            continue
        f, s, p = freq[sel], size[sel], phase[sel]
        x, y, ddx, ddy, d = xx[sel], yy[sel], dx[sel], dy[sel], dist[sel]
        name = MOTIFS[k]
        if name == "sun":
            z = (s + 0.06 - d) * sharp
        elif name == "stripes":
            z = torch.sin(two_pi * f * y + p) * 4
        elif name == "diagonals":
            z = torch.sin(two_pi * f * (x + y) / 1.4 + p) * 4
        elif name == "checks":
            z = torch.sin(two_pi * f * x / 1.5 + p) * torch.sin(two_pi * f * y / 1.5 + 2 * p) * 6
        elif name == "mountain":
            z = (ddy - 1.6 * ddx.abs() + 0.1) * sharp
        elif name == "dots":
            z = (torch.sin(two_pi * f * x + p) * torch.sin(two_pi * f * y + p) - 0.55) * 8
        elif name == "split":
            z = (ddx + 0.3 * ddy) * sharp
        else:  # rings
            z = torch.sin(two_pi * f * d + p) * 4
        out[sel] = torch.sigmoid(z)
    return out


def render_covers(genres, *, generator: torch.Generator | None = None, size: int = 32, device=None) -> torch.Tensor:
    """Render one cover per entry of ``genres`` (ids); returns float32 (B, 3, size, size) in [0, 1].

    All random numbers come from ``generator`` on the CPU, so a seed gives the same covers on
    every device; the images are built on the CPU in chunks and then moved to ``device``.
    """
    genres = torch.as_tensor(genres, dtype=torch.int64).reshape(-1)
    if genres.numel() == 0:
        raise ValueError("genres must name at least one genre id")
    if bool((genres < 0).any()):
        raise ValueError("genre ids must be >= 0")
    size = v.integer("size", size, low=8, high=256)
    device = v.as_device(device)
    chunks = [_render_chunk(genres[i : i + 4096], generator, size) for i in range(0, len(genres), 4096)]
    return torch.cat(chunks).to(device)


def _render_chunk(genres: torch.Tensor, generator, size: int) -> torch.Tensor:
    b = genres.shape[0]
    r = _recipes(genres)
    u = torch.rand(b, 8, generator=generator)
    jitter = torch.randn(b, 3, 3, generator=generator) * COLOUR_JITTER
    background = (r["background"] + jitter[:, 0]).clamp(0, 1)
    accent = (r["accent"] + jitter[:, 1]).clamp(0, 1)
    band = (r["band"] + jitter[:, 2]).clamp(0, 1)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)
    cx = (0.5 + MOTIF_SHIFT * (2 * u[:, 0] - 1)).view(b, 1, 1)
    cy = (0.5 + MOTIF_SHIFT * (2 * u[:, 1] - 1)).view(b, 1, 1)
    freq = (r["freq"] * (1 + FREQ_JITTER * (2 * u[:, 2] - 1))).view(b, 1, 1)
    msize = (r["size"] * (1 + 0.3 * (2 * u[:, 3] - 1))).view(b, 1, 1)
    phase = (2 * math.pi * u[:, 4]).view(b, 1, 1)
    mask = _motif_masks(r["motif"], cx, cy, freq, msize, phase, xx, yy)[:, None]
    img = torch.lerp(background[:, :, None, None], accent[:, :, None, None], mask)
    # title band with a "title": a row of dashes of random lengths
    band_y = (r["band_y"] + BAND_JITTER * (2 * u[:, 5] - 1)).view(b, 1, 1, 1)
    half = (r["band_h"] / 2).view(b, 1, 1, 1)
    offset = (yy[:, None] - band_y).abs()  # (B, 1, H, 1)
    words = torch.rand(b, 6, generator=generator) > 0.3
    slot = (coords * 6).long().clamp(max=5)
    letters = (words[:, slot] & ((coords > 0.12) & (coords < 0.88))).view(b, 1, 1, size)
    text_row = (offset < half * 0.35) & letters
    ink = (1 - band.mean(1, keepdim=True)).round().expand(b, 3)
    img = torch.where(offset < half, band[:, :, None, None], img)
    img = torch.where(text_row, ink[:, :, None, None], img)
    img += PIXEL_NOISE * torch.randn(b, 1, size, size, generator=generator)
    return img.clamp_(0, 1)


def sample_genres(n: int, pool: str = "meta-train", *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` distinct genre ids drawn uniformly from a pool (``"meta-train"`` or ``"meta-test"``)."""
    n = v.integer("n", n)
    low, high = POOLS[v.choice("pool", pool, tuple(POOLS))]
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(torch.randint(low, high, (n - len(ids),), generator=generator).tolist())
    return torch.tensor(sorted(ids)[:n])[torch.randperm(n, generator=generator)]


def sample_covers(
    genres, n_per_genre: int, *, generator: torch.Generator | None = None, size: int = 32, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_genre`` covers of each genre; labels are positions in ``genres`` (0..len−1)."""
    genres = torch.as_tensor(genres, dtype=torch.int64).reshape(-1)
    n_per_genre = v.integer("n_per_genre", n_per_genre)
    labels = torch.arange(len(genres)).repeat_interleave(n_per_genre)
    x = render_covers(genres[labels], generator=generator, size=size, device=device)
    return x, labels.to(x.device)


def library_dataset(
    split: str = "train", *, n_per_genre: int | None = None, size: int = 32, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The library's ten named genres (:data:`GENRE_NAMES`): a fixed train or test set.

    Defaults: 300 covers per genre for ``"train"`` (seed 1), 100 for ``"test"`` (seed 2).
    """
    v.choice("split", split, ("train", "test"))
    n = n_per_genre if n_per_genre is not None else (300 if split == "train" else 100)
    g = torch.Generator().manual_seed(1 if split == "train" else 2)
    return sample_covers(torch.arange(len(GENRE_NAMES)), n, generator=g, size=size, device=device)


def cover_tasks(
    n_tasks: int,
    *,
    n_way: int,
    k_shot: int,
    k_query: int,
    pool: str = "meta-train",
    generator: torch.Generator | None = None,
    size: int = 32,
    device=None,
) -> Tasks:
    """N-way K-shot tasks over freshly sampled genres of a pool, rendered on the fly.

    Shapes: x (n_tasks, n_way·k, 3, size, size), y (n_tasks, n_way·k) with labels 0..n_way−1.
    """
    n_tasks = v.integer("n_tasks", n_tasks)
    n_way = v.integer("n_way", n_way, low=2)
    k_shot = v.integer("k_shot", k_shot)
    k_query = v.integer("k_query", k_query)
    genres = torch.stack([sample_genres(n_way, pool, generator=generator) for _ in range(n_tasks)])
    per_task = k_shot + k_query
    ids = genres.repeat_interleave(per_task, dim=1)  # (T, n_way*per_task)
    x = render_covers(ids.reshape(-1), generator=generator, size=size, device=device)
    x = x.view(n_tasks, n_way, per_task, 3, size, size)
    way = torch.arange(n_way, device=x.device).view(1, n_way, 1).expand(n_tasks, n_way, per_task)
    flat = lambda t, s: t.reshape(n_tasks, n_way * s, *t.shape[3:])  # noqa: E731
    xs, xq = x[:, :, :k_shot], x[:, :, k_shot:]
    ys, yq = way[:, :, :k_shot], way[:, :, k_shot:]
    return Tasks(flat(xs, k_shot), flat(ys, k_shot), flat(xq, k_query), flat(yq, k_query))
