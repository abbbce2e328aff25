"""The pull model: a long-running process that keeps apps converged to git.

A layer above sync: it reads a source (a bare mirror of a git URL), loads the
app, plans and syncs through exactly the functions the CLI calls, and adds
what a controller needs around them: a rate-limited work queue, watches on the
members, a Lease per app, status on the ApplySet parent, Events, metrics.
"""
