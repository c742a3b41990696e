"""The transformer VAEs' ELBO gap over seeds: reads the JSON lines that ``bench/tvae_gap_ais.py`` prints
(one per model and seed: test-set rows, and BDMC rows with ``--bdmc``) and prints, per model and kind,
the mean over seeds of each figure with a 95% t-interval over the seeds, and the gap's share of
KL(q || prior) per seed. The claim under test (the transformer-VAE paper: the ELBO's gap "is about"
KL(q || prior)) reads the AIS gap's share on the test images (a lower bound) and, on simulated
images, the shares of BDMC's lower and upper bounds on the gap.

    python bench/tvae_gap_seeds.py LOG [LOG ...]
"""

import argparse
import json
from collections import defaultdict

import numpy as np

from vaezoo.compare.stats import t_interval
from vaezoo.provenance import code_header

FIGURES = {
    "test": [("log_px_is", "log p(x) IS"), ("log_px_ais", "log p(x) AIS"), ("elbo", "ELBO"), ("gap_is", "gap IS"),
             ("gap_ais", "gap AIS"), ("kl_prior", "KL(q ‖ prior)"), ("share", "gap AIS / KL")],
    "bdmc": [("lower", "lower (forward AIS)"), ("upper", "upper (reverse AIS)"), ("elbo", "ELBO"), ("kl_prior", "KL(q ‖ prior)"),
             ("share_lower", "gap / KL, lower"), ("share_upper", "gap / KL, upper"), ("bdmc_gap", "BDMC gap")],
}


def _shares(r):
    if r.get("kind") == "bdmc":
        return {"share_lower": r["gap_lower"] / r["kl_prior"], "share_upper": r["gap_upper"] / r["kl_prior"]}
    return {"share": r["gap_ais"] / r["kl_prior"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", help="outputs of bench/tvae_gap_ais.py")
    args = ap.parse_args()
    print(code_header(), flush=True)
    rows = defaultdict(dict)  # (kind, model, settings) -> seed -> record
    for path in args.logs:
        for line in open(path):
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            r.update(_shares(r))
            kind = r.get("kind", "test")
            key = (kind, r["model"], r["pose_prior"], r["epochs"], r["eval_n"], r["samples"], r["ais_steps"], r["ais_chains"])
            rows[key][r["seed"]] = r
    for kind in ("test", "bdmc"):
        keys = [k for k in rows if k[0] == kind]
        if not keys:
            continue
        k0 = keys[0]
        where = f"the first {k0[4]} test images" if kind == "test" else f"{k0[4]} images simulated from each model (BDMC)"
        print(f"\n{where}; IS K = {k0[5]}, AIS {k0[6]} steps x {k0[7]} chains; mean over seeds [95% t-interval over the seeds]\n")
        figures = FIGURES[kind]
        print("| model | seeds | " + " | ".join(name for _, name in figures) + " | k-hat > 0.7 |")
        print("| --- | --- | " + " | ".join("---:" for _ in figures) + " | ---: |")
        for key in keys:
            by_seed = rows[key]
            seeds = sorted(by_seed)
            cells = []
            for field, _ in figures:
                values = np.array([by_seed[s][field] for s in seeds])
                if len(values) > 1:
                    mean, low, high = t_interval(values)
                    cells.append(f"{mean:.2f} [{low:.2f}, {high:.2f}]")
                else:
                    cells.append(f"{values[0]:.2f}")
            khat = ", ".join(f"{by_seed[s]['khat_above_0.7']:.0%}" for s in seeds)
            print(f"| {key[1]} (pose {key[2]}, {key[3]} epochs) | {', '.join(map(str, seeds))} | " + " | ".join(cells)
                  + f" | {khat} |")
        share = [f for f, _ in figures if f.startswith("share")]
        print("\nper seed, " + ", ".join(share) + ": " + "; ".join(
            f"{key[1]}: " + ", ".join("/".join(f"{rows[key][s][f]:.2f}" for f in share) for s in sorted(rows[key])) for key in keys))


if __name__ == "__main__":
    main()
