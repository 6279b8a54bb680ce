"""Reports: figure files named after classes (COCO category names) stay inside the report's folder."""

import matplotlib.pyplot as plt

from neuralsim.experiments.report import Report


def test_figures_named_after_any_class_are_written_inside_the_folder(tmp_path):
    report = Report("run")
    for name in ("psi_../../../x_azimuth", "psi_coffee mug/large_azimuth", "psi_mug_azimuth"):
        report.figure(name, plt.figure())
    out = tmp_path / "a" / "b" / "run"
    report.save(out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.parent == out for p in written), written
    assert len(written) == 4 and (out / "psi_mug_azimuth.png").is_file() and (out / "report.html").is_file()
