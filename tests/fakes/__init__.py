"""Stateful fakes of cloud APIs, served over loopback HTTP(S) to the real cloud SDKs."""
