"""Hypothesis fuzz tests of every public function against fastlm.reference, one module per family."""
