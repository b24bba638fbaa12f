"""A diversity study's report.html: one self-contained page (figures embedded) with the answer and
the tables of summary.md, the arms over meta-seeds (one dot per meta-seed, the CIs, the controls
beside), each arm's learning curves with every replicate overlaid, its learned activations and the
variance components. The figures are the ones the study's analysis wrote into report_figures/; the
report only reads, so it can be remade from a copied folder."""
from __future__ import annotations

from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.results.html import CSS, esc, figure, markdown_to_html
from dnn_search.results.report_data import FIGURE_DIR
from dnn_search.results.study_record import load_study_results

REPORT_NAME = "report.html"
# (file in report_figures/, caption): the views in the order a reader needs them
VIEWS = (
    ("study_arms.png", "The primary network of every replicate, one dot per meta-seed, with each arm's mean "
                       "and 95 % CI; the controls beside the arms."),
    ("study_curves.png", "Held-out metric per outer step, every replicate of each arm overlaid: does the "
                         "budget reach a plateau?"),
    ("study_activations.png", "The learned activations of every replicate, per arm (the base dashed)."),
    ("study_variance.png", "Variance components of each arm's primary network: between meta-seeds and "
                           "between retraining seeds."),
)


def write_study_report(folder: str | Path) -> Path:
    """Write FOLDER/report.html for the study in FOLDER; return its path."""
    res = load_study_results(Path(folder))
    figdir = res.folder / FIGURE_DIR
    parts = [f"<h1>Diversity study {esc(res.name)}</h1>", f'<p class="meta">{esc(res.spec.description)}</p>']
    shown = [(figdir / name, caption) for name, caption in VIEWS if (figdir / name).is_file()]
    if not shown:
        parts.append('<p class="note">No figures yet: the study has not reached its analysis '
                     "(`dnn-search study --name NAME --resume` finishes it).</p>")
    for path, caption in shown:
        parts.append(figure(path, caption, caption))
    if res.summary_md:
        parts += ["<h2>Summary</h2>", markdown_to_html(res.summary_md)]
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>dnn-search study report: {esc(res.name)}</title><style>{CSS}</style></head>"
           f"<body>\n{chr(10).join(parts)}\n</body></html>\n")
    return atomic_write_text(res.folder / REPORT_NAME, doc)
