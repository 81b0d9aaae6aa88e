import pytest
import torch

from metaadv_edu import covers


def test_render_shapes_range_device(generator, device):
    x = covers.render_covers([0, 5, 123456], generator=generator, device=device)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert x.device.type == device.type
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_other_sizes(generator):
    assert covers.render_covers([1, 2], generator=generator, size=16).shape == (2, 3, 16, 16)


def test_deterministic_by_seed():
    a = covers.render_covers(torch.arange(20), generator=torch.Generator().manual_seed(3))
    b = covers.render_covers(torch.arange(20), generator=torch.Generator().manual_seed(3))
    c = covers.render_covers(torch.arange(20), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_covers_of_a_genre_vary_but_resemble_each_other(generator):
    x, y = covers.sample_covers([0, 1], 50, generator=generator)
    a, b = x[y == 0], x[y == 1]
    within = torch.cdist(a.flatten(1), a.flatten(1)).mean()
    between = torch.cdist(a.flatten(1), b.flatten(1)).mean()
    assert float(within) > 1.0  # not copies of one image
    assert float(between) > float(within)


def test_recipe_is_a_function_of_the_id():
    r1, r2 = covers.genre_recipe(42), covers.genre_recipe(42)
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert int(r1["motif"]) in range(len(covers.MOTIFS))


def test_pools_are_disjoint(generator):
    train = covers.sample_genres(500, "meta-train", generator=generator)
    test = covers.sample_genres(500, "meta-test", generator=generator)
    assert len(set(train.tolist())) == 500
    assert not set(train.tolist()) & set(test.tolist())
    assert int(test.min()) >= covers.POOLS["meta-test"][0]


def test_cover_tasks(generator, device):
    tasks = covers.cover_tasks(3, n_way=5, k_shot=2, k_query=4, pool="meta-test", generator=generator, device=device)
    assert tasks.x_support.shape == (3, 10, 3, 32, 32)
    assert tasks.x_query.shape == (3, 20, 3, 32, 32)
    assert tasks.y_support.shape == (3, 10) and tasks.y_support.device.type == device.type
    assert sorted(tasks.y_query[0].tolist()) == sorted(list(range(5)) * 4)


def test_library_dataset_is_fixed():
    x1, y1 = covers.library_dataset("test", n_per_genre=5)
    x2, _y2 = covers.library_dataset("test", n_per_genre=5)
    assert torch.equal(x1, x2) and x1.shape == (50, 3, 32, 32)
    assert y1.tolist() == [i for i in range(10) for _ in range(5)]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: covers.render_covers([-1]), "genre ids"),
        (lambda: covers.render_covers([]), "genres"),
        (lambda: covers.render_covers([1], size=3), "size"),
        (lambda: covers.sample_genres(3, "validation"), "pool"),
        (lambda: covers.cover_tasks(1, n_way=1, k_shot=1, k_query=1), "n_way"),
        (lambda: covers.library_dataset("dev"), "split"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
