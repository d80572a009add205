"""Customers, contracts and account teams."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, server_now, uuid_pk


class Customer(Base):
    """A customer account with an upcoming (or missed) renewal."""

    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    external_key: Mapped[str]
    name: Mapped[str]
    arr: Mapped[Decimal]
    renewal_date: Mapped[date]
    has_account_plan: Mapped[bool] = mapped_column(default=False)
    industry: Mapped[str | None]
    health_score: Mapped[int | None]
    csm_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = server_now()
    updated_at: Mapped[datetime] = server_now()


class Contract(Base):
    """One contract term of a customer."""

    __tablename__ = "contracts"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"))
    contract_number: Mapped[str]
    plan: Mapped[str | None]
    seats: Mapped[int | None]
    arr: Mapped[Decimal]
    start_date: Mapped[date]
    end_date: Mapped[date]
    status: Mapped[str]
    auto_renew: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = server_now()


class AccountTeamMember(Base):
    """A person on a customer's account team (AE, SA, ...)."""

    __tablename__ = "account_teams"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"))
    role: Mapped[str]
    name: Mapped[str]
    email: Mapped[str]
