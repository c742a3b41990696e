"""The transformer VAEs' ELBO gap over seeds: reads the JSON lines that ``bench/tvae_gap_ais.py`` prints
(one per model and seed) and prints, per model, the mean over seeds of each figure with a 95%
t-interval over the seeds, and the gap's share of KL(q || prior) per seed. The claim under test
(the transformer-VAE paper: the ELBO's gap "is about" KL(q || prior)) reads the AIS gap's share.

    python bench/tvae_gap_seeds.py LOG [LOG ...]
"""

import argparse
import json
from collections import defaultdict

import numpy as np

from vaezoo.compare.stats import t_interval

FIGURES = [("log_px_is", "log p(x) IS"), ("log_px_ais", "log p(x) AIS"), ("elbo", "ELBO"), ("gap_is", "gap IS"),
           ("gap_ais", "gap AIS"), ("kl_prior", "KL(q ‖ prior)"), ("share", "gap AIS / KL")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", help="outputs of bench/tvae_gap_ais.py")
    args = ap.parse_args()
    rows = defaultdict(dict)  # (model, settings) -> seed -> record
    for path in args.logs:
        for line in open(path):
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            r["share"] = r["gap_ais"] / r["kl_prior"]
            key = (r["model"], r["pose_prior"], r["epochs"], r["eval_n"], r["samples"], r["ais_steps"], r["ais_chains"])
            rows[key][r["seed"]] = r
    print("| model | seeds | " + " | ".join(name for _, name in FIGURES) + " | k-hat > 0.7 |")
    print("| --- | --- | " + " | ".join("---:" for _ in FIGURES) + " | ---: |")
    for key, by_seed in rows.items():
        seeds = sorted(by_seed)
        cells = []
        for field, _ in FIGURES:
            values = np.array([by_seed[s][field] for s in seeds])
            if len(values) > 1:
                mean, low, high = t_interval(values)
                cells.append(f"{mean:.2f} [{low:.2f}, {high:.2f}]")
            else:
                cells.append(f"{values[0]:.2f}")
        khat = ", ".join(f"{by_seed[s]['khat_above_0.7']:.0%}" for s in seeds)
        print(f"| {key[0]} (pose {key[1]}, {key[2]} epochs) | {', '.join(map(str, seeds))} | " + " | ".join(cells)
              + f" | {khat} |")
    print("\nper seed, gap AIS / KL(q ‖ prior): " + "; ".join(
        f"{key[0]}: " + ", ".join(f"{by_seed[s]['share']:.2f}" for s in sorted(by_seed)) for key, by_seed in rows.items()))
    print("means over seeds with a 95% t-interval over the seeds (per-image standard errors are in each run's log); "
          f"IS K = {key[4]}, AIS {key[5]} steps x {key[6]} chains, the first {key[3]} test images")


if __name__ == "__main__":
    main()
