"""rho-VAE against the diagonal-normal ``vae`` as a function of the latent size: one ``vaezoo
compare`` per size (the same architecture, budget, seeds and test points for both entries), then
this table of the paired differences.

    for D in 2 5 10 20 50; do
      vaezoo compare --models vae rho-vae --dataset mnist --seeds 0 1 2 --epochs 30 --batch-size 100 \\
        --set latent_dim=$D --samples 5000 --n-test 1000 --out runs/rho-d$D
    done
    python bench/rho_latent_sweep.py runs/rho-d2 runs/rho-d5 runs/rho-d10 runs/rho-d20 runs/rho-d50

Each directory's ``leaderboard.json`` (written by ``compare``) gives per entry the mean and sd over
seeds of log p(x) (importance sampling), the ELBO and KL-related figures, the convergence flag, and
for ``rho-vae`` the paired difference to ``vae`` over the same test points and seeds with its 95%
t-interval over seeds. A verdict per size: "rho-VAE ahead" / "vae ahead" where the interval excludes
0, else "inconclusive".
"""

import argparse
import json
from pathlib import Path


def _row(path: Path):
    board = json.loads((path / "leaderboard.json").read_text())
    s = board["settings"]
    entries = {e["entry"]: e for e in board["entries"]}
    vae, rho = entries["vae"], entries["rho-vae"]
    d = rho["vs_baseline"]
    if d["low"] > 0:
        verdict = "rho-VAE ahead"
    elif d["high"] < 0:
        verdict = "vae ahead"
    else:
        verdict = "inconclusive"
    khat = {e: entries[e]["khat_above"] for e in ("vae", "rho-vae")}
    return {
        "latent_dim": int(s["set"]["latent_dim"]), "epochs": s["epochs"], "seeds": len(s["seeds"]),
        "K": s["samples"], "n_test": s.get("num_test"),
        "vae": vae["log_px"], "rho": rho["log_px"], "vae_elbo": vae["elbo"], "rho_elbo": rho["elbo"],
        "delta": d, "verdict": verdict, "converged": (vae["convergence"], rho["convergence"]),
        "active": (vae["active_units"], rho["active_units"]), "khat": khat,
    }


def _ms(v, digits=2):
    return f"{v['mean']:.{digits}f} ± {v['sd']:.{digits}f}"


def _share(k):
    return f"{100 * k['mean']:.0f}%" if isinstance(k, dict) else str(k)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="compare directories, one per latent size")
    args = ap.parse_args(argv)
    rows = sorted((_row(Path(p)) for p in args.dirs), key=lambda r: r["latent_dim"])
    print("| latent dim | `vae` log p(x) | `rho-vae` log p(x) | Δ rho - vae (95% CI over seeds) | per seed | "
          "`vae` ELBO | `rho-vae` ELBO | active units vae / rho | test ELBO flat? vae / rho | verdict |")
    print("| ---: | ---: | ---: | --- | --- | ---: | ---: | --- | --- | --- |")
    for r in rows:
        d = r["delta"]
        per_seed = ", ".join(f"{v:+.2f}" for v in d["per_seed"].values())
        print(f"| {r['latent_dim']} | {_ms(r['vae'])} | {_ms(r['rho'])} | {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] "
              f"| {per_seed} | {_ms(r['vae_elbo'])} | {_ms(r['rho_elbo'])} | "
              f"{r['active'][0]['mean']:.1f} / {r['active'][1]['mean']:.1f} | {r['converged'][0]} / {r['converged'][1]} "
              f"| {r['verdict']} |")
    first = rows[0]
    print(f"\n{first['epochs']} epochs, {first['seeds']} seeds, IS with K = {first['K']} on the first {first['n_test']} "
          "test images; share of k-hat > 0.7 per size (vae / rho-vae): "
          + "; ".join(f"{r['latent_dim']}: {_share(r['khat']['vae'])} / {_share(r['khat']['rho-vae'])}" for r in rows))


if __name__ == "__main__":
    main()
