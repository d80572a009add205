"""Row 1's condition, read from PostgreSQL's statement log: the question committed first."""

from bench.stack import _committed_question

INSERT = "WITH asked AS (INSERT INTO workflow_chat_messages (thread_id) VALUES ($1)) SELECT 1"


def test_the_questions_own_commit_before_the_call_counts() -> None:
    window = [("11", "BEGIN"), ("11", INSERT), ("12", "SELECT 1"), ("11", "COMMIT")]
    assert _committed_question(window)


def test_another_backends_commit_does_not_commit_the_question() -> None:
    window = [("11", "BEGIN"), ("11", INSERT), ("12", "BEGIN"), ("12", "COMMIT")]
    assert not _committed_question(window)


def test_a_commit_before_the_insert_does_not_count() -> None:
    window = [("11", "COMMIT"), ("11", "BEGIN"), ("11", INSERT)]
    assert not _committed_question(window)


def test_no_insert_at_all_is_false() -> None:
    assert not _committed_question([("11", "BEGIN"), ("11", "COMMIT")])
