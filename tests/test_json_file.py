"""The one JSON file reader: errors name the file and the position, with the caller's exception classes."""

import pytest

from utils.json_file import read_json_file


class LoaderError(ValueError):
    pass


def test_reads_json(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('[{"image": "a.png", "caption": "é"}]', encoding="utf-8")
    assert read_json_file(path) == [{"image": "a.png", "caption": "é"}]


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[1,\n 2,\n 3 4]')  # the 4 is line 3, column 4
    with pytest.raises(LoaderError, match=r"bad\.json:3:4: malformed JSON: Expecting ',' delimiter"):
        read_json_file(path, error=LoaderError)


def test_missing_directory_and_not_utf8(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.json: med config file not found"):
        read_json_file(tmp_path / "absent.json", what="med config file")
    with pytest.raises(LoaderError, match="absent.json: annotation file not found"):
        read_json_file(tmp_path / "absent.json", what="annotation file", error=LoaderError, missing=LoaderError)
    with pytest.raises(LoaderError, match=r"is a directory, not the annotation file"):
        read_json_file(tmp_path, what="annotation file", error=LoaderError)
    latin = tmp_path / "latin.json"
    latin.write_bytes('["caf\xe9"]'.encode("latin-1"))
    with pytest.raises(LoaderError, match=r"latin\.json: not UTF-8 text"):
        read_json_file(latin, error=LoaderError)
