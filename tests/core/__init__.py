"""Unit tests of the operator core: model, CRD, builders, TF Serving config, render CLI, status, plan."""
