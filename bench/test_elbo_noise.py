"""How noisy is a run's per-epoch test ELBO? The trained model's test ELBO (whole test split, one
draw per image, as the Trainer records it each epoch) evaluated under ``--draws`` seeds: the sd of
one evaluation, and of the difference of two on fresh draws, to hold against compare's flatness
threshold (0.1 nats over the last tenth of the epochs).

    VAEZOO_DATA_DIR=../shared/data python bench/test_elbo_noise.py RUN [--draws 8]
"""

import argparse
import sys
from pathlib import Path

try:
    import vaezoo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vaezoo import runs  # noqa: E402
from vaezoo.inference import Trainer  # noqa: E402
from vaezoo.provenance import code_header  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory of vaezoo train")
    p.add_argument("--draws", type=int, default=8, help="evaluations, each under its own seed (default 8)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    print(code_header(), flush=True)
    torch.set_num_threads(1)
    m, cfg, _ = runs.load_trained(args.run, torch.device("cpu"))
    test = runs.load_split(cfg, "test", args.data_dir)  # what the run evaluated each epoch
    trainer = Trainer(m.objective(), epochs=1, batch_size=100, device="cpu", seed=0, progress=False)
    values = []
    for s in range(args.draws):
        torch.manual_seed(1000 + s)
        values.append(trainer.evaluate(test)["elbo"])
    v = np.array(values)
    sd = v.std(ddof=1)
    print(f"{cfg['model']} ({args.run}): test ELBO over {len(v)} draws: mean {v.mean():.3f}, sd {sd:.3f}; "
          f"sd of the difference of two evaluations on fresh draws {sd * 2 ** 0.5:.3f}")
    print("values:", " ".join(f"{x:.3f}" for x in v))


if __name__ == "__main__":
    main()
