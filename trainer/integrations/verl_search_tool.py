"""Search-R1's search as a verl tool (``verl.tools.base_tool.BaseTool``), against searchgym's retriever.

verl 0.9 removed its in-tree ``verl.tools.search_tool.SearchTool`` (verl-project/verl #6302; its
docs now say the class "must now be provided by users"). This is that class for a verl
multi-turn (``tool_agent``) rollout: same tool-config keys (``retrieval_service_url``, ``topk``,
``timeout``) and the same ``query_list`` argument, so verl's Search-R1 tool configs work with only
``class_name`` changed. Requests go through searchgym's `RetrieverClient` (its one retry policy) to
``agent-server retriever`` or any Search-R1 compatible ``/retrieve``; each query's passages are
rendered as Search-R1 renders them (`search_env.protocol.format_passages`), queries separated by
``\\n---\\n`` as verl's former tool did.
"""

from __future__ import annotations

from typing import Any

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
from verl.utils.rollout_trace import rollout_trace_op

from search_env.protocol import format_passages
from search_env.retriever_client import RetrieverClient, RetrieverRequestError, RetrieverUnavailable

#: The schema verl's Search-R1 example declared (examples/sglang_multiturn/config/tool_config).
SEARCH_TOOL_SCHEMA = OpenAIFunctionToolSchema.model_validate(
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Searches the web for relevant information based on the given query.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query_list": {
                        "type": "array",
                        "description": "A list of fully-formed semantic queries. The tool will return search "
                        "results for each query.",
                    }
                },
                "required": ["query_list"],
            },
        },
    }
)
QUERY_SEPARATOR = "\n---\n"


class SearchTool(BaseTool):
    """``search(query_list)``: the top-``topk`` passages per query from the retrieval server.

    Tool config (``config:`` in verl's tool yaml): ``retrieval_service_url`` (required; the server's
    base URL or its ``/retrieve`` URL), ``topk`` (default 3, > 0), ``timeout`` (seconds per request,
    default 30, > 0). Other keys of verl's former tool (``num_workers``, ``rate_limit``) are accepted
    and unused: the retriever bounds its own concurrency. Raises ValueError on a bad config.

    A bad call (no ``query_list``, or not a list of non-empty strings) or a failed search (server
    refused or unreachable after the client's retries) is answered in the tool response, with tool
    reward 0, so the policy reads what went wrong; the rollout goes on. Metrics per call:
    ``query_count``, ``total_results``, ``status`` (``"success"``, ``"bad_arguments"``, ``"error"``).
    """

    def __init__(self, config: dict[str, Any], tool_schema: OpenAIFunctionToolSchema | None = None):
        super().__init__(config, tool_schema or SEARCH_TOOL_SCHEMA)
        url = config.get("retrieval_service_url")
        # Several retrieval replicas: a list, or one comma-separated string (RetrieverClient routes over them).
        urls_ok = isinstance(url, str) or (isinstance(url, list) and all(isinstance(u, str) for u in url))
        if not url or not urls_ok:
            raise ValueError(
                "the search tool's config needs retrieval_service_url (e.g. http://127.0.0.1:8000, or a list of "
                "replicas)"
            )
        self.topk = config.get("topk", 3)
        self.timeout = config.get("timeout", 30)
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk <= 0:
            raise ValueError(f"topk={self.topk!r} must be a positive int")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float) or self.timeout <= 0:
            raise ValueError(f"timeout={self.timeout!r} must be a number of seconds > 0")
        self.client = RetrieverClient(url, timeout=float(self.timeout))

    @rollout_trace_op
    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict[str, Any]]:
        queries = parameters.get("query_list")
        if not isinstance(queries, list) or not queries or not all(isinstance(q, str) and q.strip() for q in queries):
            text = "Error: query_list must be a non-empty list of non-empty strings."
            return ToolResponse(text=text), 0.0, {"query_count": 0, "total_results": 0, "status": "bad_arguments"}
        try:
            answer = await self.client.aretrieve_detailed([q.strip() for q in queries], self.topk)
        except (RetrieverRequestError, RetrieverUnavailable) as error:
            metrics = {"query_count": len(queries), "total_results": 0, "status": "error"}
            return ToolResponse(text=f"Search failed: {error}"), 0.0, metrics
        blocks = []
        for index, documents in enumerate(answer.results):
            if index in answer.errors:
                blocks.append(f"Search failed: {answer.errors[index]}")
            else:
                blocks.append(format_passages([d.document.contents for d in documents]).strip())
        text = QUERY_SEPARATOR.join(blocks)
        total = sum(len(documents) for documents in answer.results)
        return ToolResponse(text=text), 0.0, {"query_count": len(queries), "total_results": total, "status": "success"}
