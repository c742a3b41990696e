"""The command line's defaults and the names its flags take, as plain values: reading them (to build
``vaezoo --help``) imports neither torch nor Pyro, so that ``--help`` answers at once."""

from __future__ import annotations

DEFAULT_MODEL = "vae"
DEFAULT_DATASET = "mnist-small"
DEFAULT_EPOCHS = 250  # the main job: about 2 min 10 s on 2 CPU cores, compiled (bench/RESULTS.md)
MAX_SAMPLES = 10_000  # one picture of more images is unreadable, and the batch may not fit in memory
#: ``train`` compiles a run of at least this many steps unless told (--compile / --no-compile): the
#: compiled MLP step pays its ~20 s of compiling back after 5,000-8,000 steps (bench/RESULTS.md)
COMPILE_AUTO_STEPS = 10_000
EVAL_SAMPLES_AFTER_TRAIN = 500
DTYPE_NAMES = ("float32", "float64")
#: which checkpoints a run keeps: the last epoch's (always), and with "best" also the best test ELBO's
KEEP = ("last", "best")

#: the train settings a run records in config.json["train"] beyond ``epochs``, with their defaults
TRAIN_DEFAULTS = {"batch_size": 128, "lr": 1e-3, "seed": 0, "clip_norm": None, "dtype": "float32", "compile": False,
                  "schedule": "constant", "warmup_epochs": 0, "kl_warmup": 0, "keep": "last", "patience": None}
