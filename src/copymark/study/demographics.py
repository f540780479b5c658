"""Optional demographic questions (the extraction study's Figure 5: gender, age, highest education).

A study asks none unless its config lists some (``copymark study create --demographics
gender,age,education``). Each question has a fixed list of choices, always including "Prefer not
to say"; no answer is required (a question left blank is stored as skipped) and there is no free
text, so nothing typed can identify a participant. Answers are stored by their short ``value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from copymark.errors import ConfigError

Question = Literal["gender", "age", "education"]
SKIPPED = "skipped"  # how a question left blank is counted in the analysis
NOT_SAID = "na"


@dataclass(frozen=True)
class DemographicQuestion:
    key: str
    legend: str
    choices: tuple[tuple[str, str], ...]  # (value, label), in display order

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.choices)

    def label(self, value: str) -> str:
        return dict(self.choices).get(value, "(skipped)" if value == SKIPPED else value)


QUESTIONS: dict[str, DemographicQuestion] = {
    "gender": DemographicQuestion(
        "gender",
        "Gender",
        (
            ("female", "Female"),
            ("male", "Male"),
            ("nonbinary", "Non-binary or another gender"),
            (NOT_SAID, "Prefer not to say"),
        ),
    ),
    "age": DemographicQuestion(
        "age",
        "Age",
        (
            ("18-24", "18-24"),
            ("25-34", "25-34"),
            ("35-44", "35-44"),
            ("45-54", "45-54"),
            ("55-64", "55-64"),
            ("65+", "65 or older"),
            (NOT_SAID, "Prefer not to say"),
        ),
    ),
    "education": DemographicQuestion(
        "education",
        "Highest completed education",
        (
            ("secondary", "Secondary school or less"),
            ("vocational", "Vocational or technical training"),
            ("bachelor", "Bachelor's degree"),
            ("master", "Master's degree"),
            ("doctorate", "Doctorate"),
            (NOT_SAID, "Prefer not to say"),
        ),
    ),
}


def check_questions(keys: list[str], where: str = "--demographics") -> list[str]:
    """``keys`` if each names a known question, once; else a :class:`ConfigError`."""
    unknown = [k for k in keys if k not in QUESTIONS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown question(s) {unknown}", hint=f"choose from {', '.join(QUESTIONS)} (comma-separated)"
        )
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: a question is named twice in {keys}")
    return list(keys)


def parse_question_list(text: str | None) -> list[str]:
    """``"gender,age"`` -> ``["gender", "age"]``, checked; empty or ``None`` -> no questions."""
    return check_questions([k.strip() for k in (text or "").split(",") if k.strip()])


def counts(rows: list[dict], questions: list[str], participants: set | None = None) -> dict[str, dict[str, int]]:
    """Per question, how many participants gave each answer (``skipped`` for blanks), in choice order.

    ``rows`` are ``{"participant", "question", "answer"}`` (answer ``""`` when skipped); only
    ``participants`` are counted when given (the participants of an analysis).
    """
    out: dict[str, dict[str, int]] = {}
    for q in questions:
        spec = QUESTIONS[q]
        c = {v: 0 for v in spec.values} | {SKIPPED: 0}
        for r in rows:
            if r["question"] == q and (participants is None or r["participant"] in participants):
                c[r["answer"] or SKIPPED] = c.get(r["answer"] or SKIPPED, 0) + 1
        out[q] = c
    return out
