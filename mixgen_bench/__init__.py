"""The MixGen experiment: does MixGen help CLIP retrieval, measured with error bars.

Apart from the library (as ``open_clip_train`` is apart from ``open_clip``), installed by
the ``bench`` extra, and built on mixgen's public API and ``mixgen.open_clip_train``:

- ``clip_retrieval``: the A/B harness (``mixgen-clip-retrieval``, ``python -m
  mixgen_bench``), with ``options``, ``sources``, ``models``, ``runs``, ``selection``
  (each run's checkpoint chosen on validation pairs), ``ladder`` (each arm's budget
  chosen on validation pairs), ``report``, ``progress`` and ``errors`` (the one-line
  errors of bad input);
- ``protocol``: the runner of registered studies of cells (study v3 in
  ``benchmarks/study_v3/``, every arm at its ladder's budget), ``study_report`` their
  tables; ``sweep``: the runner of the registered sweep in ``benchmarks/sweep/`` (and of
  the fine-tuning study in ``benchmarks/finetune/``); ``study``: the runner of study v2 in
  ``benchmarks/study_v2/`` (fixed budgets, as registered);
- ``data`` and ``digits``: procedural image-caption sets; ``readers``: CSV, webdataset
  and Karpathy-JSON readers;
- ``metrics``: retrieval metrics and paired statistics.

The speed benchmarks, their timing tools and the paper's published loops (which the tests
check the library against) live in ``benchmarks/``, not here.
"""
