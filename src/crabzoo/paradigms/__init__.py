"""Paradigms: LightningModules that assemble encoders, connectors, a backbone and an adapter."""
