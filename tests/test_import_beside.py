"""Late imports: what a run needs only later is imported in a background thread
(`train/import_beside.py`), so the modules a run starts with must not import it."""

import subprocess
import sys

from wscrl_jax.train.import_beside import RUN_MODULES, import_beside

# what the train and evaluate commands import before they start
START_MODULES = ("wscrl_jax.cli", "wscrl_jax.experiment", "wscrl_jax.methods",
                 "wscrl_jax.data.scaling", "wscrl_jax.lcm.method", "wscrl_jax.lcm.evaluate",
                 "wscrl_jax.run.evaluation")
# imported beside the run, or only by the models that need them (distrax: splines and flows)
LATE = RUN_MODULES + ("distrax", "tensorflow_probability", "matplotlib")


def test_the_start_of_a_run_does_not_import_the_late_modules():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in START_MODULES)
            + f"print(sorted(m for m in {LATE!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_import_beside_imports_and_skips_what_fails():
    name = "colorsys"  # small, pure, and imported again here if it was before
    sys.modules.pop(name, None)
    import_beside(("wscrl_jax.no_such_module", name)).join(timeout=60)
    assert name in sys.modules
