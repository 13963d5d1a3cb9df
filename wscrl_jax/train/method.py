"""The interface between the training loop and a method (ILCM, MD-CRL, ...).

The loop, the compiled step, the experiment and the benchmark know a method only through
`Method`. Required hooks are abstract; every optional hook has a no-op default, and the loop
calls every hook unconditionally (no discovery of optional attributes). A subclass whose
public name is a near-miss of a hook (`end_epochs`, `learning_rates`) is refused when it is
defined, so a misspelt override cannot silently fall back to the default.

Conventions. A *member* is one model of a sweep; hooks marked "per member" see one member's
arrays (no member axis) and run inside `jit`/`vmap`; hooks marked "host" run in Python
between compiled calls and see the whole stacked `TrainState` ([members, ...] on every leaf).
"""

import abc
import difflib
import functools
from typing import Any, Dict, FrozenSet, Hashable, List, Optional, Tuple, Union

import jax
import optax

Array = jax.Array
Data = Dict[str, Dict[str, Array]]  # {split: {name: [N, ...]}}


class Method(abc.ABC):
    """A family of models trained by the shared loop; looked up by `config.method`."""

    #: Split of the data the training step reads, and which of its arrays ([N, ...] each).
    train_split: str = "train"
    train_inputs: Tuple[str, ...] = ()
    #: Metrics that lead each row of `test_metrics.csv` and are logged at the end of a run.
    headline_metrics: Tuple[str, ...] = ()
    #: False: every epoch reads the training split in its stored order.
    shuffle: bool = True
    #: "vmap" (members side by side) or "sequential" (members one after the other, `lax.map`).
    member_loop: str = "vmap"
    #: True where `evaluate_members` vectorises over members: the runner then evaluates the
    #: inert padding members too (every device stays busy) and drops their rows.
    evaluates_padding: bool = False
    #: True where the model convolves: XLA's CPU backend runs a convolution inside a loop
    #: (`while`, `scan`) about 25x slower than at the top level of a program (docs/
    #: benchmarks.md), so on CPU the training step then runs one compiled step per dispatch
    #: (asynchronous, no host sync) instead of a loop of steps in one call.
    convolutional: bool = False

    def __init__(self, config):
        self.config = config

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        hooks = [name for name in vars(Method) if not name.startswith("_")]
        for name in vars(cls):
            if name.startswith("_") or name in hooks:
                continue
            near = difflib.get_close_matches(name, hooks, n=1, cutoff=0.85)
            if near:
                raise TypeError(f"{cls.__name__}.{name} looks like a misspelt Method hook "
                                f"{near[0]!r}; rename it")

    # ------------------------------------------------------------------ config
    @classmethod
    @abc.abstractmethod
    def validate_config(cls, config) -> None:
        """Checks the method's config sections before any work; raises
        `config_checks.ConfigError` with one line that names the key and what to do."""

    @classmethod
    def preferred_cpu_devices(cls, config) -> Optional[int]:
        """CPU runs without `--cpu_devices`: the host devices this config trains fastest on
        (read before JAX starts; `cli.start_processes`). None (default): one a core."""
        del config
        return None

    # ------------------------------------------------------------------ data and init
    @abc.abstractmethod
    def make_data(self, data_seed: int) -> Data:
        """One member's dataset, {split: {name: [N, ...]}}, from its data seed (host)."""

    def make_stream(self, data_seeds: List[int], start_step: int, saved: Any) -> Any:
        """A host pipeline of every member's training batches (`loop.train`: `num_samples`,
        `take(num)`, plus `state()` for the checkpoint and `close()`), for data read from disk;
        None trains on `make_data`'s on-device training split (host). data_seeds: per member,
        padding included; start_step: the step training starts at; saved: the `state()` the
        checkpoint of that step holds (None for a fresh run). Default: None."""
        del data_seeds, start_step, saved
        return None

    @abc.abstractmethod
    def init(self, key: Array) -> Any:
        """Freshly initialised parameters of one member (per member)."""

    def init_model_state(self) -> Any:
        """Untrained state of one member carried through training and checkpoints, e.g. a
        fixed topological order or plateau-scheduler counters (per member). Default: {}."""
        return {}

    # ------------------------------------------------------------------ optimiser
    @abc.abstractmethod
    def make_optimizer(self) -> optax.GradientTransformation:
        """The update direction without the learning rate (e.g. torch-style Adam). Built once
        per method (`optimizer`); state init, warm restarts and every update use that object.
        An `optax.GradientTransformationExtraArgs` is also given `reached=` (the parameter
        arrays the phase's loss reaches, `train/reach.py`), as `train/optim.torch_adam` uses."""

    @functools.cached_property
    def optimizer(self) -> optax.GradientTransformation:
        """`make_optimizer()`, built once."""
        return self.make_optimizer()

    @abc.abstractmethod
    def learning_rate(self, model_state: Any, step: Array, epoch: Array) -> Array:
        """Learning rate (scalar) of the update at training step `step` of epoch `epoch`
        (per member, traced): per-epoch schedules read the epoch, per-step ones the step."""

    def optimizer_reset_epochs(self) -> FrozenSet[int]:
        """Epochs at whose start the optimizer state is re-initialised (warm restarts).
        Default: none."""
        return frozenset()

    # ------------------------------------------------------------------ phases and loss
    @abc.abstractmethod
    def phase_for_epoch(self, epoch: int) -> Hashable:
        """Static phase of an epoch (hashable; one compilation of the step per phase)."""

    def describe_phase(self, phase: Hashable) -> str:
        """One line for the log when the phase changes. Default: `str(phase)`."""
        return str(phase)

    @abc.abstractmethod
    def loss_weights(self, fractional_epoch: Array) -> Any:
        """Scheduled loss weights of a step (a pytree of traced scalars) at
        `step / steps_per_epoch` (per member)."""

    @abc.abstractmethod
    def loss(self, params, model_state, batch: Dict[str, Array], weights: Array, key: Array,
             loss_weights: Any, phase: Hashable) -> Tuple[Array, Dict[str, Array]]:
        """(scalar loss, aux) of one batch (per member). batch: {name: [B, ...]}; weights [B]:
        0 for the padding rows of an epoch's last batch. aux: a dict of scalar metrics, plus
        whatever the training forward pass produced that `record_loss` keeps (e.g. BatchNorm
        statistics, the batch's codes)."""

    # ------------------------------------------------------------------ inside the step
    def record_step(self, params, model_state, batch: Dict[str, Array], rows: Array,
                    weights: Array) -> Any:
        """Sees every training batch (dataset rows [B], padding weight 0) before its update
        and returns the new model state (per member). Default: model state unchanged."""
        del params, batch, rows, weights
        return model_state

    def record_loss(self, model_state, aux: Dict[str, Any], rows: Array, weights: Array,
                    applied: Array) -> Any:
        """Sees the loss's aux of every training batch (dataset rows [B], padding weight 0;
        `applied`: whether this step's update is applied, i.e. finite and active) after
        `record_step` and returns the new model state (per member), e.g. BatchNorm running
        statistics. Default: model state unchanged."""
        del aux, rows, weights, applied
        return model_state

    def is_active(self, model_state) -> Array:
        """False for a member that no longer updates, e.g. early-stopped (per member).
        Default: always active."""
        del model_state
        return True

    # ------------------------------------------------------------------ between calls (host)
    def end_epoch(self, state, epoch: int, stats: Dict[str, Array], data: Data):
        """After each epoch's last call: validation, plateau schedulers, early stopping.
        stats: the call's per-member sums ([members]); data: the run's stacked splits.
        Returns the new state. Default: state unchanged."""
        del epoch, stats, data
        return state

    def finished(self, state) -> bool:
        """True when no member needs more training (checked before each call). Default: False."""
        del state
        return False

    # ------------------------------------------------------------------ outputs and evaluation
    def start_metrics(self, initial_params, data: Data) -> Dict[str, float]:
        """Metrics of one member's untrained model, added to its evaluation row (host).
        Default: none."""
        del initial_params, data
        return {}

    def write_outputs(self, workdir: str, state, data: Data,
                      members: List[Tuple[int, int]]) -> None:
        """Writes files after training (e.g. stage-1 codes for stage 2) (host). Default: none."""
        del workdir, state, data, members

    @abc.abstractmethod
    def evaluate(self, params, model_state, data: Data, key: Array) -> Dict[str, float]:
        """Final metrics of one member, headline metrics first (host, one member's arrays)."""

    def evaluate_members(self, params, model_state, data: Data, keys: Array, bar,
                         real: Optional[int] = None) -> List[Union[Dict[str, float], str]]:
        """Final metrics of every member of a (sub)stack (host, [members, ...] arrays; keys
        [members, 2]); per member the metric dict or, where it could not be evaluated, one line
        saying why. `bar` is a tqdm bar to advance over the evaluation's stages. real: how many
        leading members are the sweep's (None: all); the others are inert padding
        (`evaluates_padding`) whose results the caller drops, so a stage that gains nothing
        from evaluating them alongside may skip them.
        Default: `evaluate` member by member (a ValueError marks a member not evaluated)."""
        results = []
        count = keys.shape[0] if real is None else real
        bar.reset(total=count)
        for index in range(count):
            bar.set_description(f"evaluating member {index}")
            pick = functools.partial(jax.tree_util.tree_map, lambda a: a[index])
            try:
                results.append(self.evaluate(pick(params), pick(model_state), pick(data),
                                             keys[index]))
            except ValueError as e:  # e.g. non-finite codes of a member that never trained
                results.append(str(e))
            bar.update()
        return results
