"""A Ray actor's compute threads follow its CPU share: Ray sets OMP_NUM_THREADS to the actor's CPUs, and
the OCR (onnxruntime, which ignores that variable by itself) follows it too, so two actors on two cores do
not each start a thread per core."""

from __future__ import annotations

from geosleuth.agent.tools.ocr import TextReader


def _intra_op_threads(reader: TextReader) -> int:
    return reader._load().text_det.infer.session.get_session_options().intra_op_num_threads


def test_ocr_uses_omp_num_threads_when_set_and_its_default_otherwise(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _intra_op_threads(TextReader()) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _intra_op_threads(TextReader()) == 0  # onnxruntime's default: one thread per core
