"""Build a customer's workflow context (the spec's Context API shape) with computed fields."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Tenant, User
from app.customers.models import AccountTeamMember, Customer
from app.errors import NotFound


def number(value: Decimal | int | float | None) -> int | float | None:
    """Money as a JSON number: whole amounts as ints."""
    if value is None:
        return None
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else as_float


def days_until(renewal: date, today: date) -> int:
    """Calendar days from today to the renewal date (negative once it has passed)."""
    return (renewal - today).days


async def find_customer(session: AsyncSession, customer_ref: str) -> Customer:
    """A customer of the caller's tenant by id or by its key ('acme'); else 404."""
    try:
        condition = Customer.id == uuid.UUID(customer_ref)
    except ValueError:
        condition = Customer.external_key == customer_ref
    customer = (await session.scalars(select(Customer).where(condition))).one_or_none()
    if customer is None:
        raise NotFound(f"customer '{customer_ref}' not found")
    return customer


async def build_context(
    session: AsyncSession, customer: Customer, today: date | None = None
) -> dict[str, Any]:
    """The template context of a customer: customer, csm, workflow, company, accountTeam."""
    today = today or datetime.now(UTC).date()
    csm = await session.get(User, customer.csm_id) if customer.csm_id else None
    tenant = await session.get(Tenant, customer.tenant_id)
    team = (
        await session.scalars(
            select(AccountTeamMember)
            .where(AccountTeamMember.customer_id == customer.id)
            .order_by(AccountTeamMember.role, AccountTeamMember.email)
        )
    ).all()
    days = days_until(customer.renewal_date, today)
    by_role: dict[str, str] = {}
    for member in team:
        by_role.setdefault(member.role, member.email)
    emails = [
        by_role.get("ae"),
        by_role.get("sa"),
        *(m.email for m in team),
        csm.email if csm else None,
    ]
    company = dict(tenant.company) if tenant else {}
    return {
        "customer": {
            "id": str(customer.id),
            "name": customer.name,
            "arr": number(customer.arr),
            "renewalDate": customer.renewal_date.isoformat(),
            "hasAccountPlan": customer.has_account_plan,
            "industry": customer.industry,
            "healthScore": customer.health_score,
        },
        "csm": {
            "email": csm.email if csm else None,
            "name": csm.name if csm else None,
            "manager": csm.manager_email if csm else None,
        },
        "workflow": {
            "daysUntilRenewal": days,
            # Calendar hours, consistent with daysUntilRenewal (10 days -> 240 hours).
            "hoursUntilRenewal": days * 24,
            "renewalARR": number(customer.arr),
            "daysOverdue": max(0, -days),
        },
        "company": {
            "name": company.get("name", tenant.name if tenant else None),
            "vpCustomerSuccess": company.get("vpCustomerSuccess"),
            "ceo": company.get("ceo"),
        },
        "accountTeam": {
            "ae": by_role.get("ae"),
            "sa": by_role.get("sa"),
            "allEmails": ",".join(dict.fromkeys(e for e in emails if e)),
        },
    }
