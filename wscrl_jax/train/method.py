"""What a method is, to the loop, the compiled step and the runner: the `Method` interface.

A *member* is one model of a sweep. Hooks come in two kinds:

* **traced, per member**: `init`, `loss_weights`, `loss`, `record`, `learning_rate`,
  `is_active`, `member_epoch_end`. They see one member's arrays (no member axis) and run inside
  `jit` and `vmap` (or `lax.map`); they must be pure.
* **host**: `validate_config`, `make_data`, `training_data`, `make_optimizer`,
  `phase_for_epoch`, `end_epoch`, `write_outputs`, `evaluate`, `summary`. They run in Python
  between compiled calls; the ones that take a `TrainState` see the whole stack ([members, ...]
  on every leaf).

How the runner drives a method (shuffling, members side by side or in turn, one step per
dispatch, warm restarts, which split trains) is not behaviour of the model: it is one record,
`RunOptions`, in `Method.options`.

Required hooks are abstract; every other hook has a default that does nothing, and the loop
calls every hook unconditionally. A subclass whose public name is a near-miss of a hook
(`end_epochs`, `learning_rates`) is refused when it is defined, so a misspelt override cannot
silently fall back to the default. `docs/adding_a_method.md` walks through a minimal method.
"""

import abc
import dataclasses
import difflib
from typing import Any, Callable, Dict, FrozenSet, Hashable, List, Tuple, Union

import jax
import numpy as np
import optax

Array = jax.Array
Data = Dict[str, Dict[str, Array]]  # {split: {name: [N, ...]}}


class MemberNotEvaluated(Exception):
    """A member whose final metrics cannot be computed (e.g. its codes are not finite): its row
    is written with NaN headline metrics and a status saying why. Any other exception raised
    during evaluation is a bug and propagates."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How the runner drives a method.

    train_inputs: the arrays of `make_data`'s "train" split the step reads (default
    `training_data`). shuffle: False reads every epoch in stored order. member_loop: "vmap"
    (members side by side) or "sequential" (members one after the other, `lax.map`).
    convolutional: the model convolves; on CPU the step then runs one compiled step per dispatch
    (XLA's CPU backend runs convolutions inside loops slowly) and the run stays in one process.
    evaluates_padding: `evaluate` vectorises over members, so the inert padding members are
    evaluated alongside (their rows are dropped). optimizer_reset_epochs: epochs at whose start
    the optimizer state is re-initialised (warm restarts). traced_epoch_end: the epoch end is
    `Method.member_epoch_end` (traced), so that one compiled call may run many whole epochs
    (`training.steps_per_call` steps' worth), each with its epoch end, without the host in
    between; epoch_end_splits: the splits of `make_data` it reads. rolled_hash(phase): on a
    CPU, whether that phase's compiled step lowers JAX's threefry hash as a loop
    (`train/prng.py`: the same random bits, other fusions around them), for steps that compile
    and run faster that way (default: never; unrolled, one kernel per draw).
    """

    train_inputs: Tuple[str, ...] = ()
    shuffle: bool = True
    member_loop: str = "vmap"
    convolutional: bool = False
    evaluates_padding: bool = False
    optimizer_reset_epochs: FrozenSet[int] = frozenset()
    traced_epoch_end: bool = False
    epoch_end_splits: Tuple[str, ...] = ()
    rolled_hash: Callable[[Hashable], bool] = lambda phase: False


Row = Dict[str, float]


class Method(abc.ABC):
    """A family of models trained by the shared loop; found by `config.method` (`methods.py`)."""

    #: Set in `__init__` where they differ from the defaults.
    options: RunOptions = RunOptions()

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

    # ================================================================== host
    @classmethod
    @abc.abstractmethod
    def validate_config(cls, config) -> None:
        """Checks the method's config sections before any work; raises
        `config_checks.ConfigError` with one line that names the key and what to do."""

    @abc.abstractmethod
    def make_data(self, data_seed: int) -> Data:
        """One member's dataset, {split: {name: [N, ...]}}, from its data seed."""

    def training_data(self, data: Data, data_seeds: List[int], start_step: int,
                      saved: Any) -> Any:
        """What the step trains on: {name: [members, N, ...]} on the devices (default: the
        `options.train_inputs` of `data["train"]`, the run's stacked splits), or a host pipeline
        of every member's batches for data read from disk (`loop.train`: `num_samples`,
        `take(num)`, `state()` for the checkpoint, `close()`). data_seeds: per member, padding
        included; start_step: the step training starts at; saved: the `state()` the checkpoint
        of that step holds (None for a fresh run)."""
        del data_seeds, start_step, saved
        return {k: data["train"][k] for k in self.options.train_inputs}

    @abc.abstractmethod
    def make_optimizer(self) -> optax.GradientTransformation:
        """The update direction without the learning rate (e.g. torch-style Adam); pure, so
        every call gives the same transformation. An `optax.GradientTransformationExtraArgs` is
        also given `reached=` (the parameter arrays the phase's loss reaches, `train/reach.py`)."""

    @abc.abstractmethod
    def phase_for_epoch(self, epoch: int) -> Hashable:
        """Static phase of an epoch (hashable; one compilation of the step per phase; its
        `str` is the log line when the phase changes)."""

    def end_epoch(self, state, epoch: int, stats: Dict[str, Array], data: Data):
        """After each epoch's last call: validation, plateau schedulers, early stopping.
        stats: the call's per-member sums ([members]); data: the run's stacked splits.
        Returns the new state. After a call of whole epochs (`RunOptions.traced_epoch_end`),
        whose epoch ends `member_epoch_end` already ran, stats also has "epochs" (the epochs
        run) and `epoch` is the last: only host work (log lines) is left. Default: state
        unchanged."""
        del epoch, stats, data
        return state

    def write_outputs(self, workdir: str, state, data: Data,
                      members: List[Tuple[int, int]]) -> None:
        """Writes files after training (e.g. stage-1 codes for stage 2). Default: none."""
        del workdir, state, data, members

    @abc.abstractmethod
    def evaluate(self, params, model_state, data: Data, keys: Array, initial_params, *,
                 real: int, progress: bool, compile_only: bool = False
                 ) -> List[Union[Row, MemberNotEvaluated]]:
        """Final metrics of every member of a stack ([members, ...] arrays; keys [members, 2];
        initial_params: the members' untrained parameters, for metrics of the untrained
        model), one dict a member (headline metrics first) or, for a member that cannot be
        evaluated, a `MemberNotEvaluated`. The first `real` members are the sweep's, the
        others inert padding (`options.evaluates_padding`) whose results the caller drops.
        progress: show a bar over the evaluation's stages. `evaluate_each` evaluates member by
        member. compile_only: compile the programs the evaluation runs on arguments like these
        without running them, and return [] (params, model_state, initial_params are then
        `jax.ShapeDtypeStruct`s: training owns the arrays); the runner asks for it in a
        background thread while training runs, or from its end beside the evaluation
        (`eval.compile_ahead`), so compile the programs the evaluation runs last first. A
        method with nothing to compile ahead returns [] at once."""

    def summary(self, rows: List[Row]) -> str:
        """One line on the rows' headline metrics, for the log (one row: that member's; several:
        their medians). Default: every metric of the first row, the median over rows."""
        keys = list(rows[0])[:2] if rows else []
        return ", ".join(f"{k} = {float(np.nanmedian([r.get(k, np.nan) for r in rows])):.4f}"
                         for k in keys)

    # ================================================================== traced, per member
    @abc.abstractmethod
    def init(self, key: Array) -> Tuple[Any, Any]:
        """(parameters, model state) of one freshly initialised member. The model state is what
        is carried through training and checkpoints without being trained (e.g. a fixed
        topological order, plateau-scheduler counters, BatchNorm statistics; {} for none)."""

    @abc.abstractmethod
    def loss_weights(self, fractional_epoch: Array) -> Any:
        """Scheduled loss weights of a step (a pytree of scalars) at `step / steps_per_epoch`."""

    @abc.abstractmethod
    def loss(self, params, model_state, batch: Dict[str, Array], weights: Array, key: Array,
             loss_weights: Any, phase: Hashable) -> Tuple[Array, Dict[str, Array]]:
        """(scalar loss, aux) of one batch. batch: {name: [B, ...]}; weights [B]: 0 for the
        padding rows of an epoch's last batch. aux: scalar metrics, plus whatever the forward
        pass produced that `record` keeps (e.g. BatchNorm statistics, the batch's codes)."""

    def record(self, model_state, batch: Dict[str, Array], aux: Dict[str, Any], rows: Array,
               weights: Array, applied: Array) -> Any:
        """The new model state after a training batch: batch {name: [B, ...]} at dataset rows
        [B] (padding weight 0), the loss's aux, and whether this step's update is applied
        (finite and active). E.g. BatchNorm running statistics. Default: unchanged."""
        del batch, aux, rows, weights, applied
        return model_state

    @abc.abstractmethod
    def learning_rate(self, model_state: Any, step: Array, epoch: Array) -> Array:
        """Learning rate (scalar) of the update at training step `step` of epoch `epoch`."""

    def member_epoch_end(self, params, model_state, last_loss: Array, step: Array,
                         data: Data) -> Any:
        """One member's epoch end inside a compiled call (`RunOptions.traced_epoch_end`): the
        new model state after the epoch that ends at `step`, given the loss of its last step
        and the member's `epoch_end_splits` of `make_data` ({split: {name: [N, ...]}}).
        Default: unchanged."""
        del params, last_loss, step, data
        return model_state

    def is_active(self, model_state) -> Array:
        """False for a member that no longer updates, e.g. early-stopped; training ends when no
        member is active. Default: always active."""
        del model_state
        return np.bool_(True)


def evaluate_each(evaluate_member: Callable[..., Row], params, model_state, data: Data,
                  keys: Array, initial_params, *, real: int, progress: bool
                  ) -> List[Union[Row, MemberNotEvaluated]]:
    """`Method.evaluate` member by member: evaluate_member(params, model_state, data, key,
    initial_params) of each of the first `real` members (one member's arrays each); a member
    that raises `MemberNotEvaluated` gets that exception as its result."""
    from tqdm.auto import tqdm
    results = []
    pick = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)  # noqa: E731
    for index in tqdm(range(real), disable=not progress, unit="member", leave=False,
                      desc="evaluating"):
        try:
            results.append(evaluate_member(*(pick(t, index) for t in (
                params, model_state, data, keys, initial_params))))
        except MemberNotEvaluated as e:
            results.append(e)
    return results
