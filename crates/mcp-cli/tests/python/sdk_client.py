"""A real MCP client: the official Python SDK (`mcp` from PyPI).

usage: sdk_client.py stdio TOOL ARGS_JSON -- COMMAND [ARG...]
       sdk_client.py http  TOOL ARGS_JSON URL

Completes the handshake, lists the tools, calls TOOL with ARGS_JSON and prints one JSON object:
{"server": name, "protocol": version, "tools": [...], "text": the call's text content}.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


async def exercise(read, write, tool, arguments):
    async with ClientSession(read, write) as session:
        init = await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool(tool, arguments)
        text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        return {
            "server": init.server_info.name if hasattr(init, "server_info") else init.serverInfo.name,
            "protocol": str(init.protocol_version if hasattr(init, "protocol_version") else init.protocolVersion),
            "tools": sorted(t.name for t in tools.tools),
            "text": text,
            "is_error": bool(getattr(result, "is_error", getattr(result, "isError", False))),
        }


async def main():
    mode, tool, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if mode == "stdio":
        rest = sys.argv[4:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        params = StdioServerParameters(command=rest[0], args=rest[1:])
        async with stdio_client(params) as (read, write):
            out = await exercise(read, write, tool, arguments)
    elif mode == "http":
        async with streamable_http_client(sys.argv[4]) as streams:
            out = await exercise(streams[0], streams[1], tool, arguments)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out))


asyncio.run(asyncio.wait_for(main(), timeout=120))
