"""One run from a config: data, members, training, evaluation, metric files.

A run trains every member of the sweep (model seeds x data seeds) as one stacked state;
without sweep fields it is a sweep of one (config.seed, config.data.nature.seed).
"""

import itertools
import logging
import os
import time
from typing import List, Tuple

import jax
import numpy as np

from wscrl_jax.methods import get_method
from wscrl_jax.tracking import TrainMetricsWriter, write_csv_atomic
from wscrl_jax.train.loop import train
from wscrl_jax.train.state import init_member_state, member, stack_members

log = logging.getLogger("wscrl_jax")


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
    each defaulting to the single config.seed / config.data.nature.seed."""
    sweep = config.get("sweep", {})
    seeds = parse_seeds(sweep.get("seeds")) or [int(config.seed)]
    data_seeds = parse_seeds(sweep.get("data_seeds")) or [int(config.data.nature.seed)]
    return list(itertools.product(seeds, data_seeds))


def make_member_data(method, members):
    """{split: {name: [members, N, ...]}}, each member's data from its data seed."""
    per_seed = {s: method.make_data(s) for s in dict.fromkeys(d for _, d in members)}
    return stack_members([per_seed[d] for _, d in members])


def run(config, workdir: str, progress: bool = True):
    """Trains and evaluates; writes WORKDIR/metrics/test_metrics.csv. Returns the metric rows."""
    method = get_method(config)
    members = sweep_members(config)
    log.info("Members (model seed, data seed): %s on %s", members, jax.devices()[0].platform)
    start = time.time()
    data = make_member_data(method, members)
    state = stack_members([init_member_state(method, s) for s, _ in members])
    train_data = {k: data[method.train_split][k] for k in method.train_inputs}
    log.info("Data and model ready in %.1f s", time.time() - start)

    writer = TrainMetricsWriter(os.path.join(workdir, "metrics", "train_metrics.csv"))
    try:
        start = time.time()
        state = train(method, state, train_data, config, progress=progress,
                      on_call_end=lambda s, info: writer.write(info["step"], info["epoch"],
                                                               info["loss"]))
        jax.block_until_ready(state)
        log.info("Training finished in %.1f s", time.time() - start)
    finally:
        writer.close()
    return evaluate_members(method, state, data, members, workdir)


def evaluate_members(method, state, data, members, workdir):
    rows = []
    for index, (seed, data_seed) in enumerate(members):
        start = time.time()
        member_data = member(data, index)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
        metrics = method.evaluate(member(state.params, index), member(state.model_state, index),
                                  member_data, key)
        log.info("Member %d (seed %d, data seed %d) evaluated in %.1f s", index, seed, data_seed,
                 time.time() - start)
        rows.append({"seed": seed, "data_seed": data_seed, **metrics})
    write_csv_atomic(os.path.join(workdir, "metrics", "test_metrics.csv"), rows)
    values = [r["causal_disentanglement"] for r in rows]
    if len(values) == 1:
        log.info("Final evaluation: causal disentanglement = %.2f", values[0])
    else:
        log.info("Final evaluation: causal disentanglement = %.2f (median of %d members; %s)",
                 float(np.median(values)), len(values), ", ".join(f"{v:.2f}" for v in values))
    return rows
