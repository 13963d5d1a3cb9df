"""Config validation: every failure a user can cause in a config is one line naming the key,
the bad value and what is allowed (`wscrl_jax.methods.validate_config`, before any work), and
every shipped variant of every config file still validates."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT, load_config
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.data.encoded import encoded_meta_path, write_encoded_meta
from wscrl_jax.methods import validate_config
from wscrl_jax.train.sweep import grid_points, sweep_members

NAN, INF = math.nan, math.inf

STAGE1_META = {"latent_dim": 4, "num_domains": 4, "z_dim": 4, "z_dim_invariant": 2, "x_dim": 16,
               "members": [[1, 1]], "splits": {"train": 2000, "valid": 400, "test": 400},
               "train_codes": "online"}


@pytest.fixture(scope="module")
def stage1_workdir(tmp_path_factory):
    """A stage-1 workdir as far as validation reads it: encoded/meta.json (2000 training rows,
    one member, latent 4)."""
    workdir = str(tmp_path_factory.mktemp("stage1"))
    write_encoded_meta(workdir, STAGE1_META)
    return workdir


def set_key(config, key, value):
    """config[key] = value for a dotted key, past ml_collections' type checks (a YAML-built or
    hand-edited config can hold any type)."""
    node = config
    *path, leaf = key.split(".")
    for p in path:
        node = node[p]
    with node.ignore_type():
        node[leaf] = value


def make_config(spec, stage1_workdir, overrides):
    """configs/<name>.py:<variant> with `overrides` ({key: value}) set in order."""
    name, _, variant = spec.partition(":")
    config = load_config(name, variant)
    if config.data.dataset == "encoded":
        config.data.stage1_workdir = stage1_workdir
    for key, value in overrides.items():
        set_key(config, key, value)
    return config


def _refused_in_one_line(config, key, value):
    """The message of validating `config` with `key` set to `value`; asserts it is one line
    naming the key and the value."""
    set_key(config, key, value)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    text = str(info.value)
    assert f"{key}={value!r}" in text and "\n" not in text, text
    return text


def test_every_shipped_variant_validates(stage1_workdir):
    """Every variant validates as shipped, and the same variant with one bad value is refused
    in one line naming the key: validation really runs on each variant's path."""
    variants = [f"scaling:{method}{fast}" for method in ("ilcm", "dvae", "betavae", "elcm")
                for fast in ("", ",fast")]
    variants += [f"md_mixing:{stage}{penalty}{options}"
                 for stage in ("linear", "poly_stage1", "poly_stage2")
                 for penalty in ("", ",minmax", ",mmd", ",minmax_mmd", ",none")
                 for options in ("", ",dynamic", ",fast", ",dynamic,fast")]
    for spec in variants:
        config = make_config(spec, stage1_workdir, {})
        assert validate_config(config) is None, spec
        text = _refused_in_one_line(config, "training.epochs", 0)
        assert "must be an integer >= 1" in text, (spec, text)


def test_sweeps_that_stay_valid():
    """Blanks around seeds and a two-key grid validate and mean what they say; one step
    further (a repeated seed) is one line naming the key."""
    c = load_config("scaling", "ilcm,fast")
    c.sweep.seeds, c.sweep.data_seeds = " 4901, 4902,4903 ", "302,303"
    validate_config(c)
    assert sweep_members(c) == [(s, d) for s in (4901, 4902, 4903) for d in (302, 303)]
    _refused_in_one_line(c, "sweep.seeds", "4901,4902,4901")
    c = load_config("md_mixing", "linear,fast")
    c.sweep.seeds = "1235,4256,49685,7383,9271"
    c.sweep.grid = "data.z_dim=4,8;model.penalty_weight=0.0,1.0"
    validate_config(c)
    points = [point for point, _ in grid_points(c)]
    assert points == [{"data.z_dim": z, "model.penalty_weight": w}
                      for z in (4, 8) for w in (0.0, 1.0)]
    assert all(sub.data.z_dim == point["data.z_dim"] for point, sub in grid_points(c))
    assert sweep_members(c) == [(s, s) for s in (1235, 4256, 49685, 7383, 9271)]
    _refused_in_one_line(c, "sweep.seeds", "1235,1235")


def test_a_grid_over_dim_z_moves_the_dimensions_tied_to_it():
    """The scaling config ties data.dim_x to data.dim_z; every grid point keeps the tie (a copy
    through to_dict() lost it, and each point failed validation)."""
    c = load_config("scaling", "ilcm,fast")
    c.sweep.grid = "data.dim_z=2,5,8"
    validate_config(c)
    subs = [sub for _, sub in grid_points(c)]
    assert [(s.data.dim_z, s.data.dim_x) for s in subs] == [(2, 2), (5, 5), (8, 8)]
    for sub in subs:
        validate_config(sub)
    assert c.data.dim_z == c.data.dim_x != 5  # the config itself is left as it was


SCALING, ILCM = "scaling:ilcm,fast", "scaling:ilcm"  # ILCM: the full schedules (cosine, ramps)
BETAVAE = "scaling:betavae,fast"
LINEAR, STAGE1, STAGE2 = "md_mixing:linear,fast", "md_mixing:poly_stage1,fast", \
    "md_mixing:poly_stage2,fast"
STEP = {"training.lr_schedule.type": "step", "training.lr_schedule.step_every_epochs": 10}
MANUAL = {"data.generation_strategy": "manual", "data.domain_lengths": (0.25,) * 4,
          "data.domain_dist_ranges": ((-5.0, -1.0), (-1.0, 1.0), (1.0, 5.0), (-2.0, 2.0))}
POLYNOMIAL = {"scheduler.type": "polynomial"}

CASES = [
    # ---- the rows: seeds, duplicates, batch sizes, z_dim, learning rates
    (SCALING, "sweep.seeds", "1,x", "sweep.seeds='1,x' must be comma-separated integer seeds"),
    (SCALING, "sweep.seeds", "1;2", "sweep.seeds='1;2' must be comma-separated integer seeds"),
    (SCALING, "sweep.seeds", "1 2", "sweep.seeds='1 2' must be comma-separated integer seeds"),
    (SCALING, "sweep.seeds", "1.5", "sweep.seeds='1.5' must be comma-separated"),
    (SCALING, "sweep.seeds", "1,2,1", "sweep.seeds='1,2,1' lists the seed(s) 1 more than once"),
    (SCALING, "sweep.data_seeds", "7,7", "sweep.data_seeds='7,7' lists the data seed(s) 7"),
    (SCALING, "sweep.data_seeds", "7,x", "sweep.data_seeds='7,x' must be comma-separated"),
    (LINEAR, "sweep.seeds", "3,5,3", "sweep.seeds='3,5,3' lists the seed(s) 3 more than once"),
    (LINEAR, "data.z_dim", 0, "data.z_dim=0 must be an integer >= 1"),
    (LINEAR, "training.batchsize", 2001,
     "training.batchsize=2001 is larger than the training split (2000 rows: "
     "data.num_samples.train - data.num_samples.valid)"),
    (SCALING, "training.batchsize", 100001,
     "training.batchsize=100001 is larger than the training split (100000 rows: "
     "data.samples.train)"),
    (STAGE2, "training.batchsize", 2001, "training.batchsize=2001 is larger than the training "
     "split (2000 rows: the stage-1 training split"),
    (SCALING, "training.lr_schedule.initial", NAN,
     "training.lr_schedule.initial=nan must be a finite number > 0"),
    (SCALING, "training.lr_schedule.initial", -3e-4,
     "training.lr_schedule.initial=-0.0003 must be a finite number > 0"),
    (ILCM, "training.lr_schedule.minimal", NAN, "training.lr_schedule.minimal=nan must be a "
     "finite number >= 0"),
    (SCALING, "training.lr_schedule.minimal", -1.0, "training.lr_schedule.minimal=-1.0"),
    # ---- seeds and the sweep grid
    (SCALING, "seed", -1, "seed=-1 must be an integer seed in [0, 2**32)"),
    (SCALING, "sweep.seeds", "4294967296", "sweep.seeds='4294967296' must be"),
    (SCALING, "data.nature.seed", -1, "data.nature.seed=-1 must be an integer seed"),
    (LINEAR, "sweep.data_seeds", "", "no data.nature.seed to fall back on"),
    (LINEAR, "sweep.grid", "data.z_dim=4,4", "sweep.grid lists data.z_dim=4 more than once"),
    (LINEAR, "sweep.grid", "data.z_dim", "the part 'data.z_dim' must read KEY=VALUE"),
    (LINEAR, "sweep.grid", "data.z_dim=4;data.z_dim=8", "sets data.z_dim more than once"),
    (LINEAR, "sweep.grid", "model.warmup=False",
     "sweep.grid sets model.warmup='False', but model.warmup holds bool values"),
    (LINEAR, "sweep.grid", "data.zdim=4", "sweep.grid names an unknown key 'data.zdim'"),
    (LINEAR, "sweep.grid", "data.z_dim=0,4", "data.z_dim=0 must be an integer >= 1"),
    # ---- shared sections
    (SCALING, "training.clip_grad_norm", INF, "training.clip_grad_norm=inf must be a finite"),
    (LINEAR, "training.epochs", 0, "training.epochs=0 must be an integer >= 1"),
    (SCALING, "checkpoint.every_n_steps", -1, "checkpoint.every_n_steps=-1 must be an integer"),
    (SCALING, "checkpoint.max_to_keep", 0, "checkpoint.max_to_keep=0 must be an integer >= 1"),
    (LINEAR, "checkpoint.async_save", "no", "checkpoint.async_save='no' must be True or False"),
    # ---- scaling: data and model
    (SCALING, "data.nature.manifold_thickness", -1e-9, "data.nature.manifold_thickness=-1e-09"),
    (SCALING, "data.nature.observation_noise", NAN, "data.nature.observation_noise=nan must be"),
    (SCALING, "model.fix_entropy_weighting", "False", "model.fix_entropy_weighting='False' must "
     "be True or False"),
    (SCALING, "model.scm.homoskedastic", 1, "model.scm.homoskedastic=1 must be True or False"),
    (SCALING, "model.scm.min_std", 0.0, "model.scm.min_std=0.0 must be a finite number > 0"),
    (SCALING, "model.scm.manifold_thickness", NAN, "model.scm.manifold_thickness=nan"),
    (SCALING, "model.encoder.std", NAN, "model.encoder.std=nan must be a finite number > 0"),
    (SCALING, "model.decoder.std", 1e-4, "model.decoder.std=0.0001 must exceed "
     "model.decoder.min_std=0.001"),
    (SCALING, "model.encoder.min_std", -1.0, "model.encoder.min_std=-1.0 must be a finite"),
    (SCALING, "model.decoder.fix_std", "yes", "model.decoder.fix_std='yes' must be True or"),
    (SCALING, "model.intervention_encoder.hidden_units", 0,
     "model.intervention_encoder.hidden_units=0", {"model.intervention_encoder.type": "mlp"}),
    # ---- scaling: training phases and schedules
    (SCALING, "training.full_likelihood", "False", "training.full_likelihood='False' must be"),
    (SCALING, "training.member_loop", "auto", "training.member_loop='auto' is not"),
    (SCALING, "training.pretrain_epochs", -1, "training.pretrain_epochs=-1 must be an integer "
     ">= 0 or unset (no pretraining)"),
    (SCALING, "training.pretrain_beta", NAN, "training.pretrain_beta=nan must be a finite"),
    (SCALING, "training.model_interventions_after_epoch", 1.5,
     "training.model_interventions_after_epoch=1.5 must be an integer"),
    (SCALING, "training.deterministic_intervention_encoder_after_epoch", -2,
     "training.deterministic_intervention_encoder_after_epoch=-2"),
    (SCALING, "training.increase_intervention_beta", -1.0,
     "training.increase_intervention_beta=-1.0 must be a finite number >= 0"),
    (ILCM, "training.lr_schedule.restart_every_epochs", 0,
     "training.lr_schedule.restart_every_epochs=0 must be an integer >= 1"),
    (ILCM, "training.lr_schedule.increase_period_by_factor", 2.0,
     "training.lr_schedule.increase_period_by_factor=2.0 is not supported with "
     "cosine_restarts_reset"),
    (ILCM, "training.lr_schedule.increase_period_by_factor", 0.5,
     "training.lr_schedule.increase_period_by_factor=0.5 must be a finite number >= 1",
     {"training.lr_schedule.type": "cosine_restarts"}),
    (SCALING, "training.lr_schedule.step_every_epochs", 0,
     "training.lr_schedule.step_every_epochs=0 must be an integer >= 1", STEP),
    (SCALING, "training.lr_schedule.step_gamma", NAN, "training.lr_schedule.step_gamma=nan",
     STEP),
    (SCALING, "training.beta_schedule.final", NAN, "training.beta_schedule.final=nan must be"),
    (ILCM, "training.z_regularization_schedule.initial", -0.01,
     "training.z_regularization_schedule.initial=-0.01 must be a finite number >= 0"),
    (ILCM, "training.intervention_encoder_offset_schedule.final", 0.0,
     "training.intervention_encoder_offset_schedule.final=0.0 must be a finite number > 0"),
    (ILCM, "training.beta_schedule.decay_epochs", -10,
     "training.beta_schedule.decay_epochs=-10 must be a finite number >= 0"),
    (SCALING, "training.intervention_entropy_regularization_schedule.final", INF,
     "training.intervention_entropy_regularization_schedule.final=inf must be a finite number"),
    (SCALING, "training.manifold_thickness_schedule.initial", -0.01,
     "training.manifold_thickness_schedule.initial=-0.01"),
    (BETAVAE, "eval.beta", -1.0, "eval.beta=-1.0 must be a finite number >= 0"),
    (SCALING, "eval.full_likelihood", "no", "eval.full_likelihood='no' must be True or False"),
    (SCALING, "eval.dci_random_state", -1, "eval.dci_random_state=-1 must be an integer"),
    # ---- MD-CRL mixing data
    (LINEAR, "data.z_dim", -3, "data.z_dim=-3 must be an integer >= 1"),
    (LINEAR, "data.z_dim_invariant", 5, "data.z_dim_invariant=5 must be <= data.z_dim=4"),
    (LINEAR, "data.x_dim", 0, "data.x_dim=0 must be an integer >= 1 or unset (2 * z_dim)"),
    (LINEAR, "data.num_domains", 0, "data.num_domains=0 must be an integer >= 1"),
    (LINEAR, "data.num_samples.valid", 2400, "data.num_samples.train=2400 minus "
     "data.num_samples.valid=2400 leaves 0 training rows"),
    (LINEAR, "data.num_samples.valid", 1, "data.num_samples.valid=1 must be an integer >= 2"),
    (LINEAR, "data.num_samples.test", 2, "data.num_samples.test=2 is fewer rows than "
     "data.num_domains=4"),
    (LINEAR, "data.corr_prob", NAN, "data.corr_prob=nan must be a finite number in [0, 1]"),
    (LINEAR, "data.linear", "False", "data.linear='False' must be True or False"),
    (LINEAR, "data.correlated_z", "yes", "data.correlated_z='yes' must be True or False"),
    (LINEAR, "data.test_shares_distribution", 0, "data.test_shares_distribution=0 must be"),
    (LINEAR, "data.domain_dist_ranges", (5.0, -5.0), "data.domain_dist_ranges=(5.0, -5.0) must "
     "be a pair (low, high)"),
    (LINEAR, "data.invariant_dist_params", (0.0, INF), "data.invariant_dist_params=(0.0, inf)"),
    (LINEAR, "data.domain_lengths", (0.5, 0.5), "data.domain_lengths=(0.5, 0.5) must be 4 "
     "fractions", MANUAL),
    (LINEAR, "data.domain_dist_ranges", ((0.0, 1.0),) * 3, "data.domain_dist_ranges=((0.0, "
     "1.0), (0.0, 1.0), (0.0, 1.0)) must be 4 pairs", MANUAL),
    (LINEAR, "data.domain_dist_ranges", ((0.0, 1.0),) * 3 + ((1.0, NAN),),
     "data.domain_dist_ranges[3]=(1.0, nan) must be a pair", MANUAL),
    (LINEAR, "data.generation_strategy", "random", "data.generation_strategy='random' is not "
     "supported"),
    (LINEAR, "data.non_linearity", "cubic", "data.non_linearity='cubic' is not supported",
     {"data.linear": False}),
    (LINEAR, "data.mlp_activation", "gelu", "data.mlp_activation='gelu' is not supported"),
    (STAGE1, "data.polynomial_degree", 0, "data.polynomial_degree=0 must be an integer >= 1"),
    (STAGE1, "data.x_dim", 1, "model.autoencoder='poly' needs an input dimension >= 2"),
    # ---- MD-CRL model and penalties
    (LINEAR, "model.penalty_criterion.minmax", "yes", "model.penalty_criterion.minmax='yes' "
     "must be a flag"),
    (LINEAR, "model.penalty_criterion.mmd", NAN, "model.penalty_criterion.mmd=nan must be a "
     "flag"),
    (LINEAR, "model.penalty_weight", INF, "model.penalty_weight=inf must be a finite number"),
    (LINEAR, "model.penalty_weight", -1.0, "model.penalty_weight=-1.0 must be a finite number"),
    (LINEAR, "model.hinge_loss_weight", NAN, "model.hinge_loss_weight=nan must be a finite"),
    (LINEAR, "data.z_dim_invariant", 0, "the penalties ['minmax'] need an invariant block of "
     "at least one dimension; data.z_dim_invariant + model.mismatch_dims gives 0"),
    (LINEAR, "model.warmup", "True", "model.warmup='True' must be True or False"),
    (LINEAR, "model.wait_steps", -1, "model.wait_steps=-1 must be an integer >= 0"),
    (LINEAR, "model.linear_steps", 0, "model.linear_steps=0 must be an integer >= 1"),
    (LINEAR, "model.top_k", 0, "model.top_k=0 must be an integer >= 1"),
    (LINEAR, "model.skip_small_domains", "no", "model.skip_small_domains='no' must be True"),
    (LINEAR, "model.stddev_threshold", NAN, "model.stddev_threshold=nan must be a finite"),
    (LINEAR, "model.stddev_eps", 0.0, "model.stddev_eps=0.0 must be a finite number > 0"),
    (LINEAR, "model.mmd.kernel_multiplier", 0.0, "model.mmd.kernel_multiplier=0.0 must be a "
     "finite number > 0"),
    (LINEAR, "model.mmd.kernel_number", 0, "model.mmd.kernel_number=0 must be an integer >= 1"),
    (LINEAR, "model.mmd.fix_sigma", -1.0, "model.mmd.fix_sigma=-1.0 must be a finite number "
     ">= 0 or unset"),
    (LINEAR, "model.mmd.capacity", -1, "model.mmd.capacity=-1 must be an integer >= 0"),
    (LINEAR, "model.mismatch_dims", -1, "model.mismatch_dims=-1 must be an integer >= 0"),
    (LINEAR, "model.mlp_hidden", (64, 0), "model.mlp_hidden=(64, 0) must be a tuple"),
    (LINEAR, "model.mlp_negative_slope", NAN, "model.mlp_negative_slope=nan must be a finite"),
    (STAGE1, "model.save_encoded_data", "True", "model.save_encoded_data='True' must be True"),
    # ---- MD-CRL optimiser and scheduler
    (LINEAR, "optimizer.lr", NAN, "optimizer.lr=nan must be a finite number > 0"),
    (LINEAR, "optimizer.lr", 0.0, "optimizer.lr=0.0 must be a finite number > 0"),
    (LINEAR, "optimizer.b1", 1.0, "optimizer.b1=1.0 must be a finite number in [0, 1)"),
    (LINEAR, "optimizer.b2", -0.1, "optimizer.b2=-0.1 must be a finite number in [0, 1)"),
    (LINEAR, "optimizer.eps", 0.0, "optimizer.eps=0.0 must be a finite number > 0"),
    (LINEAR, "optimizer.weight_decay", -0.01, "optimizer.weight_decay=-0.01 must be a finite "
     "number >= 0"),
    (LINEAR, "scheduler.factor", 1.0, "scheduler.factor=1.0 must be a finite number in [0, 1)"),
    (LINEAR, "scheduler.patience", -1, "scheduler.patience=-1 must be an integer >= 0"),
    (LINEAR, "scheduler.cooldown", -1, "scheduler.cooldown=-1 must be an integer >= 0"),
    (LINEAR, "scheduler.threshold", NAN, "scheduler.threshold=nan must be a finite number"),
    (LINEAR, "scheduler.min_lr", -1e-4, "scheduler.min_lr=-0.0001 must be a finite number"),
    (LINEAR, "scheduler.eps", INF, "scheduler.eps=inf must be a finite number >= 0"),
    (LINEAR, "scheduler.lr_end", 1e-3, "scheduler.lr_end=0.001 must be a finite number in "
     "[0, 0.001)", POLYNOMIAL),
    (LINEAR, "scheduler.power", 0.0, "scheduler.power=0.0 must be a finite number > 0",
     POLYNOMIAL),
    (LINEAR, "scheduler.num_cycles", 0.0, "scheduler.num_cycles=0.0 must be a finite number",
     {"scheduler.type": "cosine_hard_restarts"}),
    (LINEAR, "scheduler.num_training_steps", 0, "scheduler.num_training_steps=0 must be an "
     "integer >= 1", {"scheduler.type": "linear"}),
    (LINEAR, "scheduler.num_warmup_steps", -1, "scheduler.num_warmup_steps=-1 must be an "
     "integer >= 0", {"scheduler.type": "linear"}),
    # ---- MD-CRL trainer, evaluation, stage 2
    (LINEAR, "training.min_epochs", -1, "training.min_epochs=-1 must be an integer >= 0"),
    (LINEAR, "training.shuffle", 1, "training.shuffle=1 must be True or False"),
    (LINEAR, "training.member_loop", "threads", "training.member_loop='threads' is not"),
    (LINEAR, "training.early_stopping.enabled", "true", "training.early_stopping.enabled='true' "
     "must be True or False"),
    (LINEAR, "training.early_stopping.patience", 0, "training.early_stopping.patience=0 must "
     "be an integer >= 1"),
    (LINEAR, "training.early_stopping.min_delta", -1e-4, "training.early_stopping.min_delta="
     "-0.0001 must be a finite number >= 0"),
    (LINEAR, "eval.domain_accuracy", "False", "eval.domain_accuracy='False' must be True or"),
    (LINEAR, "eval.stage2_reference_names", None, "eval.stage2_reference_names=None must be"),
    (STAGE2, "model.z_dim_invariant_fraction", 0.0, "model.z_dim_invariant_fraction=0.0 must be "
     "a finite number in (0, 1]"),
    (STAGE2, "model.z_dim_invariant_fraction", 1.5, "model.z_dim_invariant_fraction=1.5"),
    (STAGE2, "model.z_dim_invariant_fraction", 0.1, "the penalties ['minmax'] need an invariant "
     "block of at least one dimension; int(stage-1 latent_dim 4 * "
     "model.z_dim_invariant_fraction) gives 0"),
    (STAGE2, "data.stage1_member", 1, "data.stage1_member=1 is out of range: stage 1 has 1 "
     "member(s)"),
    (STAGE2, "data.normalize_per_split", "yes", "data.normalize_per_split='yes' must be True"),
    # ---- graphs (learned graphs, the fixed topological order, the graph evaluations)
    (SCALING, "training.fix_topological_order_epoch", 0, "training.fix_topological_order_epoch=0 "
     "must be >= 1"),
    (BETAVAE, "training.fix_topological_order_epoch", 1, "training.fix_topological_order_epoch "
     "needs solution functions (ILCM or dVAE"),
    (SCALING, "training.fix_topological_order_epoch", 1, "training.fix_topological_order_epoch "
     "cannot fix the order of a learned graph", {"model.scm.adjacency_matrix": "dds"}),
    (SCALING, "model.scm.adjacency_matrix", "notears", "model.scm.adjacency_matrix='notears' is "
     "not supported; use one of"),
    (SCALING, "training.graph_sampling.mode", "gumbel", "training.graph_sampling.mode='gumbel' "
     "is not supported; use one of ('hard', 'soft', 'deterministic')"),
    (SCALING, "training.graph_sampling.final.temperature", 0.0,
     "training.graph_sampling.final.temperature=0.0 must be a finite number"),
    (SCALING, "eval.graph_sampling.samples", 2, "eval.graph_sampling.samples=2: the ILCM samples "
     "one graph per pair; use 1 (more: ELCM only)"),
    (SCALING, "training.graph_sampling.samples", 0, "training.graph_sampling.samples=0 must be an "
     "integer >= 1"),
    (SCALING, "training.graph_sampling.initial.unfreeze_epoch", -1,
     "training.graph_sampling.initial.unfreeze_epoch=-1 must be an integer >= 0"),
    (SCALING, "eval.enco_lambda", -0.1, "eval.enco_lambda=-0.1 must be a finite number >= 0"),
    (SCALING, "eval.graphs", "yes", "eval.graphs='yes' must be True or False"),
]


@pytest.mark.parametrize(
    "spec, key, value, message, base",
    [pytest.param(*case[:4], case[4] if len(case) > 4 else {},
                  id=f"{case[0]}|{case[1]}={case[2]!r}") for case in CASES])
def test_bad_value_is_one_line_naming_key_and_value(spec, key, value, message, base,
                                                    stage1_workdir):
    config = make_config(spec, stage1_workdir, base)
    validate_config(config)  # valid before the bad value
    set_key(config, key, value)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_native_dci_without_the_library_is_refused_before_training(monkeypatch):
    """Asking for the compiled DCI trees where they were not built fails at validation (one
    line), not after training; `auto` falls back to the JAX trees."""
    from wscrl_jax.eval import dci, gbrt_native
    config = make_config(SCALING, None, {})
    monkeypatch.setattr(gbrt_native, "available", lambda: False)
    set_key(config, "eval.dci_backend", "auto")
    validate_config(config)
    assert dci.resolve_dci_backend("auto") == "jax"
    set_key(config, "eval.dci_backend", "native")
    with pytest.raises(ConfigError, match="eval.dci_backend='native' needs the compiled trees"):
        validate_config(config)


def test_unreadable_stage1_metadata_is_one_line(tmp_path):
    write_encoded_meta(str(tmp_path), STAGE1_META)
    with open(encoded_meta_path(str(tmp_path)), "w") as f:
        f.write(json.dumps(STAGE1_META)[:40])  # cut short, as by a full disk
    config = make_config(STAGE2, str(tmp_path), {})
    with pytest.raises(ConfigError, match="holds unreadable stage-1 metadata"):
        validate_config(config)


@pytest.mark.parametrize("config, override, message", [
    ("scaling.py:ilcm,fast", "--config.sweep.seeds=1,x", "sweep.seeds='1,x'"),
    ("scaling.py:ilcm,fast", "--config.training.lr_schedule.initial=nan",
     "training.lr_schedule.initial=nan"),
    ("md_mixing.py:linear,fast", "--config.data.z_dim=0", "data.z_dim=0"),
    ("md_mixing.py:linear,fast", "--config.training.batchsize=4096",
     "training.batchsize=4096 is larger than the training split"),
])
def test_train_script_exits_2_with_one_line(config, override, message, tmp_path):
    workdir = tmp_path / "w"
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         f"--config={os.path.join(ROOT, 'configs', config)}", f"--workdir={workdir}", override],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config:"), out.stderr
    assert message in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert not workdir.exists()  # nothing written
