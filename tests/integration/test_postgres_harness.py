"""The PostgreSQL harness works: peewee reaches a fresh database and round-trips a row."""

from __future__ import annotations

import peewee as pw
import pytest
from playhouse.db_url import connect


def test_peewee_round_trip(postgres_db_url: str) -> None:
    db = connect(postgres_db_url)
    assert isinstance(db, pw.PostgresqlDatabase)

    class Note(pw.Model):
        title = pw.CharField(unique=True)
        body = pw.BlobField()

        class Meta:
            database = db

    try:
        db.create_tables([Note])
        Note.create(title="hello", body=b"\x00\xffbytes")
        row = Note.get(Note.title == "hello")
        assert bytes(row.body) == b"\x00\xffbytes"
        assert Note.select().count() == 1
        with pytest.raises(pw.IntegrityError), db.atomic():
            Note.create(title="hello", body=b"")
    finally:
        db.close()


def test_each_test_gets_an_empty_database(postgres_db_url: str, postgres_url: str) -> None:
    assert postgres_db_url != postgres_url
    db = connect(postgres_db_url)
    try:
        assert db.get_tables() == []
    finally:
        db.close()
