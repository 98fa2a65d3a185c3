"""``python -m mixgen_bench``: the retrieval harness (``mixgen-clip-retrieval``)."""

from mixgen_bench.clip_retrieval import main

main()
