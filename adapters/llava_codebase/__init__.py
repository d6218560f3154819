"""Adapter family for the original LLaVA codebase and Mini-Gemini (transformers 4.36/4.37).

Install with ``pip install 'tokenprune[llava-codebase]'`` plus
``pip install --no-deps llava-torch==1.2.2.post1`` (see docs/adapters.md).
"""
