"""The coordinator: work orders to plans, guardrails, rehearsal, approval, execution, CLI."""
