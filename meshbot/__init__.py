"""meshbot: Slack ChatOps for an Istio service mesh (shared kernel: settings, errors, CLI)."""
