"""Benchmark 9's Python SDK client (`mcp` 2.x from target/python-tools): one client, CALLS
sequential `echo` calls, each answer checked; prints {"latencies": [seconds, ...]}.

usage: gateway_bench.py URL CALLS
"""

import asyncio
import json
import sys
import time

from mcp import Client


async def main(url, calls):
    latencies = []
    async with Client(url, mode="legacy") as client:
        for k in range(calls):
            want = f"python call {k}"
            started = time.perf_counter()
            result = await client.call_tool("echo", {"text": want})
            latencies.append(time.perf_counter() - started)
            got = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
            if got != want:
                raise SystemExit(f"wrong answer: asked to echo {want!r}, got {got!r}")
    print(json.dumps({"latencies": latencies}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
