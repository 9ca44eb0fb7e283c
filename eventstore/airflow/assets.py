"""Airflow's assets by id as tasktrail's asset scopes (name and uri), looked up once per id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventstore.airflow.place import async_session, sync_session
from eventstore.airflow.scopes import asset_id_of, tasktrail_scope
from eventstore.log.scopes import AssetScope, Scope

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["AssetNames"]


class AssetNames:
    """tasktrail's scope of an Airflow scope; an asset's name and uri are read from Airflow's
    database (in the caller's session, or one of Airflow's own) the first time its id comes."""

    def __init__(self) -> None:
        self._assets: dict[int, AssetScope] = {}

    def __getitem__(self, asset_id: int) -> AssetScope:
        """The scope of an asset id seen already."""
        return self._assets[asset_id]

    def scope(self, scope: object, session: Session | None) -> Scope:
        asset_id = asset_id_of(scope)
        if asset_id is None:
            return tasktrail_scope(scope)
        known = self._assets.get(asset_id)
        if known is None:
            with sync_session(session) as opened:
                found = opened.execute(_query(asset_id)).one_or_none()
            known = self._remember(asset_id, found)
        return known

    async def ascope(self, scope: object, session: AsyncSession | None) -> Scope:
        asset_id = asset_id_of(scope)
        if asset_id is None:
            return tasktrail_scope(scope)
        known = self._assets.get(asset_id)
        if known is None:
            async with async_session(session) as opened:
                found = (await opened.execute(_query(asset_id))).one_or_none()
            known = self._remember(asset_id, found)
        return known

    def _remember(self, asset_id: int, found: Any) -> AssetScope:
        if found is None:
            raise LookupError(f"Airflow has no asset with id {asset_id}")
        # An asset's name and uri never change under one id.
        scope = self._assets[asset_id] = AssetScope(found[0] or None, found[1] or None)
        return scope


def _query(asset_id: int) -> Any:
    from airflow.models.asset import AssetModel
    from sqlalchemy import select

    return select(AssetModel.name, AssetModel.uri).where(AssetModel.id == asset_id)
