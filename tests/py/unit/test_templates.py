"""Where a profile's names and values may land in the guard's SQL templates
(sql/**/*.sql, rendered by orchestrator/render.py), and what a profile may
hold at all. A value is quoted by the server (quote_ident, quote_literal),
which is sound in code only: inside a comment, a string literal or a quoted
identifier, the quoted text would end it (a line break ends a "--" comment)
or be taken apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator import db
from orchestrator.profile import ProfileError, parse

TEMPLATES = sorted(db.sql_dir().rglob("*.sql"))
EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
# An expression that prints a profile value as it is (not a helper's code).
VALUE = re.compile(r"\{\{\s*[\w.]+\s*\}\}")
DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def contexts(text: str) -> list[tuple[int, str]]:
    """(offset, context) of each template expression: "code", "comment",
    "string" or "identifier". Dollar-quoted bodies are code (function
    bodies, DO blocks), lexed like the rest."""
    found: list[tuple[int, str]] = []
    state, i = "code", 0
    while i < len(text):
        if text.startswith("{{", i):
            end = text.index("}}", i) + 2
            found.append((i, state))
            i = end
            continue
        if text.startswith("{%", i) or text.startswith("{#", i):
            i = text.index("%}" if text[i + 1] == "%" else "#}", i) + 2
            continue
        c = text[i]
        if state == "code":
            if text.startswith("--", i):
                state = "comment"
            elif text.startswith("/*", i):
                state = "block"
            elif c == "'":
                state = "string"
            elif c == '"':
                state = "identifier"
            elif c == "$" and (m := DOLLAR_TAG.match(text, i)):
                i = m.end()
                continue
        elif (state == "comment" and c == "\n") or (state == "block" and text.startswith("*/", i)):
            i += 1 if state == "comment" else 2
            state = "code"
            continue
        elif (state == "string" and c == "'") or (state == "identifier" and c == '"'):
            if text.startswith(c * 2, i):
                i += 2
                continue
            state = "code"
        i += 1
    return [(offset, "comment" if s == "block" else s) for offset, s in found]


def test_the_lexer_tells_the_contexts_apart() -> None:
    sample = ("SELECT {{ a }}, '{{ b }}', \"x{{ c }}\" -- {{ d }}\n"
              "/* {{ e }} */ $f$ x = {{ f }}; y := 'it''s {{ g }}'; $f$ {{ h }}")
    assert [s for _, s in contexts(sample)] == ["code", "string", "identifier", "comment",
                                               "comment", "code", "string", "code"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(db.sql_dir())))
def test_every_template_expression_is_in_code(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    misplaced = [f"line {text.count(chr(10), 0, at) + 1}: {context}"
                 for at, context in contexts(text) if context != "code"]
    assert not misplaced, f"{path.name}: template expressions outside code: {misplaced}"
    # A quoted name glued to other characters would be another name (or a
    # syntax error), not the value.
    glued = [m.group(0) for m in VALUE.finditer(text)
             if re.match(r"[\w\"'$]", text[m.start() - 1:m.start()] or " ")
             or re.match(r"[\w\"'$]", text[m.end():m.end() + 1] or " ")]
    assert not glued, f"{path.name}: values glued to other text: {glued}"


def test_no_template_expression_in_a_line_comment() -> None:
    offenders = [f"{p.name}: {line.strip()}" for p in TEMPLATES
                 for line in p.read_text(encoding="utf-8").splitlines()
                 if re.search(r"--.*(\{\{|\{%)", line)]
    assert not offenders


@pytest.mark.parametrize("toml, key", [
    ('[calls]\ncall_id = "x\\nCOPY (SELECT) TO PROGRAM \'id\';--"', "calls.call_id"),
    ('[calls]\nappointment_links = ["a\\rb"]', "calls.appointment_links.0"),
    ('[appointments]\nbooking_id = "tab\\there"', "appointments.booking_id"),
    ('[link_status]\nlinked = "linked\\u2028"', "link_status.linked"),
    ('[appointments]\nvoice_agent_sources = ["\\u001b[31mred"]',
     "appointments.voice_agent_sources.0"),
    ('time_zone = "UTC\\u0000"', "time_zone"),
    ('name = "a\\u202eb"', "name"),
])
def test_a_profile_value_that_does_not_print_is_refused(toml: str, key: str) -> None:
    with pytest.raises(ProfileError) as refused:
        parse(toml, "hostile.toml")
    assert refused.value.lines == [f"profile hostile.toml: {key}: must be printable: no control "
                                   f"character or line break ({parse_value(toml)!r})"]


def parse_value(toml: str) -> str:
    import tomllib

    data = tomllib.loads(toml)
    while isinstance(data, dict):
        data = next(iter(data.values()))
    return data[0] if isinstance(data, list) else data


def test_hostile_but_printable_values_are_accepted() -> None:
    profile = parse('[calls]\ncall_id = "it\'s -- a \\"name\\" /* ; */ \\\\ ñ"\n'
                    '[link_status]\nlinked = "l\'); DROP TABLE calls; --"', "ok.toml")
    assert profile.calls.call_id == 'it\'s -- a "name" /* ; */ \\ ñ'
