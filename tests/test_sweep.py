"""Sweeps: members are isolated (a NaN member is frozen, the others are untouched) and the
member-sharded path over several devices gives the numbers of the single-device path."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_scaling_config
from wscrl_jax.run import members as run_members
from wscrl_jax.train.sweep import sweep_members
from wscrl_jax.train.loop import NonFiniteError, train


def one_phase_sweep_config():
    """Three members, one main-phase epoch of 20 steps: one compilation."""
    c = tiny_scaling_config("ilcm")
    c.sweep.seeds = "1,2,3"
    c.training.epochs = 1
    c.training.pretrain_epochs = 0
    c.training.model_interventions_after_epoch = 0
    c.training.steps_per_call = 20
    return c


def poison(state, index):
    """Sets every parameter of one member to NaN."""
    return state.replace(params=jax.tree_util.tree_map(
        lambda p: p.at[index].set(jnp.nan), state.params))


@pytest.fixture(scope="module")
def clean_and_poisoned():
    config = one_phase_sweep_config()
    method, data, state = run_members.build(config, sweep_members(config))
    train_data = {k: data["train"][k] for k in method.options.train_inputs}
    clean = train(method, state, train_data, config, progress=False)
    _, _, state = run_members.build(config, sweep_members(config))
    poisoned = train(method, poison(state, 1), train_data, config, progress=False)
    return clean, poisoned, config


def test_nan_member_is_frozen_and_reported(clean_and_poisoned):
    clean, poisoned, config = clean_and_poisoned
    counts = np.asarray(poisoned.nan_count)
    assert counts[1] >= config.training.nan_limit and counts[0] == counts[2] == 0
    assert np.all(np.asarray(clean.nan_count) == 0)


def test_other_members_are_unaffected_by_a_nan_member(clean_and_poisoned):
    clean, poisoned, _ = clean_and_poisoned
    for a, b in zip(jax.tree_util.tree_leaves(clean.params),
                    jax.tree_util.tree_leaves(poisoned.params)):
        np.testing.assert_array_equal(np.asarray(a)[[0, 2]], np.asarray(b)[[0, 2]])


def test_sequential_members_train_as_each_seed_alone(clean_and_poisoned):
    """`training.member_loop="sequential"` on one device (`training.cpu_devices=1`): a sweep
    member gets the very numbers of its seed trained alone (a one-member run is unbatched
    whatever its member_loop), and numbers close to the vmapped member's (other rounding). The
    state is put on one device here, whatever the process has."""
    vmapped, _, _ = clean_and_poisoned
    params = []
    for seeds, loop in (("1,2,3", "sequential"), ("2", "vmap")):
        config = one_phase_sweep_config()
        config.training.member_loop = loop
        config.sweep.seeds = seeds
        method, data, state = run_members.build(config, sweep_members(config))
        assert method.options.member_loop == loop
        one = jax.devices()[0]
        train_data = jax.device_put({k: data["train"][k] for k in method.options.train_inputs},
                                    one)
        params.append(train(method, jax.device_put(state, one), train_data, config,
                            progress=False).params)
    swept, alone = params
    for a, b, v in zip(*(jax.tree_util.tree_leaves(p) for p in (swept, alone, vmapped.params))):
        np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[0])
        np.testing.assert_allclose(np.asarray(a)[:3], np.asarray(v)[:3], rtol=0, atol=1e-4)


def test_all_members_nan_stops_the_run():
    config = one_phase_sweep_config()
    config.sweep.seeds = "1"
    method, data, state = run_members.build(config, sweep_members(config))
    train_data = {k: data["train"][k] for k in method.options.train_inputs}
    with pytest.raises(NonFiniteError, match="non-finite"):
        train(method, poison(state, 0), train_data, config, progress=False)


SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    import jax, numpy as np
    from conftest import tiny_scaling_config
    from wscrl_jax.run import members as run_members
    from wscrl_jax.train.loop import train
    from wscrl_jax.train.sweep import sweep_members
    from test_sweep import one_phase_sweep_config
    config = one_phase_sweep_config()
    config.sweep.seeds = "1,2,3,4"
    members = sweep_members(config)
    method, data, state = run_members.build(config, members)
    devices = {{d for leaf in jax.tree_util.tree_leaves(state) for d in leaf.devices()}}
    train_data = {{k: data["train"][k] for k in method.options.train_inputs}}
    sharded = train(method, state, train_data, config, progress=False)
    one = jax.devices()[0]
    single = train(method, jax.device_put(run_members.build(config, members)[2], one),
                   jax.device_put(train_data, one), config, progress=False)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree_util.tree_leaves(sharded.params), jax.tree_util.tree_leaves(single.params)))
    print(json.dumps({{"devices": len(devices), "max_abs_diff": diff}}))
""")


def test_sharded_members_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    script = SHARDED_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    assert result["max_abs_diff"] < 1e-5, result


PADDED_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    import jax, numpy as np
    from wscrl_jax import experiment
    from wscrl_jax.run import evaluation
    from wscrl_jax.run import members as run_members
    from wscrl_jax.train.sweep import sweep_members
    from wscrl_jax.tracking import read_csv
    from wscrl_jax.train import checkpoint
    from test_sweep import one_phase_sweep_config
    config = one_phase_sweep_config()  # 3 members on 2 devices: padded to 4
    workdir = {workdir!r}
    members = sweep_members(config)
    _, _, padded = run_members.build(config, members)
    experiment.run(config, workdir, progress=False)
    config.training.epochs = 2  # resume (a safe key): restored members padded again
    rows = experiment.run(config, workdir, progress=False)
    meta = checkpoint.restore_meta(workdir)
    again = evaluation.evaluate_workdir(workdir, progress=False)
    train_rows = read_csv(workdir + "/metrics/train_metrics.csv")
    train_members = sorted({{r["member"] for r in train_rows}})
    template = run_members.checkpoint_template(padded, len(members))
    _, saved, _ = checkpoint.restore_latest_intact(workdir, template)
    print(json.dumps({{
        "devices": len({{d for leaf in jax.tree_util.tree_leaves(padded) for d in leaf.devices()}}),
        "padded": int(padded.step.shape[0]), "rows": len(rows), "meta_members": meta["members"],
        "saved_members": int(saved.step.shape[0]), "train_members": train_members,
        "saved_step": int(saved.step[0]), "meta_step": meta["step"],
        "evaluate_diff": max(abs(a[k] - b[k]) for a, b in zip(rows, again) for k in a
                             if isinstance(a[k], float) and np.isfinite(a[k]))}}))
""")


@pytest.mark.slow
def test_members_are_padded_to_divide_over_the_devices(tmp_path):
    """3 members on 2 host devices train as 4 (an inert copy of the last); the copy is in no
    checkpoint, metrics file or evaluation; a resumed run pads the restored members again, and
    evaluating the checkpoint gives the same rows."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    script = PADDED_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"),
                                  workdir=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["padded"] == 4
    assert result["rows"] == 3 and result["saved_members"] == 3
    assert result["meta_members"] == [[1, 42], [2, 42], [3, 42]]
    assert result["train_members"] == ["0", "1", "2"]
    assert result["saved_step"] == result["meta_step"] == 40  # resumed to the second epoch
    assert result["evaluate_diff"] < 1e-5, result


def test_padded_member_count():
    from wscrl_jax.train.sharding import pad_members, padded_member_count, unpad_members
    assert [padded_member_count(n, 2) for n in (1, 2, 3, 9, 10)] == [1, 2, 4, 10, 10]
    assert [padded_member_count(n, 8) for n in (3, 8, 9)] == [3, 8, 16]
    tree = {"a": jnp.arange(6.0).reshape(3, 2)}
    padded = pad_members(tree, 5)
    np.testing.assert_array_equal(padded["a"][3:], [[4.0, 5.0], [4.0, 5.0]])
    np.testing.assert_array_equal(unpad_members(padded, 3)["a"], tree["a"])
