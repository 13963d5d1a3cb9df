"""The `Method` interface: required hooks are enforced, optional hooks are no-ops, and a
misspelt hook is refused when the class is defined."""

import pytest

from wscrl_jax.lcm.method import LCMMethod
from wscrl_jax.mdcrl.method import MDCRLMethod
from wscrl_jax.train.method import Method


class Minimal(Method):
    train_inputs = ("x",)

    @classmethod
    def validate_config(cls, config):
        pass

    def make_data(self, data_seed):
        return {}

    def init(self, key):
        return {}

    def make_optimizer(self):
        import optax
        return optax.identity()

    def learning_rate(self, model_state, step, epoch):
        return 1.0

    def phase_for_epoch(self, epoch):
        return "train"

    def loss_weights(self, fractional_epoch):
        return {}

    def loss(self, params, model_state, batch, weights, key, loss_weights, phase):
        return 0.0, {}

    def evaluate(self, params, model_state, data, key):
        return {}


def test_optional_hooks_default_to_no_ops():
    m = Minimal(config=None)
    assert m.init_model_state() == {}
    assert m.record_step(None, {"a": 1}, None, None, None) == {"a": 1}
    assert m.record_loss({"a": 1}, {"loss": 0.0}, None, None, True) == {"a": 1}
    assert m.is_active({}) is True
    assert m.end_epoch("state", 0, {}, {}) == "state"
    assert m.finished("state") is False
    assert m.optimizer_reset_epochs() == frozenset()
    assert m.start_metrics(None, {}) == {}
    assert m.write_outputs("w", None, {}, []) is None
    assert m.optimizer is m.optimizer  # built once


def test_missing_required_hook_cannot_be_instantiated():
    body = {k: v for k, v in vars(Minimal).items() if not k.startswith("__") and k != "loss"}
    no_loss = type("NoLoss", (Method,), body)
    with pytest.raises(TypeError, match="loss"):
        no_loss(config=None)


@pytest.mark.parametrize("name", ["end_epochs", "learning_rates", "is_actve", "record_steps"])
def test_misspelt_hook_is_refused(name):
    with pytest.raises(TypeError, match="misspelt Method hook"):
        type("Typo", (Minimal,), {name: lambda self: None})


def test_both_methods_implement_every_required_hook():
    hooks = {n for n in vars(Method) if not n.startswith("_")}
    for cls in (LCMMethod, MDCRLMethod):
        assert issubclass(cls, Method)
        assert not getattr(cls, "__abstractmethods__")
        overridden = {n for n in vars(cls) if n in hooks}
        assert {"loss", "learning_rate", "make_optimizer", "evaluate"} <= overridden
