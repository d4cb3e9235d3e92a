"""Draw a labelled gallery of simulated lenses and non-lenses.

Usage::

    python examples/simulated_gallery.py docs/images/simulated_examples.png [--seed 1]

Rows: medium-difficulty lenses; the same lenses with the lens galaxy (and everything
else) removed, i.e. the lensed source alone (noiseless, PSF-convolved); easy and hard
lenses (the same random draws as row 1, mapped through the other presets' ranges); then one row per kind of non-lens (plain; blue companions, spiral arms, ring
galaxies and mergers: four images, then their blue feature alone). Colour composites
map i, r, g to red, green, blue with an asinh stretch (Lupton et al. 2004) on the flux
images; the model itself sees the per-band min-max scaled arrays.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lensclf import composite_rgb, make_lenses  # noqa: E402

N_COLUMNS = 8
BAND_WEIGHTS = np.array([1.6, 1.15, 1.0])  # g, r, i: roughly equalise a flat-spectrum source
SOFTENING = 50.0


def colour_composite(image):
    """(3, H, W) g, r, i fluxes -> RGB for display (Lupton asinh stretch, g boosted a little)."""
    return composite_rgb(image * BAND_WEIGHTS[:, None, None], stretch="asinh", softening=SOFTENING)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rows = []  # (label, list of RGB images, list of captions)
    X, y, meta, comps = make_lenses(N_COLUMNS, 0, "medium", args.seed, normalize="none", return_metadata=True,
                                    return_components=True, shuffle=False)
    rows.append(("lenses (medium)", [colour_composite(x) for x in X],
                 [f"θE={m['einstein_radius']:.2f}\" μ={m['magnification']:.1f}" for m in meta]))
    rows.append(("lensed source only", [colour_composite(f) for f in comps["feature"]],
                 [f"S/N={m['feature_snr']:.0f} i={m['feature_mag_i']:.1f}" for m in meta]))
    for difficulty in ("easy", "hard"):
        X, y, meta = make_lenses(N_COLUMNS, 0, difficulty, args.seed, normalize="none", return_metadata=True,
                                 shuffle=False)
        rows.append((f"lenses ({difficulty})", [colour_composite(x) for x in X],
                     [f"θE={m['einstein_radius']:.2f}\" S/N={m['feature_snr']:.0f}" for m in meta]))
    X, y, meta, comps = make_lenses(0, 300, "medium", args.seed, normalize="none", return_metadata=True,
                                    return_components=True, shuffle=False, negative_mix=0.8)
    for kind in ("plain", "companion", "spiral", "ring", "merger"):
        if kind == "plain":
            idx = np.flatnonzero(meta["kind"] == kind)[:N_COLUMNS]
            rows.append(("non-lens: plain", [colour_composite(X[k]) for k in idx],
                         [f"i={meta['lens_mag_i'][k]:.1f}" for k in idx]))
            continue
        # half the row: images; the other half: their blue feature alone (noiseless)
        idx = np.flatnonzero(meta["kind"] == kind)[: N_COLUMNS // 2]
        images = [colour_composite(X[k]) for k in idx] + [colour_composite(comps["feature"][k]) for k in idx]
        captions = [f"S/N={meta['feature_snr'][k]:.0f}" for k in idx]
        captions += [f"feature of #{j + 1}" for j in range(len(idx))]
        rows.append((f"non-lens: {kind}", images, captions))

    fig, axes = plt.subplots(len(rows), N_COLUMNS, figsize=(1.6 * N_COLUMNS + 1.2, 1.75 * len(rows)))
    for r, (label, images, captions) in enumerate(rows):
        for c in range(N_COLUMNS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], origin="lower", interpolation="nearest")
                ax.set_title(captions[c], fontsize=6.5, pad=2)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("lensclf simulator: HSC-like g, r, i cutouts (64 x 64 px, 0.168\"/px; RGB = i, r, g)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
