"""Custodia: a compliant payment-account and customer-identity service."""

__version__ = "0.1.0"
