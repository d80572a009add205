"""HTTP endpoints of token usage (analysts and admins): buckets, a thread's calls, CSV export."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from app.auth.guards import analysts
from app.deps import CurrentUser, DbSession
from app.errors import BadRequest
from app.usage import service
from app.usage.schemas import ThreadUsage, UsagePage, UsageParams

_LIST = "Repeat the parameter or separate values with commas."


async def provide_usage_params(
    start_time: Annotated[int | None, QueryParameter(
        name="startTime", description="Start of the range, Unix seconds (inclusive); buckets"
        " are aligned to it. Required for /api/usage.")] = None,
    end_time: Annotated[int | None, QueryParameter(
        name="endTime", description="End of the range, Unix seconds (exclusive); default now.")
    ] = None,
    bucket_width: Annotated[str, QueryParameter(
        name="bucketWidth", description="1h or 1d.")] = "1d",
    group_by: Annotated[list[str] | None, QueryParameter(
        name="groupBy", description="Any of model, provider, user, customer, workflow, step,"
        f" branchType, thread, tool. {_LIST}")] = None,
    limit: Annotated[int | None, QueryParameter(
        description="Buckets per page: 1h default 24 (max 168), 1d default 7 (max 31).")] = None,
    page: Annotated[str | None, QueryParameter(
        description="The nextPage cursor of the previous page.")] = None,
    models: Annotated[list[str] | None, QueryParameter(description=_LIST)] = None,
    providers: Annotated[list[str] | None, QueryParameter(description=_LIST)] = None,
    user_ids: Annotated[list[str] | None, QueryParameter(name="userIds")] = None,
    customer_ids: Annotated[list[str] | None, QueryParameter(name="customerIds")] = None,
    workflow_ids: Annotated[list[str] | None, QueryParameter(name="workflowIds")] = None,
    step_ids: Annotated[list[str] | None, QueryParameter(name="stepIds")] = None,
    branch_types: Annotated[list[str] | None, QueryParameter(name="branchTypes")] = None,
    thread_ids: Annotated[list[str] | None, QueryParameter(name="threadIds")] = None,
    tool_names: Annotated[list[str] | None, QueryParameter(name="toolNames")] = None,
) -> UsageParams:
    """The usage query parameters, shared by the report and the export."""
    return UsageParams(
        start_time=start_time, end_time=end_time, bucket_width=bucket_width, group_by=group_by,
        limit=limit, page=page, models=models, providers=providers, user_ids=user_ids,
        customer_ids=customer_ids, workflow_ids=workflow_ids, step_ids=step_ids,
        branch_types=branch_types, thread_ids=thread_ids, tool_names=tool_names,
    )


class UsageController(Controller):
    """Token usage of the caller's tenant, read from the ledger."""

    path = "/api/usage"
    tags = ["usage"]
    guards = [analysts]
    dependencies = {"usage_params": Provide(provide_usage_params)}

    @get("/")
    async def usage(self, db_session: DbSession, principal: CurrentUser,
                    usage_params: NamedDependency[UsageParams]) -> UsagePage:
        """Token, request and cost sums per time bucket and group (OpenAI's bucket shape)."""
        query = service.parse_usage_query(usage_params)
        buckets = await service.usage_buckets(db_session, principal.tenant_id, query)
        next_page = service.next_page(query)
        return UsagePage(data=buckets, has_more=next_page is not None, next_page=next_page)

    @get("/threads/{thread_id:str}")
    async def thread(self, db_session: DbSession, principal: CurrentUser,
                     thread_id: FromPath[str]) -> ThreadUsage:
        """Every provider call of a thread with its provenance; 404 for another tenant's."""
        return await service.thread_usage(db_session, principal.tenant_id, thread_id)

    @get("/export")
    async def export(
        self, request: Request[Any, Any, Any], principal: CurrentUser,
        usage_params: NamedDependency[UsageParams],
        export_format: Annotated[str, QueryParameter(name="format",
                                                     description="csv (the only format).")] = "csv",
    ) -> Stream:
        """Ledger rows matching the filters as CSV, streamed (startTime defaults to 1970)."""
        errors: list[dict[str, str]] = []
        if export_format != "csv":
            errors.append({"key": "format", "message": "only csv is supported"})
        window = service.parse_time_range(usage_params, errors, start_required=False)
        filters = service.parse_filters(usage_params, errors)
        if errors:
            raise BadRequest("invalid export query", errors=errors)
        name = f"usage-{int(window.start.timestamp())}-{int(window.end.timestamp())}.csv"
        return Stream(
            service.csv_export(request.app.state.sessionmaker, principal.tenant_id, window,
                               filters),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
