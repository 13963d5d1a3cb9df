"""The pieces of one run that `experiment.run` tells in order: members (build), resume,
recording (checkpoints and metric files while training), evaluation."""
