"""GET /api/customers: the caller's customers with their renewal window."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import Controller, get
from sqlalchemy import select

from app.accounts.models import User
from app.context.service import days_until, number
from app.customers.models import Customer
from app.deps import CurrentUser, DbSession
from app.workflows import repository
from app.workflows.triggers import matching_workflow_id


class CustomerOut(msgspec.Struct, rename="camel"):
    """A customer in the CSM's list."""

    id: str
    key: str
    name: str
    arr: float | int | None
    renewal_date: str
    days_until_renewal: int
    csm_email: str | None
    matching_workflow_id: str | None


class CustomerList(msgspec.Struct, rename="camel"):
    """GET /api/customers."""

    customers: list[CustomerOut]


class CustomerController(Controller):
    """Customers of the caller's tenant."""

    path = "/api/customers"
    tags = ["customers"]

    @get("/")
    async def list_customers(self, db_session: DbSession, principal: CurrentUser) -> CustomerList:
        """Customers ordered by renewal date, each with the core workflow whose window holds it."""
        today = datetime.now(UTC).date()
        workflows = await repository.list_visible(db_session, principal.tenant_id)
        rows = (
            await db_session.execute(
                select(Customer, User.email)
                .outerjoin(User, User.id == Customer.csm_id)
                .order_by(Customer.renewal_date, Customer.name)
            )
        ).all()
        out = []
        for customer, csm_email in rows:
            days = days_until(customer.renewal_date, today)
            out.append(
                CustomerOut(
                    id=str(customer.id),
                    key=customer.external_key,
                    name=customer.name,
                    arr=number(customer.arr),
                    renewal_date=customer.renewal_date.isoformat(),
                    days_until_renewal=days,
                    csm_email=csm_email,
                    matching_workflow_id=matching_workflow_id(workflows, days),
                )
            )
        return CustomerList(customers=out)
