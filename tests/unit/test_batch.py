"""Batch files are validated whole, with the file's own line numbers, before anything is sent."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest

from refunds.batch import MAX_LISTED, iter_intents, parse_batch, scan_batch, spool
from refunds.errors import BatchError, InvalidIntentError

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
        "line 5: clientReference: U+0020 SPACE at position 4 is not allowed (allowed: ASCII "
        "letters, digits and - _ . : @ + =)",
    ]


def test_csv_line_numbers_count_a_quoted_cell_that_spans_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "multi.csv", HEADER + '1,"tx\nsplit",r-1,\nx,tx-2,r-2,\n')
    errors = problems(path)
    assert len(errors) == 2
    # The record of lines 2-3 names its first line; a newline is no part of an id.
    assert errors[0].startswith("line 2: originalTransactionId: U+000A LINE FEED at position 3")
    assert errors[1].startswith("line 4: originalTransactionType: ")


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


def test_cp1252_byte_names_its_line_and_the_other_lines_are_still_checked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cp1252.csv"
    path.write_bytes(
        HEADER.encode()
        + b"1,tx-1,ref-\xe9,\n"  # what Excel's "CSV" (not "CSV UTF-8") writes for an e-acute
        + b"9,tx-2,r-2,\n"
        + b"1,tx-3,r-3,caf\xe9\n"
    )
    assert problems(path) == [
        "line 2: line: not valid UTF-8 (byte 0xe9 at column 12); save the file as UTF-8 "
        "(in Excel: CSV UTF-8)",
        "line 3: originalTransactionType: must be one of 1 (crypto deposit), 2 (crypto "
        "collection), 3 (crypto checkout)",
        "line 4: line: not valid UTF-8 (byte 0xe9 at column 15); save the file as UTF-8 "
        "(in Excel: CSV UTF-8)",
    ]


def test_non_utf8_jsonl_line_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        jsonl(intent("r-1")).encode()
        + b'{"originalTransactionType": 1, "originalTransactionId": "t\xe9", '
        b'"clientReference": "r-2"}\n'
    )
    (error,) = problems(path)
    assert error.startswith("line 2: line: not valid UTF-8 (byte 0xe9 at column 59)")


def test_an_unreadable_header_stops_the_rows_without_noise(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes(b"clientR\xe9ference,originalTransactionId\nr-1,tx-1\n")
    (error,) = problems(path)
    assert error.startswith("line 1: line: not valid UTF-8")


EXCEL_HINT = (
    "looks like Excel scientific notation: Excel turned a long number into an approximation and "
    "the digits are lost. Format the column as Text in Excel (before typing or pasting the ids) "
    "and export the file again"
)


@pytest.mark.parametrize("value", ["9.91214E+15", "1.2e+5", "9,91214E+15", "1E+15", "4.5e-3"])
def test_excel_scientific_notation_in_the_transaction_id_is_refused(
    tmp_path: Path, value: str
) -> None:
    cell = f'"{value}"' if "," in value else value
    path = write(tmp_path, "excel.csv", HEADER + f"1,{cell},r-1,\n1,tx-2,r-2,\n")
    assert problems(path) == [f"line 2: originalTransactionId: {value!r} {EXCEL_HINT}"]


def test_excel_notation_in_jsonl_and_in_the_reference_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "excel.jsonl", jsonl(
        intent("r-1", txn="9.91214E+15"), intent("1.2E+5", txn="tx-2")))
    assert problems(path) == [
        f"line 1: originalTransactionId: '9.91214E+15' {EXCEL_HINT}",
        f"line 2: clientReference: '1.2E+5' {EXCEL_HINT}",
    ]


@pytest.mark.parametrize("value", ["12e45", "tx-1.2E+5", "9912140000000000", "abcE+15x"])
def test_ids_that_only_resemble_a_number_are_accepted(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, "fine.csv", HEADER + f"1,{value},r-1,\n")
    assert [i.original_transaction_id for i in parse_batch(path)] == [value]


def test_every_problem_is_reported_at_once_across_kinds(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_bytes(
        HEADER.encode()
        + b"1,9.91214E+15,r-1,\n"
        + b"1,tx-2,ref-\xe9,\n"
        + b"5,tx-3,r-3,\n"
        + b"1,tx-4,r-4\n"
        + b"1,tx-5,r-5,\n1,tx-6,r-5,\n"
    )
    lines = [e.split(":", 1)[0] for e in problems(path)]
    assert lines == ["line 2", "line 3", "line 4", "line 5", "line 7"]


def test_identical_rows_are_reported_as_duplicates_and_yielded_once(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.csv",
                 HEADER + "1,tx-1,r-1,\n1,tx-2,r-2,\n1,tx-1,r-1,\n1,tx-1,r-1,\n1,tx-2,r-2,\n")
    report = scan_batch(path)
    assert report.ok
    assert (report.rows, report.intents, report.duplicate_count) == (5, 2, 3)
    assert [(d.line, d.first_line, d.client_reference) for d in report.duplicates] == [
        (4, 2, "r-1"), (5, 2, "r-1"), (6, 3, "r-2"),
    ]
    assert [i.client_reference for i in iter_intents(path)] == ["r-1", "r-2"]


def test_same_reference_other_content_in_jsonl_names_both_lines_and_fields(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "conflict.jsonl", jsonl(
        intent("r-1"), intent("r-2"), intent("r-1", txn="tx-9", kind=2),
        intent("r-2", refundAddress="addr")))
    assert problems(path) == [
        "line 3: clientReference: 'r-1' is also on line 1 with different "
        "originalTransactionId, originalTransactionType",
        "line 4: clientReference: 'r-2' is also on line 2 with different refundAddress",
    ]


def test_a_jsonl_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "twice.jsonl", jsonl(
        intent("r-1"),
        '{"originalTransactionType": 1, "originalTransactionId": "tx-2", '
        '"clientReference": "r-2", "clientReference": "r-3"}'))
    assert problems(path) == ["line 2: clientReference: appears twice in the object"]


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_jsonl_lines_split_on_newline_only(tmp_path: Path, char: str) -> None:
    raw = '{"originalTransactionType": 1, "originalTransactionId": "tx-1", ' \
          f'"clientReference": "r-1", "refundAddress": "a{char}b"}}\n'
    path = write(tmp_path, "sep.jsonl", raw + jsonl(intent("r-2", kind=9)))
    # Two lines, not three: the separator is refused inside line 1's address, and line 2 is
    # line 2.
    errors = problems(path)
    assert len(errors) == 2
    assert errors[0].startswith(f"line 1: refundAddress: U+{ord(char):04X} ")
    assert errors[1].startswith("line 2: originalTransactionType: must be one of")


@pytest.mark.parametrize("char", ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e"])
def test_a_raw_control_character_in_a_json_string_stays_on_its_line(
    tmp_path: Path, char: str
) -> None:
    raw = '{"originalTransactionType": 1, "originalTransactionId": "tx-1", ' \
          f'"clientReference": "r-1", "refundAddress": "a{char}b"}}\n'
    path = write(tmp_path, "ff.jsonl", raw + jsonl(intent("r-2", kind=9)))
    errors = problems(path)
    assert errors[0].startswith("line 1: line: not valid JSON: Invalid control character")
    assert errors[1].startswith("line 2: originalTransactionType: must be one of")
    assert len(errors) == 2


def test_crlf_bom_and_quoted_cells_still_work(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"\xef\xbb\xbfclientReference,originalTransactionId,originalTransactionType,"
        b"refundAddress\r\n"
        b'r-1,"tx:1",1,"a,""quoted"""\r\n\r\nr-2,tx-2,2,\r\n'
    )
    intents = parse_batch(path)
    assert [(i.client_reference, i.original_transaction_id) for i in intents] == [
        ("r-1", "tx:1"), ("r-2", "tx-2"),
    ]
    assert intents[0].refund_address == 'a,"quoted"'
    crlf = write(tmp_path, "crlf.jsonl", jsonl(intent("r-1")).replace("\n", "\r\n") + "\r\n")
    assert [i.client_reference for i in parse_batch(crlf)] == ["r-1"]


def test_problems_are_capped_for_display_and_all_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", jsonl(*[intent(f"r-{n}", kind=9) for n in range(250)]))
    with pytest.raises(BatchError) as caught:
        parse_batch(path)
    assert len(caught.value.errors) == MAX_LISTED
    assert caught.value.total == 250
    assert caught.value.errors[-1].line == MAX_LISTED
    again = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own bytes
    assert (len(again.errors), again.total) == (MAX_LISTED, 250)


def test_a_line_longer_than_the_limit_is_refused_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("refunds.batch.read.MAX_LINE_BYTES", 200)
    path = write(tmp_path, "long.jsonl",
                 jsonl(intent("r-1"), intent("r-2", refundAddress="x" * 1000), intent("r-3")))
    assert problems(path) == ["line 2: line: longer than 200 bytes; skipped"]


def test_the_reader_never_reads_the_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "ok.jsonl", jsonl(*[intent(f"r-{n}") for n in range(50)]))
    real_open = Path.open

    class NoWholeReads(io.BufferedReader):
        def read(self, size: int | None = -1, /) -> bytes:
            assert size is not None and size >= 0, "read() of the whole file"
            return super().read(size)

        def readlines(self, hint: int = -1, /) -> list[bytes]:
            raise AssertionError("readlines() of the whole file")

    def guarded(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if mode == "rb":
            return NoWholeReads(io.FileIO(self, "rb"))
        return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", guarded)
    assert scan_batch(path).intents == 50
    assert len(list(iter_intents(path))) == 50


def test_spooled_stdin_reads_like_the_file(tmp_path: Path) -> None:
    data = jsonl(intent("r-1"), intent("r-2")).encode()
    spooled = spool(io.BytesIO(data), tmp_path)
    try:
        assert spooled.read_bytes() == data
        assert [i.client_reference for i in parse_batch(spooled, "jsonl")] == ["r-1", "r-2"]
    finally:
        spooled.unlink()


def test_stdin_needs_a_format(tmp_path: Path) -> None:
    assert problems(Path("-")) == [
        "file: cannot tell the format from standard input: name it .csv, .jsonl or .ndjson, "
        "or pass --format csv|jsonl"
    ]


def test_the_reference_table_keeps_the_first_occurrence_of_every_key(tmp_path: Path) -> None:
    from refunds.batch.references import ReferenceTable  # noqa: PLC0415 - tested on its own

    keys = [(n << 20) | 5 for n in range(1, 3000)] + [-(2**63), 2**63 - 1]  # SQLite's extremes
    with ReferenceTable(tmp_path) as table:
        for line, key in enumerate(keys, start=1):
            assert table.first(key, key ^ 0xFFFF, line) is None
        assert all(
            table.first(k, 0, 99_999) == (k ^ 0xFFFF, n) for n, k in enumerate(keys, start=1)
        )
        assert table.first(7, 1, 1) is None
        assert len(list(tmp_path.iterdir())) == 1  # the database, in its own directory
    assert list(tmp_path.iterdir()) == []  # dropped when closed


def test_duplicates_and_conflicts_are_found_across_a_large_file(tmp_path: Path) -> None:
    rows = [intent(f"r-{n}", txn=f"tx-{n}") for n in range(20_000)]
    rows += [intent("r-17", txn="tx-17"), intent("r-19999", txn="tx-other")]
    path = write(tmp_path, "large.jsonl", jsonl(*rows))
    report = scan_batch(path)
    assert (report.intents, report.duplicate_count) == (20_000, 1)
    assert [(d.line, d.first_line) for d in report.duplicates] == [(20_001, 18)]
    assert [str(p) for p in report.problems] == [
        "line 20002: clientReference: 'r-19999' is also on line 20000 with different "
        "originalTransactionId"
    ]


def test_a_file_changed_after_validation_is_refused_before_anything_is_yielded(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "b.jsonl", jsonl(intent("r-1"), intent("r-2")))
    report = scan_batch(path)
    assert report.ok and report.stamp is not None
    with path.open("a", encoding="utf-8") as out:  # an export job appends a row meanwhile
        out.write(jsonl(intent("r-3", txn="tx-unvalidated")))
    intents = iter_intents(path, report.format, expect=report.stamp)
    with pytest.raises(BatchError) as caught:
        next(intents)
    assert [str(e) for e in caught.value.errors] == [
        "file: changed since it was validated; nothing was submitted from it"
    ]


def test_a_file_whose_bytes_changed_under_the_same_size_and_time_is_refused(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "b.jsonl", jsonl(intent("r-1", txn="tx-1"), intent("r-2", txn="tx-2")))
    report = scan_batch(path)
    assert report.stamp is not None
    stat = path.stat()
    path.write_text(jsonl(intent("r-1", txn="tx-1"), intent("r-2", txn="tx-9")), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time: bytes differ
    with pytest.raises(BatchError) as caught:
        list(iter_intents(path, report.format, expect=report.stamp))
    assert "changed while it was being submitted" in str(caught.value.errors[0])


def test_an_unchanged_file_passes_the_second_pass_check(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", HEADER + "1,tx-1,r-1,\n1,tx-1,r-1,\n2,tx-2,r-2,\n")
    report = scan_batch(path)
    assert (report.intents, report.duplicate_count) == (2, 1)
    got = list(iter_intents(path, report.format, expect=report.stamp))
    assert [i.client_reference for i in got] == ["r-1", "r-2"]
