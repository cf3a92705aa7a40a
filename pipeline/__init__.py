"""The pipeline: the ``agent-runtime`` command with one subcommand per stage, the demo and its report.

The top layer, the only package that knows every stage: it imports ``agent_runtime``, ``models``,
``train`` and ``distill``, and none of them imports it. The heavy stages are imported only when their
subcommand runs, so ``agent-runtime serve``, ``robot`` and ``keys`` work on a base install.
"""
