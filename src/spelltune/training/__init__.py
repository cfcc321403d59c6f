"""Training components: the Trainer subclass and collators, tracking (DVCLive + W&B),
checkpoints and resume, devices and worker slots, start-up, in-run pruning of sweep trials."""
