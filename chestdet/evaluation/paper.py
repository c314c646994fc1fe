"""The published ChestX-ray8 Table 4 figures, so that a report can put a model beside the paper, for the classes
the paper has."""

from __future__ import annotations

from collections.abc import Sequence

from chestdet.core.labels import CLASS_NAMES, LabelMap, UnknownLabelError

# Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. "ChestX-ray8: Hospital-scale Chest X-ray
# Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax
# Diseases." CVPR 2017, pp. 3462-3471, Table 4 ("Pathology localization accuracy and average false
# positive number for 8 disease classes"); the same figures are Table 4 of arXiv:1705.02315.
# Their weakly supervised ResNet-50 heatmap boxes on the 984 NIH boxes. Columns in PAPER_CLASSES
# order (the paper writes "Infiltration" for Infiltrate).
PAPER_CLASSES: tuple[str, ...] = CLASS_NAMES
PAPER_CITATION = (
    "Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray "
    "Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax "
    "Diseases. IEEE CVPR 2017, pp. 3462-3471, Table 4."
)
PAPER_TABLE4: dict[float, dict[str, tuple[float, ...]]] = {
    0.1: {
        "accuracy": (0.7277, 0.9931, 0.7124, 0.7886, 0.4352, 0.1645, 0.7500, 0.4591),
        "afp": (0.8323, 0.3506, 0.7998, 0.5589, 0.6423, 0.6047, 0.9055, 0.4776),
    },
    0.25: {
        "accuracy": (0.5500, 0.9794, 0.5424, 0.5772, 0.2823, 0.0506, 0.5583, 0.3469),
        "afp": (0.9167, 0.4553, 0.8598, 0.6077, 0.6707, 0.6158, 0.9614, 0.5000),
    },
    0.5: {
        "accuracy": (0.2833, 0.8767, 0.3333, 0.4227, 0.1411, 0.0126, 0.3833, 0.1836),
        "afp": (1.0203, 0.5630, 0.9268, 0.6585, 0.6941, 0.6189, 1.0132, 0.5285),
    },
    0.75: {
        "accuracy": (0.1666, 0.7260, 0.2418, 0.3252, 0.1176, 0.0126, 0.2583, 0.1020),
        "afp": (1.0619, 0.6616, 0.9603, 0.6921, 0.7043, 0.6199, 1.0569, 0.5396),
    },
    0.9: {
        "accuracy": (0.1333, 0.6849, 0.2091, 0.2520, 0.0588, 0.0126, 0.2416, 0.0816),
        "afp": (1.0752, 0.7226, 0.9797, 0.7124, 0.7144, 0.6199, 1.0732, 0.5437),
    },
}


def paper_columns(classes: Sequence[str]) -> dict[str, int]:
    """{evaluated class: its column in PAPER_TABLE4} for the classes the paper has (case, spaces and NIH's
    Infiltration tolerated), in the evaluated order; other classes have no published figure."""
    paper = LabelMap(PAPER_CLASSES)
    columns = {}
    for name in classes:
        try:
            columns[name] = PAPER_CLASSES.index(paper.canonical(name))
        except UnknownLabelError:
            continue
    return columns
