"""The `Method` interface: a new method defined here (no file of the package touched) trains,
checkpoints and evaluates through the shared runner; misspelt hooks and non-methods are refused.

`Minimal` is the method `docs/adding_a_method.md` walks through: linear regression y = x w on
data drawn from the member's data seed.
"""

import os
import runpy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from wscrl_jax import experiment, methods
from wscrl_jax.config_checks import ConfigError, positive_int
from wscrl_jax.lcm.method import LCMMethod
from wscrl_jax.mdcrl.method import MDCRLMethod
from wscrl_jax.tracking import read_csv
from wscrl_jax.train.method import Method, MemberNotEvaluated, RunOptions, evaluate_each

COMMON = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "configs", "common.py"))
TRUE_W = np.array([2.0, -1.0], np.float32)


class Minimal(Method):
    """Linear regression: data {split: {"x" [N, 2], "y" [N]}}, params {"w" [2]}."""

    def __init__(self, config):
        super().__init__(config)
        self.options = RunOptions(train_inputs=("x", "y"))

    @classmethod
    def validate_config(cls, config):
        positive_int(config.data.samples, "data.samples")

    def make_data(self, data_seed):
        def split(index):
            x = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(data_seed), index),
                                  (self.config.data.samples, 2))
            return {"x": x, "y": x @ TRUE_W}
        return {"train": split(0), "test": split(1)}

    def init(self, key):
        return {"w": jax.random.normal(key, (2,))}, {}

    def make_optimizer(self):
        return optax.identity()

    def learning_rate(self, model_state, step, epoch):
        return self.config.optimizer.lr

    def phase_for_epoch(self, epoch):
        return "regression"

    def loss_weights(self, fractional_epoch):
        return {}

    def loss(self, params, model_state, batch, weights, key, loss_weights, phase):
        residual = batch["x"] @ params["w"] - batch["y"]
        loss = jnp.sum(weights * residual ** 2) / jnp.sum(weights)
        return loss, {"loss": loss}

    def evaluate(self, params, model_state, data, keys, initial_params, *, real, progress):
        return evaluate_each(self._evaluate_member, params, model_state, data, keys,
                             initial_params, real=real, progress=progress)

    def _evaluate_member(self, params, model_state, data, key, initial_params):
        if not np.all(np.isfinite(np.asarray(params["w"]))):
            raise MemberNotEvaluated("its weights are not finite")
        mse = lambda w: float(jnp.mean((data["test"]["x"] @ w - data["test"]["y"]) ** 2))  # noqa
        return {"test_mse": mse(params["w"]), "untrained_test_mse": mse(initial_params["w"])}


def minimal_config(seeds="1,2"):
    c = ml_collections.ConfigDict()
    c.method = "minimal_regression"
    c.seed = 0
    c.data = ml_collections.ConfigDict({"samples": 64})
    c.optimizer = ml_collections.ConfigDict({"lr": 0.25})
    c.training = COMMON["training_block"](batchsize=16, epochs=4, clip_grad_norm=10.0,
                                          nan_limit=3, steps_per_call=8)
    c.sweep = COMMON["sweep_block"](seeds=seeds, data_seeds="same")
    c.checkpoint = COMMON["checkpoint_block"](every_n_steps=0, max_to_keep=1)
    c.tracking = COMMON["tracking_block"]()
    return c


@pytest.fixture(scope="module")
def registered():
    methods.register("minimal_regression", Minimal)
    yield
    methods.METHODS.pop("minimal_regression")


def test_a_new_method_trains_and_evaluates_through_the_runner(registered, tmp_path):
    config = minimal_config()
    methods.validate_config(config)
    rows = experiment.run(config, str(tmp_path), progress=False)
    assert [(r["seed"], r["data_seed"], r["status"]) for r in rows] == [(1, 1, "ok"),
                                                                        (2, 2, "ok")]
    for row in rows:  # learnt: the loss fell by orders of magnitude from the untrained model
        assert row["test_mse"] < 1e-3 * row["untrained_test_mse"], row
    written = read_csv(os.path.join(str(tmp_path), "metrics", "test_metrics.csv"))
    assert [float(r["test_mse"]) for r in written] == pytest.approx(
        [r["test_mse"] for r in rows])
    assert os.listdir(os.path.join(str(tmp_path), "checkpoints")) == ["16"]  # 4 epochs x 4 steps
    # a rerun finds the finished workdir and returns its metrics without training again
    again = experiment.run(config, str(tmp_path), progress=False)
    assert [float(r["test_mse"]) for r in again] == pytest.approx([r["test_mse"] for r in rows])


def test_a_member_that_cannot_be_evaluated_gets_a_nan_row_and_its_reason(registered, tmp_path,
                                                                          monkeypatch, caplog):
    """`MemberNotEvaluated` from member 0: its row has NaN metrics and says why in its status;
    the others' rows and the summary line are still written."""
    calls = []
    evaluate_member = Minimal._evaluate_member

    def first_fails(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise MemberNotEvaluated("its codes are not finite")
        return evaluate_member(self, *args)

    monkeypatch.setattr(Minimal, "_evaluate_member", first_fails)
    with caplog.at_level("INFO", logger="wscrl_jax"):
        rows = experiment.run(minimal_config("1,2"), str(tmp_path), progress=False)
    assert [r["status"] for r in rows] == ["ok; not evaluated", "ok"]
    assert np.isnan(rows[0]["test_mse"]) and np.isnan(rows[0]["untrained_test_mse"])
    assert rows[1]["test_mse"] < 1e-3
    assert "Member 0 could not be evaluated: its codes are not finite" in caplog.text
    assert f"Final evaluation: test_mse = {rows[1]['test_mse']:.4f}" in caplog.text


def test_any_other_evaluation_error_propagates(registered, tmp_path, monkeypatch):
    """A bug in evaluation (here a ValueError) is not mistaken for a diverged member."""
    def broken(self, *args):
        raise ValueError("shapes (3,) and (2,) not aligned")
    monkeypatch.setattr(Minimal, "_evaluate_member", broken)
    with pytest.raises(ValueError, match="not aligned"):
        experiment.run(minimal_config("1"), str(tmp_path), progress=False)


@pytest.mark.parametrize("name", ["end_epochs", "learning_rates", "is_actve", "records"])
def test_misspelt_hook_is_refused(name):
    with pytest.raises(TypeError, match="misspelt Method hook"):
        type("Typo", (Minimal,), {name: lambda self: None})


def test_a_method_without_loss_cannot_be_instantiated():
    body = {k: v for k, v in vars(Minimal).items() if not k.startswith("__") and k != "loss"}
    with pytest.raises(TypeError, match="loss"):
        type("NoLoss", (Method,), body)(config=None)


def test_only_method_subclasses_register():
    with pytest.raises(ConfigError, match="not a wscrl_jax Method subclass"):
        methods.register("nope", dict)


def test_the_interface_stays_narrow():
    """Method's public names: the hooks of docs/adding_a_method.md, the optimizer built once
    and the options record; the shipped methods implement every abstract one."""
    public = sorted(n for n in vars(Method) if not n.startswith("_"))
    assert len(public) <= 17, public
    for cls in (LCMMethod, MDCRLMethod):
        assert not cls.__abstractmethods__


def test_lcm_summary_takes_the_noise_median_over_the_members_that_have_it():
    """The WS-CRL summary line: one member as the reference logs it; several as medians, with
    the noise disentanglement of the members that report one."""
    one = {"causal_disentanglement": 0.94}
    assert LCMMethod.summary(None, [one]) == "causal disentanglement = 0.94"
    rows = [{"causal_disentanglement": 0.9}, {"causal_disentanglement": 0.7,
                                              "noise_disentanglement": 0.6}]
    assert LCMMethod.summary(None, rows) == ("causal disentanglement = 0.80, noise "
                                             "disentanglement = 0.60 (medians of 2 members)")
