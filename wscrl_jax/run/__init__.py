"""The pieces of one run that `experiment.run` tells in order: members.py (data and state on
the devices), workdir.py (resume, checkpoints and training metrics), evaluation.py."""
