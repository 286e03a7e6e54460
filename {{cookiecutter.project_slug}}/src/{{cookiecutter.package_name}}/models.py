"""ORM models. Each change here needs an Alembic revision (see README)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, String, func
from sqlalchemy.orm import Mapped, mapped_column

from {{ cookiecutter.package_name }}.db import Base


class Item(Base):
    __tablename__ = "items"
    # An ORM insert (db.SessionDep) gets the server-made id and created_at back from
    # its INSERT's RETURNING: no second round trip, no refresh() to read them.
    # (A plain dict, as SQLAlchemy declares it; it is read once, when the class is mapped.)
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    # BIGINT identity: a 32-bit SERIAL runs out at 2.1 billion rows, and identity
    # columns are the SQL-standard form PostgreSQL recommends over serial.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
{%- if cookiecutter.use_worker %}
    # Set by the background job that POST /items enqueues (jobs.py); None until it ran.
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
{%- endif %}
