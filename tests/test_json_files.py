"""`core.json_files.read_json`: the one reader of model and adapter folders' JSON files."""

import pytest

from model_cards import ModelCardError
from model_cards.card import read_processor_info
from modeling_uniqa.core.json_files import read_json
from modeling_uniqa.errors import ModelFolderError


def test_read_json_returns_the_value_and_names_a_bad_file(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert read_json(good) == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    for name in ("bad.json", "latin.json", "missing.json"):
        with pytest.raises(ValueError, match=f"{name}: not a readable JSON file"):
            read_json(tmp_path / name)
    with pytest.raises(ModelFolderError, match="bad.json: not a readable JSON file"):
        read_json(tmp_path / "bad.json", ModelFolderError)


def test_the_card_generator_reads_through_it(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text("[1,", encoding="utf-8")
    with pytest.raises(ModelCardError, match="preprocessor_config.json: not a readable JSON file"):
        read_processor_info(tmp_path)
