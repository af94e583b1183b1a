"""Batch files are validated whole, with the file's own line numbers, before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refunds.batch import parse_batch
from refunds.errors import InvalidIntentError

HEADER = "originalTransactionType,originalTransactionId,clientReference,refundAddress\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(*items: object) -> str:
    return "".join(
        (item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items
    )


def intent(ref: str, txn: str = "tx-1", kind: int = 1, **extra: object) -> dict[str, object]:
    return {"originalTransactionType": kind, "originalTransactionId": txn,
            "clientReference": ref, **extra}


def problems(path: Path, fmt: str | None = None) -> list[str]:
    with pytest.raises(InvalidIntentError) as caught:
        parse_batch(path, fmt)
    return [str(e) for e in caught.value.errors]


def test_csv_with_headers_parses_every_row_and_empty_cell_means_absent(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.csv", HEADER + "1,tx-1,r-1,\n2,tx-2,r-2,TAddr123\n\n3,tx-3,r-3,\n")
    intents = parse_batch(path)
    assert [i.client_reference for i in intents] == ["r-1", "r-2", "r-3"]
    assert intents[0].original_transaction_type == 1
    assert intents[0].refund_address is None
    assert intents[1].refund_address == "TAddr123"
    assert intents[2].original_transaction_type == 3


def test_csv_without_the_optional_column_and_with_a_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(
        "\ufeffclientReference,originalTransactionId,originalTransactionType\nr-1,tx-1,1\n"
        .encode()
    )
    (only,) = parse_batch(path)
    assert only.client_reference == "r-1"


def test_jsonl_and_ndjson_parse_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    text = jsonl(intent("r-1"), "", intent("r-2", refundAddress="addr"))
    for name in ("ok.jsonl", "ok.ndjson"):
        intents = parse_batch(write(tmp_path, name, text))
        assert [i.client_reference for i in intents] == ["r-1", "r-2"]
        assert intents[1].refund_address == "addr"


def test_format_flag_overrides_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "intents.txt", HEADER + "1,tx-1,r-1,\n")
    assert [i.client_reference for i in parse_batch(path, "csv")] == ["r-1"]
    assert problems(path) == [
        "file: cannot tell the format from 'intents.txt': name it .csv, .jsonl or .ndjson, or "
        "pass --format csv|jsonl"
    ]


def test_csv_errors_name_every_bad_field_with_its_physical_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", HEADER + "1,tx-1,ok-1,\n7,tx-2,ok-2,\n\n1,,bad ref,\n")
    assert problems(path) == [
        "line 3: originalTransactionType: must be one of 1 (crypto deposit), 2 (crypto "
        "collection), 3 (crypto checkout)",
        "line 5: originalTransactionId: is required",
        "line 5: clientReference: String should match pattern '^[A-Za-z0-9._:\\-]+$'",
    ]


def test_csv_line_numbers_count_a_quoted_cell_that_spans_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "multi.csv", HEADER + '1,"tx\nsplit",r-1,\nx,tx-2,r-2,\n')
    errors = problems(path)
    assert len(errors) == 1
    assert errors[0].startswith("line 4: originalTransactionType: ")


def test_csv_row_with_the_wrong_number_of_cells_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "short.csv", HEADER + "1,tx-1,r-1\n1,tx-2,r-2,addr,extra\n")
    assert problems(path) == [
        "line 2: line: has 3 cells, the header (line 1) has 4",
        "line 3: line: has 5 cells, the header (line 1) has 4",
    ]


def test_unknown_csv_column_is_an_error_and_rows_are_still_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "extra.csv",
                 "originalTransactionType,originalTransactionId,clientReference,amount\n"
                 "1,tx-1,r-1,10\n9,tx-2,r-2,11\n")
    errors = problems(path)
    assert errors[0].startswith("line 1: amount: unknown column (expected ")
    assert errors[1].startswith("line 3: originalTransactionType: must be one of")
    assert len(errors) == 2


def test_missing_csv_column_is_reported_once_not_on_every_row(tmp_path: Path) -> None:
    path = write(tmp_path, "missing.csv",
                 "originalTransactionType,originalTransactionId\n1,tx-1\n1,tx-2\n")
    assert problems(path) == ["line 1: clientReference: column is missing"]


def test_jsonl_errors_have_line_numbers_including_malformed_json(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", jsonl(
        intent("r-1"),
        '{"originalTransactionType": 1, "originalTransactionId": "tx-2",',
        "[1, 2]",
        intent("r-4", kind=0),
        {"originalTransactionType": 1, "clientReference": "r-5", "color": "red"},
    ))
    errors = problems(path)
    assert errors[0].startswith("line 2: line: not valid JSON: ")
    assert errors[1] == "line 3: line: must be a JSON object"
    assert errors[2].startswith("line 4: originalTransactionType: must be one of")
    assert "line 5: originalTransactionId: is required" in errors
    assert "line 5: color: unknown field" in errors
    assert len(errors) == 5


@pytest.mark.parametrize(
    ("name", "text"),
    [("empty.csv", ""), ("header-only.csv", HEADER), ("empty.jsonl", ""),
     ("blank.jsonl", "\n\n  \n")],
)
def test_a_file_without_intents_is_an_error(tmp_path: Path, name: str, text: str) -> None:
    assert problems(write(tmp_path, name, text)) == ["file: contains no refund intents"]


def test_identical_duplicate_references_are_kept_once(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.jsonl", jsonl(intent("r-1"), intent("r-2"), intent("r-1")))
    assert [i.client_reference for i in parse_batch(path)] == ["r-1", "r-2"]


def test_duplicate_reference_with_other_content_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.csv", HEADER + "1,tx-1,r-1,\n1,tx-2,r-2,\n1,tx-9,r-1,\n")
    assert problems(path) == [
        "line 4: clientReference: 'r-1' is also on line 2 with different originalTransactionId"
    ]


def test_non_utf8_file_is_a_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + "1,tx-\xe9,r-1,\n".encode("latin-1"))
    (error,) = problems(path)
    assert error.startswith("file: is not UTF-8 text")
