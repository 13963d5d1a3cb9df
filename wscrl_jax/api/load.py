"""`load(workdir)`: a trained run's newest intact checkpoint as a model object, read-only.

The checkpoint is restored with the integrity checks of a resume
(`train.checkpoint.restore_latest_intact`: checksums of every leaf and of the meta; a damaged
step is skipped, logged and reported with a warning, and left where it is); the model is built
from the config stored in that checkpoint. Nothing in the workdir is written or moved.
"""

import logging
import os
import warnings
from typing import Optional

import jax
import ml_collections

from wscrl_jax.api.errors import APIError
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.data.encoded import Stage1OutputMissing
from wscrl_jax.methods import get_method
from wscrl_jax.train import checkpoint
from wscrl_jax.train.state import init_states

log = logging.getLogger("wscrl_jax")


class LoadWarning(UserWarning):
    """A newer checkpoint was damaged and an older one was loaded."""


class Restored:
    """What `restore` read: method, variables {"params", "model_state"} [M, ...] (the selected
    members), members [(seed, data seed)], their indices in the run, step, config."""

    def __init__(self, workdir, method, variables, members, indices, step, config, single):
        self.workdir, self.method, self.variables = workdir, method, variables
        self.members, self.indices, self.step = members, indices, step
        self.config, self.single = config, single


def restore(workdir: str, step: Optional[int] = None, member: Optional[int] = None) -> Restored:
    """The checkpoint at `step` (default: the newest intact one) of every member, or of member
    `member` alone; APIError (one line) for a missing workdir or checkpoint, a member out of
    range, a config the package can no longer build, or no intact checkpoint."""
    if not isinstance(workdir, (str, os.PathLike)) or not os.path.isdir(workdir):
        raise APIError(f"workdir {workdir} does not exist")
    workdir = os.fspath(workdir)
    if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
        raise APIError(f"no checkpoint in {checkpoint.checkpoint_dir(workdir)}; train first "
                       "(wscrl_jax.train or wscrl-train)")
    latest = checkpoint.latest_step(workdir)
    built = {}

    def template(meta):
        members = [tuple(m) for m in meta["members"]]
        if member is not None and not (isinstance(member, int) and 0 <= member < len(members)):
            raise APIError(f"member={member!r} is out of range: the checkpoint has "
                           f"{len(members)} member(s), 0 to {len(members) - 1}")
        config = ml_collections.ConfigDict(meta["config"])
        try:
            method = get_method(config)
        except (ConfigError, Stage1OutputMissing) as e:
            raise APIError(f"cannot build the model of {workdir}: {e}") from None
        seeds = [s for s, _ in members]
        abstract = jax.eval_shape(lambda: init_states(method, seeds))
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        built.update(method=method, config=config, members=members)
        return jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)

    try:
        found, state, _ = checkpoint.restore_latest_intact(workdir, template, step, required=True,
                                                           quarantine=False)
    except checkpoint.CheckpointError as e:
        raise APIError(str(e)) from None
    if step is None and latest is not None and found != latest:
        message = (f"the newest checkpoint(s) of {workdir} after step {found} failed the "
                   f"integrity check (see the log); loaded step {found} instead")
        log.warning(message)
        warnings.warn(message, LoadWarning, stacklevel=3)
    members = built["members"]
    indices = list(range(len(members))) if member is None else [member]
    variables = {"params": state.params, "model_state": state.model_state}
    if member is not None:
        variables = jax.tree_util.tree_map(lambda a: a[member:member + 1], variables)
    return Restored(workdir, built["method"], variables, [members[i] for i in indices],
                    indices, found, built["config"], single=member is not None
                    or len(members) == 1)


def load(workdir: str, step: Optional[int] = None, member: Optional[int] = None,
         chunk: Optional[int] = None, compose: bool = True):
    """A trained run as a model object: `LCMModel` (ILCM, dVAE, beta-VAE, ELCM; scaling and
    CausalCircuit) or `MDCRLModel`; a two-stage run's stage 2 composes its stage 1 (the
    workdir named by its `data.stage1_workdir`, that run's `data.stage1_member`), so it takes
    the raw observations or images. `member`: one member of a sweep (default: all, with a
    leading member axis on every result; a run of one member has none). `chunk`: rows per
    compiled call (default 4096; 256 for image models). `compose=False`: a two-stage run's
    stage 2 alone, on its own inputs (the stage-1 codes)."""
    restored = restore(workdir, step, member)
    family = restored.config.method
    stage1 = None
    if compose and restored.config.data.get("dataset") in ("causalcircuit_codes", "encoded"):
        d = restored.config.data
        try:
            stage1 = load(d.stage1_workdir, member=int(d.stage1_member), chunk=chunk)
        except APIError as e:
            raise APIError(f"stage 1 of {workdir} (data.stage1_workdir): {e}") from None
    if family in ("lcm", "lcm_images"):
        from wscrl_jax.api.lcm_model import LCMModel
        return LCMModel(restored, stage1=stage1, chunk=chunk)
    from wscrl_jax.api.mdcrl_model import MDCRLModel
    return MDCRLModel(restored, stage1=stage1, chunk=chunk)
