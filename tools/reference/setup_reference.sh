#!/usr/bin/env bash
# Prepare the two PyTorch reference codebases for tools/reference/compare.py, outside this
# repository: a virtual environment with a CPU build of torch, a work tree of each reference,
# and the small shims they need to run offline on CPU (see tools/reference/README.md).
#
#   tools/reference/setup_reference.sh WSCRL_GIT MDCRL_GIT
#
# WSCRL_GIT / MDCRL_GIT: anything `git clone` accepts (a URL or a local git directory) for
#   https://github.com/Qualcomm-AI-research/weakly-supervised-causal-representation-learning
#   https://github.com/facebookresearch/MD-CRL
# Environment (defaults in brackets):
#   WSCRL_REF_HOME  [$HOME/wscrl-reference]  where the work trees and shims go
#   WSCRL_REF_VENV  [$WSCRL_REF_HOME/venv]   the reference virtual environment
#   WSCRL_REF_PYTHON [python3]               interpreter that creates the venv (3.11 tested)
#   TORCH_PIP_ARGS  []                       extra pip options for torch, e.g.
#                                            "--index-url https://download.pytorch.org/whl/cpu"
# Re-running is safe: existing work trees and an existing venv are kept.
set -euo pipefail

if [ $# -ne 2 ]; then
  sed -n '2,17p' "$0"; exit 2
fi
WSCRL_GIT=$1
MDCRL_GIT=$2
HOME_DIR=${WSCRL_REF_HOME:-$HOME/wscrl-reference}
VENV=${WSCRL_REF_VENV:-$HOME_DIR/venv}
PY=${WSCRL_REF_PYTHON:-python3}
mkdir -p "$HOME_DIR"

# --- work trees ------------------------------------------------------------------------
[ -d "$HOME_DIR/ws-crl/.git" ] || git clone -q "$WSCRL_GIT" "$HOME_DIR/ws-crl"
[ -d "$HOME_DIR/md-crl/.git" ] || git clone -q "$MDCRL_GIT" "$HOME_DIR/md-crl"

# --- environment -------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of pip options
"$VENV/bin/pip" install -q torch==2.13.0 ${TORCH_PIP_ARGS:-}
"$VENV/bin/pip" install -q numpy scipy scikit-learn==1.9.1 omegaconf hydra-core==1.3.2 \
  matplotlib seaborn pandas tqdm rich imageio pytorch-lightning==2.4.0 torchmetrics
# WS-CRL's flow modules import these; their pinned dependencies would replace torch.
"$VENV/bin/pip" install -q --no-deps nflows==0.14 UMNN

# --- shims -------------------------------------------------------------------------------
# MLflow: WS-CRL calls it throughout; a do-nothing package is enough (nothing is tracked).
STUBS="$HOME_DIR/stubs"
mkdir -p "$STUBS/mlflow"
cat > "$STUBS/mlflow/__init__.py" <<'EOF'
"""Do-nothing stand-in for mlflow (the reference comparison tracks nothing)."""
import contextlib
import types


class MlflowException(Exception):
    pass


exceptions = types.SimpleNamespace(MlflowException=MlflowException)


def _noop(*args, **kwargs):
    return None


log_metric = log_metrics = log_param = log_params = set_tag = set_tags = _noop
set_tracking_uri = log_artifact = log_artifacts = end_run = _noop


def create_experiment(name, *args, **kwargs):
    return "0"


def set_experiment(name, *args, **kwargs):
    return types.SimpleNamespace(experiment_id="0", artifact_location="")


def get_experiment_by_name(name):
    return set_experiment(name)


@contextlib.contextmanager
def start_run(*args, **kwargs):
    yield types.SimpleNamespace(info=types.SimpleNamespace(run_id="0"))
EOF
# Hydra finds WS-CRL's configs as a module when the experiment is imported by a launcher.
touch "$HOME_DIR/ws-crl/config/__init__.py"
# MD-CRL: a CSV logger instead of Weights & Biases (wandb and torchvision themselves are
# replaced in sys.modules by tools/reference/run_mdcrl.py, after lightning has imported).
cat > "$HOME_DIR/md-crl/configs/logger/csv.yaml" <<'EOF'
csv:
  _target_: pytorch_lightning.loggers.CSVLogger
  save_dir: "."
  name: "csv"
  version: 0
EOF

echo "reference ready: WSCRL_REF_HOME=$HOME_DIR WSCRL_REF_VENV=$VENV"
