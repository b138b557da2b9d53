#!/usr/bin/env python3
"""Draws benches/frontier.png from benches/quality/recipes.json: one point per recipe,
short-text P95 (left) and batch-of-32 throughput (right) against worst cosine to
sentence-transformers fp32. fp32 and the hub-style variants are marked apart from the
project's own recipes; the chosen default is circled.

Usage: python3 benches/quality/frontier.py   (needs matplotlib: pip install matplotlib==3.10.7)
"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLOOR = 1e-6
STYLE = {"fp32": ("s", "black"), "hub": ("X", "tab:red"), "ours": ("o", "tab:blue")}


def main():
    recipes = json.load(open(os.path.join(HERE, "recipes.json"), encoding="utf-8"))["recipes"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, key, label in (
        (axes[0], "short_p95_ms", "short text P95, ms (lower is better)"),
        (axes[1], "batch32_vs_fp32", "batch of 32, throughput vs fp32 in the same run (higher is better)"),
    ):
        for r in recipes:
            if r.get(key) is None or r.get("worst") is None:
                continue
            marker, color = STYLE[r["kind"]]
            # 1 - cosine on a log scale, so 0.997 and 0.9987 are as far apart as they matter;
            # fp32 (1.000000) sits on the floor.
            y = max(1.0 - r["worst"], FLOOR)
            ax.scatter(r[key], y, marker=marker, color=color, s=60, zorder=3)
            if r.get("default"):
                ax.scatter(r[key], y, marker="o", facecolors="none", edgecolors="tab:green", s=260, linewidths=2, zorder=4)
            ax.annotate(r["name"], (r[key], y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_yscale("log")
        ax.invert_yaxis()
        ax.axhline(1 - 0.997, color="tab:green", linestyle="--", linewidth=1)
        ax.text(ax.get_xlim()[0], 1 - 0.997, " target: worst cosine 0.997", color="tab:green", fontsize=8, va="bottom")
        if key == "short_p95_ms":
            ax.axvline(20, color="tab:orange", linestyle="--", linewidth=1)
            ax.text(20, ax.get_ylim()[0], " 20 ms", color="tab:orange", fontsize=8)
        else:
            ax.axvline(1.0, color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("1 - worst cosine vs sentence-transformers fp32 (log; up is better)")
        ax.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], marker=m, color=c, linestyle="", label=k) for k, (m, c) in STYLE.items()]
    handles.append(plt.Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="tab:green", linestyle="", markersize=12, label="default q8"))
    axes[1].legend(handles=handles, loc="lower right")
    fig.suptitle("EmbeddingGemma-300m on 2 threads: speed against fidelity, one point per recipe")
    fig.tight_layout()
    out = os.path.join(HERE, "..", "frontier.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
