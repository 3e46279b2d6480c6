"""The two retrieval development sets of `bench/retrieval.py`: what is ingested, what is asked, how it is scored.

- `longmemeval`: LongMemEval dev60 (`longmemeval_s_dev60.json.gz`), one namespace per question (its own
  haystack), one memory per turn; gold = sessions (and answer turns). Questions are asked at their
  `question_date`.
- `beam`: BEAM 100K (`beam_dev.json.gz`, `BEAM_README.md`), one namespace per conversation shared by its
  16–18 questions, one memory per message; gold = messages, scored as `score_beam.py` does. Questions
  are asked after the conversation's last session.
Every memory carries its date as ISO 8601 in `metadata.date`, the memory's time for recency and time
expressions in queries.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

DATA = Path("/work/shared/data")
MAX_CHARS = 32_000  # the API's limit on one memory


@dataclass
class Question:
    qid: str
    unit: str  # the namespace key: its haystack (LongMemEval) or conversation (BEAM)
    text: str
    category: str
    as_of: str | None
    gold: set[str]
    answers: set[tuple[str, int]] = field(default_factory=set)  # LongMemEval answer turns


def _dcg(rels: list[int]) -> float:
    return sum(r / math.log2(i + 2) for i, r in enumerate(rels))


def _lme_date(raw: str) -> str:
    """`2023/04/30 (Sun) 13:59` as ISO 8601."""
    return datetime.strptime(raw.split(" (")[0] + " " + raw.rsplit(" ", 1)[1], "%Y/%m/%d %H:%M").isoformat()


class LongMemEval:
    name = "longmemeval"
    metrics = ["recall_any@5", "recall_any@10", "recall_all@5", "recall@10", "ndcg@10", "turn_recall@10"]
    headers = ["session R_any@5", "R_any@10", "R_all@5", "R@10", "nDCG@10", "turn R@10"]

    def __init__(self, limit: int | None = None, stride: int = 1) -> None:
        with gzip.open(DATA / "longmemeval_s_dev60.json.gz", "rt", encoding="utf-8") as fh:
            self.records = json.load(fh)[::stride][:limit]

    def units(self) -> dict[str, list[dict]]:
        """One memory per turn, per question's haystack."""
        out = {}
        for record in self.records:
            items = []
            for session_id, date, turns in zip(record["haystack_session_ids"], record["haystack_dates"],
                                               record["haystack_sessions"], strict=True):
                for i, turn in enumerate(turns):
                    content = turn["content"].strip()[:MAX_CHARS]
                    if content:
                        items.append({"content": content, "metadata": {
                            "session_id": session_id, "turn": i, "date": _lme_date(date), "role": turn["role"]}})
            out[record["question_id"]] = items
        return out

    def questions(self) -> list[Question]:
        out = []
        for record in self.records:
            answers = set()
            for session_id, turns in zip(record["haystack_session_ids"], record["haystack_sessions"], strict=True):
                for i, turn in enumerate(turns):
                    gold = session_id in record["answer_session_ids"]
                    if turn.get("has_answer") and gold and turn["content"].strip():
                        answers.add((session_id, i))
            out.append(Question(record["question_id"], record["question_id"], record["question"],
                                record["question_type"], _lme_date(record["question_date"]),
                                set(record["answer_session_ids"]), answers))
        return out

    def score(self, question: Question, hits: list[dict]) -> dict[str, float]:
        sessions: list[str] = []
        for hit in hits:
            sid = hit["memory"]["metadata"]["session_id"]
            if sid not in sessions:
                sessions.append(sid)
        gold = question.gold
        top_turns = {(h["memory"]["metadata"]["session_id"], h["memory"]["metadata"]["turn"]) for h in hits[:10]}
        rels = [int(s in gold) for s in sessions[:10]]
        return {
            "recall_any@5": float(any(s in gold for s in sessions[:5])),
            "recall_any@10": float(any(rels)),
            "recall_all@5": float(gold <= set(sessions[:5])),
            "recall@10": sum(rels) / len(gold),
            "ndcg@10": _dcg(rels) / _dcg([1] * min(10, len(gold))),
            "turn_recall@10": (len(top_turns & question.answers) / len(question.answers)
                               if question.answers else float("nan")),
        }


class Beam:
    name = "beam"
    metrics = ["recall@5", "recall@10", "recall_any@5", "ndcg@10"]
    headers = ["R@5", "R@10", "any@5", "nDCG@10"]

    def __init__(self, limit: int | None = None, stride: int = 1) -> None:
        with gzip.open(DATA / "beam_dev.json.gz", "rt", encoding="utf-8") as fh:
            self.records = json.load(fh)[::stride][:limit]

    def units(self) -> dict[str, list[dict]]:
        """One memory per message, per conversation, in conversation order."""
        out = {}
        for record in self.records:
            items = []
            for m in record["messages"]:
                content = m["content"].strip()[:MAX_CHARS]
                if content:
                    items.append({"content": content, "metadata": {
                        "conversation_id": record["conversation_id"], "message_id": m["id"], "session": m["session"],
                        "turn": m["turn"], "date": m["date"], "role": m["role"]}})
            out[record["conversation_id"]] = items
        return out

    def questions(self) -> list[Question]:
        # Asked after the last session: at its end of day.
        return [Question(q["question_id"], record["conversation_id"], q["question"], q["category"],
                         record["session_dates"][-1] + "T23:59:59", set(q["evidence_ids"]))
                for record in self.records for q in record["questions"]]

    def score(self, question: Question, hits: list[dict]) -> dict[str, float]:
        ranked: list[str] = []
        for hit in hits:
            mid = hit["memory"]["metadata"]["message_id"]
            if mid not in ranked:
                ranked.append(mid)
        gold = question.gold
        rels = [int(x in gold) for x in ranked]
        return {"recall@5": sum(rels[:5]) / len(gold), "recall@10": sum(rels[:10]) / len(gold),
                "recall_any@5": float(any(rels[:5])), "ndcg@10": _dcg(rels[:10]) / _dcg([1] * min(len(gold), 10))}


DATASETS = {"longmemeval": LongMemEval, "beam": Beam}
