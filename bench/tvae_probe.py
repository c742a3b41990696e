"""Transformer VAEs on mnist-small at a small fixed budget: (a) the linear-SVM probe of the paper's
Table 1 on the posterior mean of z (dim z = 8), next to raw pixels and PCA; (b) samples of a
``tvae-affine5`` with a learned normal pose prior, pose at the prior mean and drawn from the prior.

    OMP_NUM_THREADS=1 python bench/tvae_probe.py --epochs 10 [--out bench/tvae_samples.png]

All inputs are the fixed binarization of mnist-small (10000 train / 2000 test); the models train on
its dynamic binarization with the paper's nets (two ReLU layers of 256, localization 128), Adam.
Probe: LinearSVC (C = 1, primal, inputs not rescaled), 9-fold stratified cross-validation on the training set (mean and
std of the fold accuracies), then fitted on the whole training set and scored on the test set.
"""

import argparse
import time

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from vaezoo import data, traces, zoo
from vaezoo.inference import Trainer

MODELS = ["vae", "tvae-affine", "tvae-tps", "dtvae-affine"]
NETS = dict(hidden=(256, 256), activation="relu")


def train(name, args, train_set, **config):
    torch.manual_seed(args.seed)
    m = zoo.create(name, data_shape=(1, 28, 28), latent_dim=args.latent_dim, **NETS, **config)
    start = time.perf_counter()
    history = Trainer(m.objective(), epochs=args.epochs, batch_size=100, lr=args.lr, device="cpu", seed=args.seed,
                      progress=False).fit(train_set)
    return m, history[-1], time.perf_counter() - start


@torch.no_grad()
def posterior_mean_z(m, x):
    return torch.cat([traces.record(m.guide, chunk).sites["z"]["fn"].mean for chunk in x.split(500)]).numpy()


def probe(features, labels, test_features, test_labels, seed):
    # the primal problem (more samples than features) is fast; standardizing 784 binary pixels
    # made liblinear crawl, so no input is rescaled (raw, PCA and z alike)
    svm = LinearSVC(C=1.0, dual=False, max_iter=5000)
    folds = StratifiedKFold(n_splits=9, shuffle=True, random_state=seed)
    scores = cross_val_score(svm, features, labels, cv=folds)
    test = svm.fit(features, labels).score(test_features, test_labels)
    return 100 * scores.mean(), 100 * scores.std(), 100 * test


@torch.no_grad()
def sample_figure(m, path, n=64, seed=0):
    """Left: content z ~ N(0, I) rendered with the pose at the prior mean; right: the same z with
    the pose drawn from the prior."""
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    z = torch.randn(n, m.config.latent_dim)
    prior = m.model.pose_prior
    pose = prior(z).sample((n,))  # [n, pose site size]
    at_mean = torch.sigmoid(m.model.render(z, prior.mean_pose(z).expand(n, -1)))
    drawn = torch.sigmoid(m.model.render(z, prior.pose_map(pose)))
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, images, title in zip(axes, (at_mean, drawn), ("pose at the prior mean", "pose drawn from the prior")):
        grid = images.reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
        ax.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{m.name}, pose_prior={m.config.pose_prior}: the same z in each cell")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--out", default="bench/tvae_samples.png")
    args = parser.parse_args()
    torch.set_num_threads(1)

    train_set = data.load("mnist-small", split="train", binarize="dynamic")
    x_train = data.load("mnist-small", split="train", binarize="fixed")
    x_test = data.load("mnist-small", split="test", binarize="fixed")
    y_train, y_test = x_train.targets.numpy(), x_test.targets.numpy()
    flat_train, flat_test = x_train.data.reshape(len(y_train), -1).numpy(), x_test.data.reshape(len(y_test), -1).numpy()
    print(f"mnist-small, fixed binarization: {len(y_train)} train / {len(y_test)} test; "
          f"{args.epochs} epochs of batch 100, Adam lr {args.lr}, seed {args.seed}, 1 thread")

    rows = []
    start = time.perf_counter()
    rows.append(("raw pixels (784)",) + probe(flat_train, y_train, flat_test, y_test, args.seed) + (time.perf_counter() - start, ""))
    start = time.perf_counter()
    pca = PCA(args.latent_dim, random_state=args.seed).fit(flat_train)
    rows.append((f"PCA ({args.latent_dim})",) + probe(pca.transform(flat_train), y_train, pca.transform(flat_test), y_test, args.seed)
                + (time.perf_counter() - start, ""))
    for name in args.models:
        m, last, seconds = train(name, args, train_set)
        z_train, z_test = posterior_mean_z(m, x_train.data), posterior_mean_z(m, x_test.data)
        rows.append((f"{name} ({args.latent_dim})",) + probe(z_train, y_train, z_test, y_test, args.seed)
                    + (seconds, f"{last['train_loss']:.1f}" if "train_loss" in last else ""))

    print("\n| input | 9-fold CV mean accuracy (%) | std (%) | test accuracy (%) | train time (s) | last train loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, mean, std, test, seconds, loss in rows:
        print(f"| {label} | {mean:.2f} | {std:.2f} | {test:.2f} | {seconds:.0f} | {loss} |")

    m, last, seconds = train("tvae-affine5", args, train_set, pose_prior="normal")
    sample_figure(m, args.out, seed=args.seed)
    scale = torch.nn.functional.softplus(m.model.pose_prior.raw_scale).detach().numpy().round(3)
    print(f"\n{args.out}: tvae-affine5, pose_prior=normal ({seconds:.0f} s); prior mean of u = (psi, log Sx, log Sy, Tx, Ty): "
          f"{m.model.pose_prior.loc.detach().numpy().round(3)}, prior std: {scale}")


if __name__ == "__main__":
    np.set_printoptions(suppress=True)
    main()
