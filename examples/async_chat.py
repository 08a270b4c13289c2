"""Use corral inside an asyncio program: two answers streamed side by side,
then a small batch.

    python examples/async_chat.py [MODEL]
"""

import asyncio
import sys

from corral.client import AsyncClient

model = sys.argv[1] if len(sys.argv) > 1 else "ai/smollm2"


async def ask(client: AsyncClient, question: str) -> str:
    response = await client.chat(model, [{"role": "user", "content": question}], max_tokens=40, temperature=0)
    return await response.text()


async def main() -> None:
    async with AsyncClient() as client:
        answers = await asyncio.gather(ask(client, "What is 2+2?"), ask(client, "Name a colour."))
        for answer in answers:
            print(answer.strip())
        async for result in client.batch(model, ["One,", "Two,"], max_tokens=8):
            print(result.id, repr(result.text))


asyncio.run(main())
