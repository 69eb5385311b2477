"""Calls on every core: worker processes that hold calls, managed by a front process."""
