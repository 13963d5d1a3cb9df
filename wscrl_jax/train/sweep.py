"""Who the members of a run are: seed sweeps (one vmapped state) and grids (one run each).

A member is a (model seed, data seed) pair; `sweep.seeds` x `sweep.data_seeds` gives the
members of one run. `sweep.grid` lists values that change shapes (so they cannot share one
stacked state); each combination is a run of its own.
"""

import copy
import itertools
import numbers
import re
from typing import List, Tuple

import ml_collections

# data read from the user's own files (`data.path`): a member's data seed is the seed that
# splits one file into train / val / test (docs/own_data.md)
OWN_DATASETS = ("pairs", "domains")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_seeds(text) -> List[int]:
    """'4901,4902' (or an int, or a list/tuple of ints) -> [4901, 4902]; empty -> []. Raises
    ValueError for anything else ('1 2', '1.5', 'x')."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    if _is_int(text):
        return [int(text)]
    if isinstance(text, (list, tuple)) and all(_is_int(s) for s in text):
        return [int(s) for s in text]
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
            return [int(p) for p in parts]
    raise ValueError(f"not comma-separated integer seeds: {text!r}")


def sweep_members(config) -> List[Tuple[int, int]]:
    """(model seed, data seed) of every member: the product of sweep.seeds and sweep.data_seeds,
    each defaulting to the single config.seed / `default_data_seed`. sweep.data_seeds="same"
    pairs each model seed with itself as data seed (one global seed per run, as MD-CRL)."""
    sweep = config.get("sweep", {})
    seeds = parse_seeds(sweep.get("seeds")) or [int(config.seed)]
    if sweep.get("data_seeds") == "same":
        return [(s, s) for s in seeds]
    data_seeds = parse_seeds(sweep.get("data_seeds")) or [default_data_seed(config)]
    return list(itertools.product(seeds, data_seeds))


def default_data_seed(config) -> int:
    """The data seed without `sweep.data_seeds`: `data.split_seed` for own data (`data.dataset`
    in OWN_DATASETS), else `data.nature.seed`."""
    d = config.data
    return int(d.split_seed if d.get("dataset") in OWN_DATASETS else d.nature.seed)


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
    KeyError for a key the config lacks, TypeError for a value of the wrong type. The copy
    keeps the config's field references, so a grid over `data.dim_z` moves `data.dim_x`
    with it where the config ties them."""
    sub = copy.deepcopy(config)
    sub.sweep.grid = ""
    for (key, _), value in zip(grid, values):
        node = sub
        *path, leaf = key.split(".")
        for p in path + [leaf]:
            if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                raise KeyError(key)
            parent, node = node, node[p]
        try:
            parent[leaf] = value
        except (TypeError, ValueError):
            raise TypeError(f"sweep.grid sets {key}={value!r}, but {key} holds "
                            f"{type(node).__name__} values (grid values are read as int, "
                            "float or string)") from None
    return sub


def grid_points(config):
    """[({grid key: value}, config of that point), ...] for every combination of
    `sweep.grid`; [] without a grid. Raises KeyError for a grid key the config lacks,
    TypeError for a value of the wrong type."""
    grid = parse_grid(config.get("sweep", {}).get("grid"))
    if not grid:
        return []
    return [({key: value for (key, _), value in zip(grid, values)},
             grid_point_config(config, grid, values))
            for values in itertools.product(*(v for _, v in grid))]
