"""Rule report: render reports/<study>/report.html from the tables, its bottom line as plain text
(bottom_line.txt) and every figure as a PNG file with its caption (figures/)."""
from normlab import report, runtime

sm = snakemake  # noqa: F821
with runtime.job(sm.log[0], sm.threads, "report"):
    tables = {k: sm.input[k] for k in sm.input.keys() if k not in ("provenance", "spectra", "contour_grids")}
    report.build_report(tables, list(sm.input.provenance), sm.params.config, sm.output.html,
                        benchmarks_dir=sm.params.benchmarks, spectra_paths=list(sm.input.spectra),
                        contour_paths=list(sm.input.contour_grids), workers=sm.threads,
                        bottom_line_out=sm.output.bottom_line, figures_dir=sm.output.figures)
