"""Distillation stage: DAgger into a small student policy, ONNX export and parity, the report card."""
