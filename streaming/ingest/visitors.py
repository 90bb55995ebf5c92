"""Visitors sent as leads: which lane a visitor's call goes to, and which visitor is which user.

A sync that sends visitors as leads (``Sync.anonymous = "lead"``) keys a visitor's calls by
their anonymousId: a lane of its own, and a lead in Intercom. The first identify or alias that
carries both the anonymousId and a userId links them (a ``VisitorLink``) and asks for the lead
to be merged into the user; from then on a call carrying only that anonymousId is routed to the
user's lane, so that it follows the merge and reaches the user. The merge itself waits until the
visitor's own lane has sent what it held (``integrations/intercom/executor.py``), so none of
those calls can create a lead again after it was merged away.

The first link wins: a second userId for the same anonymousId (a shared computer) is not merged
into, and the visitor's later calls keep going to the first user.
"""

from __future__ import annotations

from collections.abc import Sequence

from integrations.intercom.identity import visitor_linked
from integrations.intercom.operations import Identity
from integrations.selectors import SyncRoute
from streaming.ingest.segment import Call
from streaming.models import VisitorLink


class VisitorRouting:
    """The visitor links of one ingest: read once for the batch, learnt as calls link, stored
    after the calls are."""

    def __init__(self, *, routes: Sequence[SyncRoute], calls: Sequence[Call]) -> None:
        self.lead_syncs = {
            route.sync_id
            for route in routes
            if not route.disabled and route.config.anonymous == "lead"
        }
        self.links: dict[tuple[int, str], str] = {}
        self.learnt: dict[tuple[int, str], str] = {}
        anonymous_ids = {call.anonymous_id for call in calls if call.anonymous_id}
        if self.lead_syncs and anonymous_ids:
            for sync_id, anonymous_id, user_id in VisitorLink.objects.filter(
                sync_id__in=self.lead_syncs, anonymous_id__in=anonymous_ids
            ).values_list("sync_id", "anonymous_id", "user_id"):
                self.links[(sync_id, anonymous_id)] = user_id

    def lane_key(self, *, route: SyncRoute, call: Call, identity: Identity) -> str:
        """The lane of ``call`` in the route's sync: a linked visitor's is their user's."""
        sync_id = route.sync_id
        if sync_id not in self.lead_syncs:
            return identity.user_key
        if identity.role == "lead" and identity.external_id is None:
            return self.links.get((sync_id, identity.user_key), identity.user_key)
        visitor = visitor_linked(call=call.payload, identity=identity, config=route.config)
        if visitor is not None and (sync_id, visitor) not in self.links:
            self.links[(sync_id, visitor)] = identity.user_key
            self.learnt[(sync_id, visitor)] = identity.user_key
        return identity.user_key

    def store(self) -> None:
        """Remember the links learnt (after the calls that carry them were stored)."""
        if self.learnt:
            VisitorLink.objects.bulk_create(
                [
                    VisitorLink(sync_id=sync_id, anonymous_id=anonymous_id, user_id=user_id)
                    for (sync_id, anonymous_id), user_id in self.learnt.items()
                ],
                ignore_conflicts=True,  # a concurrent ingest linked it first: the first wins
            )
