"""Run many prompts through corral from a script, results as they finish.

    python examples/batch_prompts.py [MODEL]
"""

import sys

from corral.client import Client

model = sys.argv[1] if len(sys.argv) > 1 else "ai/smollm2"
prompts = [
    {"id": "capital", "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]},
    {"id": "math", "messages": [{"role": "user", "content": "What is 2+2?"}]},
    {"id": "poem", "prompt": "A haiku about the sea:\n", "temperature": 0.9},
]

with Client() as client:
    for result in client.batch(model, prompts, concurrency=2, max_tokens=48, temperature=0):
        if result.error:
            print(f"{result.id}: failed: {result.error}")
        else:
            print(f"{result.id} ({result.usage['completion_tokens']} tokens, {result.stopped}): {result.text.strip()}")
