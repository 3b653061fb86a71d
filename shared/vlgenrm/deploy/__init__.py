"""Deploying on Kubernetes: the typed values of the Helm chart."""
