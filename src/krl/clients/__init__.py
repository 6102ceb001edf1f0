"""Clients of our services that the other services share (ground floor): the rollout client and
the fleet that spreads one Generate over every rollout replica through it. The allocator's
client is the slim package krl_client."""
