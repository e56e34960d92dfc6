"""The worker fleet: dcsync runs as procrastinate jobs on PostgreSQL (``pip install 'dcsync[workers]'``).

The modules here that only compute (``lanes``, ``projects``, the cron mapping of ``periodic``) import no
procrastinate, so ``dcsync.yaml`` can be validated and ``connector_core`` imported without the extra; the
ones that talk to the queue (``app``, ``tasks``, ``fleet``) import it, and are imported only by the commands
that need it. docs/scale-out.md is the operator's page.
"""
