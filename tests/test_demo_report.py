"""The end of ``make demo``: the table of chance, zero-shot and fine-tuned recall, and a missing file."""

import json

from tasks.demo_report import main, report


def _results(r1: float, itc_r1: float) -> dict:
    test = {f"test_{d}_r{k}": r1 * k for d in ("txt", "img") for k in (1, 5, 10)}
    test.update({f"test_itc_{d}_r{k}": itc_r1 * k for d in ("txt", "img") for k in (1, 5, 10)})
    test.update({f"chance_test_{d}_r{k}": 0.5 * k for d in ("txt", "img") for k in (1, 5, 10)})
    test["test_r_mean"] = test["test_itc_r_mean"] = None  # absent in old files: computed from the cells
    return {"test": {k: v for k, v in test.items() if v is not None}}


def test_report_rows_hold_each_source_and_the_mean_of_its_six_recalls():
    rows = report(_results(2.0, 1.0), _results(6.0, 4.0))
    table = {row[:24].strip(): row[24:].split() for row in rows[3:]}
    assert list(table) == ["chance", "zero-shot", "zero-shot, ITC only", "fine-tuned", "fine-tuned, ITC only"]
    assert table["chance"] == ["0.5", "2.5", "5.0", "0.5", "2.5", "5.0", "2.7"]  # mean of 0.5, 2.5, 5 twice
    assert table["fine-tuned"][0] == "6.0" and table["fine-tuned"][-1] == "32.0"  # 6 x (1 + 5 + 10) / 3
    assert table["zero-shot, ITC only"][-1] == "5.3"


def test_missing_results_file_is_named(tmp_path, capsys):
    (tmp_path / "zero.json").write_text(json.dumps(_results(1.0, 1.0)))
    assert main(["--zero_shot", str(tmp_path / "zero.json"), "--fine_tuned", str(tmp_path / "nope.json")]) == 1
    assert "nope.json" in capsys.readouterr().err
