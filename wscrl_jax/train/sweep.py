"""Who the members of a run are: seed sweeps (one vmapped state) and grids (one run each).

A member is a (model seed, data seed) pair; `sweep.seeds` x `sweep.data_seeds` gives the
members of one run. `sweep.grid` lists values that change shapes (so they cannot share one
stacked state); each combination is a run of its own.
"""

import itertools
from typing import List, Tuple

import ml_collections


def parse_seeds(text) -> List[int]:
    """'4901,4902' (or a tuple/int) -> [4901, 4902]; empty -> []."""
    if text is None or text == "":
        return []
    if isinstance(text, int):
        return [text]
    if isinstance(text, (list, tuple)):
        return [int(s) for s in text]
    return [int(s) for s in str(text).replace(" ", "").split(",") if s]


def sweep_members(config) -> List[Tuple[int, int]]:
    """(model seed, data seed) of every member: the product of sweep.seeds and sweep.data_seeds,
    each defaulting to the single config.seed / config.data.nature.seed. sweep.data_seeds="same"
    pairs each model seed with itself as data seed (one global seed per run, as MD-CRL)."""
    sweep = config.get("sweep", {})
    seeds = parse_seeds(sweep.get("seeds")) or [int(config.seed)]
    if sweep.get("data_seeds") == "same":
        return [(s, s) for s in seeds]
    data_seeds = parse_seeds(sweep.get("data_seeds")) or [int(config.data.nature.seed)]
    return list(itertools.product(seeds, data_seeds))


def parse_grid(text) -> List[Tuple[str, list]]:
    """'data.z_dim=8,16;data.num_domains=2,4' -> [("data.z_dim", [8, 16]), ...] (ints where
    they parse, floats next, else strings); empty -> []."""
    out = []
    for part in str(text or "").replace(" ", "").split(";"):
        if not part:
            continue
        key, _, values = part.partition("=")
        parsed = []
        for v in values.split(","):
            for cast in (int, float, str):
                try:
                    parsed.append(cast(v))
                    break
                except ValueError:
                    continue
        out.append((key, parsed))
    return out


def grid_point_config(config, grid, values):
    """A copy of config with the grid keys set to `values` and the grid cleared; raises
    KeyError for a key the config lacks."""
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.sweep.grid = ""
    for (key, _), value in zip(grid, values):
        node = sub
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        if leaf not in node:
            raise KeyError(key)
        node[leaf] = value
    return sub


def grid_points(config):
    """[({grid key: value}, config of that point), ...] for every combination of
    `sweep.grid`; [] without a grid. Raises KeyError for a grid key the config lacks."""
    grid = parse_grid(config.get("sweep", {}).get("grid"))
    if not grid:
        return []
    return [({key: value for (key, _), value in zip(grid, values)},
             grid_point_config(config, grid, values))
            for values in itertools.product(*(v for _, v in grid))]
