"""Real MCP clients (the official Python SDK, `mcp` 2.x) through the gateway.

usage: gateway_clients.py one  URL TEXT MODE     one client (MODE: legacy | auto | 2026-07-28)
       gateway_clients.py call URL TOOL ARGS_JSON MODE  one client calling any tool
       gateway_clients.py many URL N ROUNDS      N concurrent clients, each checking its own answers,
                                                 while other clients abandon calls mid-request

Prints one JSON object on stdout; exits non-zero on any wrong answer.
"""

import asyncio
import json
import sys

import anyio
from mcp import Client


def text_of(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def one(url, text, mode):
    async with Client(url, mode=mode) as client:
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"text": text})
        info = client.server_info
        return {
            "protocol": str(client.protocol_version),
            "server": info.name if info is not None else None,
            "tools": sorted(t.name for t in tools.tools),
            "text": text_of(result),
        }


async def call(url, tool, arguments, mode):
    async with Client(url, mode=mode) as client:
        tools = await client.list_tools()
        result = await client.call_tool(tool, arguments)
        info = client.server_info
        return {
            "protocol": str(client.protocol_version),
            "server": info.name if info is not None else None,
            "tools": sorted(t.name for t in tools.tools),
            "text": text_of(result),
            "is_error": bool(getattr(result, "is_error", False)),
        }


async def steady(url, n, rounds, mode, wrong):
    async with Client(url, mode=mode) as client:
        for k in range(rounds):
            want = f"client {n} round {k} " + "x" * (n * 7 % 50)
            got = text_of(await client.call_tool("echo", {"text": want}))
            if got != want:
                wrong.append({"client": n, "want": want, "got": got})
    return n


async def abandoning(url, n, rounds, mode):
    """Starts calls and walks away before the answer, then leaves without a goodbye."""
    abandoned = 0
    async with Client(url, mode=mode) as client:
        for k in range(rounds):
            with anyio.move_on_after(0.0005):
                await client.call_tool("echo", {"text": f"abandoned {n} {k}"})
                continue
            abandoned += 1
    return abandoned


async def many(url, n, rounds):
    wrong = []
    modes = ["legacy", "auto"]
    tasks = [steady(url, i, rounds, modes[i % 2], wrong) for i in range(n)]
    tasks += [abandoning(url, 1000 + i, rounds, modes[i % 2]) for i in range(4)]
    results = await asyncio.gather(*tasks)
    return {
        "clients": n,
        "calls": n * rounds,
        "wrong": wrong,
        "abandoned": sum(results[n:]),
    }


async def main():
    cmd = sys.argv[1]
    if cmd == "one":
        out = await one(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "call":
        out = await call(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5])
    elif cmd == "many":
        out = await many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    print(json.dumps(out))
    if out.get("wrong"):
        sys.exit(1)


asyncio.run(asyncio.wait_for(main(), timeout=180))
